"""Tests for clipa_t5x.demo.scenes.shapes: the coloured shapes scene."""

import io

import numpy as np
from PIL import Image

from clipa_t5x.demo.scenes import shapes


def test_class_factors_match_class_names():
  factors = shapes.class_factors()
  colours, names = list(shapes.COLOURS), shapes.SHAPES
  for i, name in enumerate(shapes.CLASS_NAMES):
    assert name == f"{colours[factors['colour'][i]]} {names[factors['shape'][i]]}"


def test_render_is_deterministic_and_the_shape_stays_in_view():
  for label in range(len(shapes.CLASS_NAMES)):
    a = shapes.render_example(np.random.default_rng((0, 1, label)), 32, label)
    b = shapes.render_example(np.random.default_rng((0, 1, label)), 32, label)
    assert a == b and a[1]["label"] == label
    (x, y), r = a[1]["center"], a[1]["radius"]
    # Spiky shapes reach 1.35 r from the centre: still inside the image.
    assert 0 <= x - 1.35 * r and x + 1.35 * r <= 1.0
    assert 0 <= y - 1.35 * r and y + 1.35 * r <= 1.0
    image = np.asarray(Image.open(io.BytesIO(a[0])))
    # The shape's colour is in the picture (JPEG and jitter: within 60 per channel), on
    # about the shape's share of the pixels (a small star covers ~0.5% of them).
    rgb = np.array(shapes.COLOURS[a[1]["colour"]])
    share = (np.abs(image.astype(int) - rgb).max(-1) < 60).mean()
    assert share > 0.4 * r * r, (a[1]["shape"], a[1]["size"], share)
