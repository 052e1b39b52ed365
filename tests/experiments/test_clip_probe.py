"""Tests of experiments/demo_diagnosis/clip_probe.py: captions, and tiny runs end to end (slow)."""
import os
import sys

import numpy as np
import pytest

DIAGNOSIS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "experiments",
                                         "demo_diagnosis"))


@pytest.fixture(scope="module")
def probe():
  sys.path.insert(0, DIAGNOSIS)
  try:
    import clip_probe  # pylint: disable=import-outside-toplevel
    yield clip_probe
  finally:
    sys.path.remove(DIAGNOSIS)


def test_letter_captions_never_name_the_colour(probe):
  glyphs = ("E", "F")
  labels, colours = np.array([0, 1, 0, 1]), np.array([0, 1, 2, 3])
  for caption_set in ("mixed", "letter"):
    tokens = probe.captions_for(labels, colours, glyphs, seed=0, caption_set=caption_set)
    assert tokens.shape == (4, probe.TEXT_LENGTH) and tokens.dtype == np.int32
    assert (tokens[:, 0] == 101).all()  # [CLS]
  assert all("{c}" not in t for t in probe.CAPTION_SETS["letter"])
  assert all("{g}" in t for caption_set in probe.CAPTION_SETS.values() for t in caption_set)


@pytest.mark.slow  # trains a model
def test_tiny_run_end_to_end(probe):
  images, labels, colours = probe.resolution_probe.render_glyphs(64, 16, 0, 0.8, "capitals")
  texts = probe.captions_for(labels, colours, probe.resolution_probe.GLYPH_SETS["capitals"][0], 0)
  row = probe.train_and_evaluate(images, texts, images[:20], labels[:20],
                                 probe.resolution_probe.GLYPH_SETS["capitals"][0], width=32,
                                 steps=3, seed=0, batch=16)
  assert 0.0 <= row["zeroshot_top1"] <= 1.0
  assert np.isfinite(row["loss_first"]) and np.isfinite(row["loss_last"])


@pytest.mark.slow  # trains a model
def test_depth_and_other_sizes_are_used(probe):
  glyphs = probe.resolution_probe.GLYPH_SETS["demo_glyphs"][0]
  assert glyphs[-2:] == ("U", "V")
  images, labels, colours = probe.resolution_probe.render_glyphs(32, 16, 0, 1.0, "demo_glyphs")
  big, big_labels, _ = probe.resolution_probe.render_glyphs(10, 32, 1, 1.0, "demo_glyphs")
  texts = probe.captions_for(labels, colours, glyphs, 0, caption_set="letter")
  row = probe.train_and_evaluate(images, texts, images[:10], labels[:10], glyphs, width=32,
                                 steps=2, seed=0, batch=8, depth=1,
                                 other_sizes={32: (big, big_labels)})
  assert 0.0 <= row["zeroshot_top1_at_32"] <= 1.0


@pytest.mark.slow  # trains a model
def test_finetune_continues_training_at_another_size(probe):
  glyphs = probe.resolution_probe.GLYPH_SETS["tiled_mixed"][0]
  small, labels, colours = probe.resolution_probe.render_glyphs(16, 16, 0, 1.0, "tiled_mixed")
  big, _, _ = probe.resolution_probe.render_glyphs(16, 32, 0, 1.0, "tiled_mixed")
  np.testing.assert_array_equal(  # the same images, so the captions still match
      small, probe.resolution_probe.render_glyphs(16, 16, 0, 1.0, "tiled_mixed")[0])
  texts = probe.captions_for(labels, colours, glyphs, 0, caption_set="letter")
  row = probe.train_and_evaluate(small, texts, small[:8], labels[:8], glyphs, width=32,
                                 steps=2, seed=0, batch=8, depth=1,
                                 finetune=(2, big, big[:8], labels[:8], 1e-3))
  assert 0.0 <= row["finetune_top1"] <= 1.0 and np.isfinite(row["finetune_loss_last"])
  without_lr = probe.train_and_evaluate(small, texts, small[:8], labels[:8], glyphs, width=32,
                                        steps=2, seed=0, batch=8, depth=1,
                                        finetune=(2, big, big[:8], labels[:8]))
  assert "finetune_top1" in without_lr


def test_pad_to_keeps_the_letter_and_fills_with_the_corner_colour(probe):
  images = np.zeros((2, 16, 16, 3), np.uint8)
  images[:, :, :] = (200, 210, 220)
  images[:, 6:10, 6:10] = (255, 0, 0)
  padded = probe.pad_to(images, 32)
  assert padded.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(padded[:, 8:24, 8:24], images)
  assert (padded[:, 0, 0] == (200, 210, 220)).all() and (padded[:, 31, 31] == (200, 210, 220)).all()
  corner = probe.pad_to(images, 32, corner=True)
  np.testing.assert_array_equal(corner[:, :16, :16], images)
  assert (corner[:, 31, 31] == (200, 210, 220)).all()
