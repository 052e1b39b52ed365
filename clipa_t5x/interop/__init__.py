"""Interoperability with other CLIP code bases (open_clip)."""
