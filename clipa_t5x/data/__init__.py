"""Everything that happens to a sample before it reaches the device."""
