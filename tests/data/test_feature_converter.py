"""Tests for clipa_t5x.data.feature_converter.ImageTextFeatureConverter."""

import numpy as np
import pytest
import tensorflow as tf

from clipa_t5x.data.feature_converter import (FeatureSpec,
                                              ImageTextFeatureConverter,
                                              output_features)

LENGTHS = {"image": 8, "text": 6}


def _dataset(text_lengths=(3, 6, 1), side=8, label=True):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (len(text_lengths), side, side, 3), np.uint8)

  def gen():
    for i, n in enumerate(text_lengths):
      ex = {"image": images[i], "text": np.arange(101, 101 + n, dtype=np.int32)}
      if label:
        ex["label"] = np.int32(i)
      yield ex

  sig = {"image": tf.TensorSpec([side, side, 3], tf.uint8),
         "text": tf.TensorSpec([None], tf.int32)}
  if label:
    sig["label"] = tf.TensorSpec([], tf.int32)
  return tf.data.Dataset.from_generator(gen, output_signature=sig), images


def test_pads_text_keeps_image_and_drops_label():
  ds, images = _dataset()
  out = ImageTextFeatureConverter(pack=False)(ds, LENGTHS)
  assert set(out.element_spec) == {"image", "text"}
  assert out.element_spec["image"].shape == [8, 8, 3]
  assert out.element_spec["text"].shape == [6]
  examples = list(out.as_numpy_iterator())
  np.testing.assert_array_equal(examples[0]["text"], [101, 102, 103, 0, 0, 0])
  np.testing.assert_array_equal(examples[1]["text"], np.arange(101, 107))
  np.testing.assert_array_equal(examples[2]["text"], [101, 0, 0, 0, 0, 0])
  for ex, image in zip(examples, images):
    np.testing.assert_array_equal(ex["image"], image)


def test_accepts_t5x_kwargs_and_refuses_packing():
  ImageTextFeatureConverter(pack=False, use_custom_packing_ops=True)
  with pytest.raises(ValueError, match="pack=False"):
    ImageTextFeatureConverter(pack=True)
  assert not ImageTextFeatureConverter().pack  # t5x may omit pack


def test_model_feature_lengths_and_passthrough_label():
  conv = ImageTextFeatureConverter(pack=False)
  assert conv.get_model_feature_lengths(LENGTHS) == LENGTHS
  conv = ImageTextFeatureConverter(
      pack=False, passthrough_features={"label": FeatureSpec(tf.int32, rank=0)})
  lengths = {**LENGTHS, "label": 0}
  out = list(conv(_dataset()[0], lengths).as_numpy_iterator())
  assert [ex["label"] for ex in out] == [0, 1, 2]


def test_wrong_image_size_and_missing_lengths_are_clear_errors():
  ds, _ = _dataset(side=10)
  with pytest.raises(ValueError, match=r"\[8, 8, 3\]"):
    ImageTextFeatureConverter(pack=False)(ds, LENGTHS)
  with pytest.raises(ValueError):
    ImageTextFeatureConverter(pack=False)(_dataset()[0], {"text": 6})
  wrong_dtype = _dataset()[0].map(
      lambda ex: {**ex, "image": tf.cast(ex["image"], tf.float32)})
  with pytest.raises(ValueError, match="incorrect type"):
    ImageTextFeatureConverter(pack=False)(wrong_dtype, LENGTHS)


def test_text_longer_than_length_fails_seqio_check():
  ds, _ = _dataset(text_lengths=(9,))
  out = ImageTextFeatureConverter(pack=False)(ds, LENGTHS)
  with pytest.raises(tf.errors.InvalidArgumentError):
    list(out)


def test_output_features_dtypes():
  feats = output_features()
  assert feats["image"].dtype == tf.uint8 and feats["image"].rank == 3
  assert feats["text"].dtype == tf.int32 and feats["text"].rank == 1
  assert not feats["image"].add_eos and not feats["text"].add_eos
