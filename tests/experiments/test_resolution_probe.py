"""Tests of experiments/demo_diagnosis/resolution_probe.py: its scenes render deterministically."""
import os
import sys

import numpy as np
import pytest

DIAGNOSIS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "demo_diagnosis")


@pytest.fixture(scope="module")
def probe():
  sys.path.insert(0, os.path.abspath(DIAGNOSIS))
  try:
    import resolution_probe  # pylint: disable=import-outside-toplevel
    yield resolution_probe
  finally:
    sys.path.remove(os.path.abspath(DIAGNOSIS))


@pytest.mark.parametrize("glyph_set", ["lower", "capitals", "small_capitals", "medium_capitals",
                                       "scattered_capitals", "tiled_mixed"])
def test_glyphs_are_deterministic_and_every_class_appears(probe, glyph_set):
  images, labels, colours = probe.render_glyphs(200, 16, split=0, crop_min=0.8,
                                                glyph_set=glyph_set)
  again, labels_again, _ = probe.render_glyphs(200, 16, split=0, crop_min=0.8,
                                               glyph_set=glyph_set)
  assert images.shape == (200, 16, 16, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, labels_again)
  assert set(labels.tolist()) == set(range(len(probe.GLYPH_SETS[glyph_set][0])))
  assert set(colours.tolist()) == set(range(len(probe.demo_shapes.COLOURS)))
  other_split, _, _ = probe.render_glyphs(200, 16, split=1, crop_min=0.8, glyph_set=glyph_set)
  assert not np.array_equal(images, other_split)
  assert images.std() > 5  # a glyph is drawn, not a blank background


def test_shapes_scene_gives_shape_labels(probe):
  images, shapes, _ = probe.render_shapes(60, 32, split=1, crop_min=1.0)
  assert images.shape == (60, 32, 32, 3)
  assert shapes.min() >= 0 and shapes.max() < len(probe.demo_shapes.SHAPES)


def test_tiled_sets_cover_every_patch_and_scattered_sets_leave_some_bare(probe):
  def bare_patches(images):  # 8 px patches with no pixel far from the background colour
    def background(image):  # the most frequent colour: flat background survives the resize
      colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
      return colours[counts.argmax()]
    backgrounds = np.stack([background(i) for i in images])[:, None, None].astype(int)
    ink = np.abs(images.astype(int) - backgrounds).max(-1) > 60
    n, side = ink.shape[:2]
    return ~ink.reshape(n, side // 8, 8, side // 8, 8).any(axis=(2, 4))
  tiled, _, _ = probe.render_glyphs(50, 32, split=1, crop_min=1.0, glyph_set="tiled_mixed")
  assert bare_patches(tiled).mean() < 0.01  # (a pale yellow stroke can fall below the threshold)
  centred, _, _ = probe.render_glyphs(50, 32, split=1, crop_min=1.0, glyph_set="demo_glyphs")
  assert bare_patches(centred).mean() > 0.5  # one small letter: most tokens are background
