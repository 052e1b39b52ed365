"""SeqIO feature converter for image-text pairs (a CLIP model's batch).

Task features and model features are the same: ``image`` uint8 ``[S, S, 3]``
and ``text`` int32 ``[L]``. SeqIO checks the length of each feature's first
dimension against ``task_feature_lengths``, so the image's "length" is its
side: ``TASK_FEATURE_LENGTHS = {'image': 224, 'text': 32}``. Text shorter than
L is zero-padded ([PAD] = 0); images must already be S x S (the image
preprocessors make them so).

Packing makes no sense for fixed-size image-text pairs, so ``pack=True`` is
refused. t5x builds the converter as ``FEATURE_CONVERTER_CLS(pack=...,
use_custom_packing_ops=...)``; a t5x config for this model must set
``pack=False`` (``DatasetConfig.pack``).

Labels: SeqIO requires ``task_feature_lengths`` to name exactly the
converter's features, so ``'label'`` is dropped here. Evaluators that need
labels read the Task directly with ``clipa_t5x.data.dataset.get_eval_examples``
(no converter). A converter built with
``passthrough_features={'label': FeatureSpec(tf.int32, rank=0)}`` also keeps
it, if the lengths then name it too (``{'image': S, 'text': L, 'label': 0}``).
"""

from typing import Mapping

import seqio
import tensorflow as tf

FeatureSpec = seqio.FeatureConverter.FeatureSpec

IMAGE_TEXT_FEATURES = {
    "image": FeatureSpec(dtype=tf.uint8, rank=3),
    "text": FeatureSpec(dtype=tf.int32, rank=1),
}


def output_features() -> dict:
  """SeqIO ``output_features`` for image-text Tasks (uint8 image, int32 text).

  Returns:
    ``{'image': ContinuousFeature(uint8, rank 3), 'text':
    ContinuousFeature(int32, rank 1)}``.
  """
  return {
      "image": seqio.ContinuousFeature(dtype=tf.uint8, rank=3),
      "text": seqio.ContinuousFeature(dtype=tf.int32, rank=1),
  }


class ImageTextFeatureConverter(seqio.FeatureConverter):
  """Passes ``image`` through and zero-pads ``text`` to its length."""

  TASK_FEATURES = IMAGE_TEXT_FEATURES
  MODEL_FEATURES = IMAGE_TEXT_FEATURES
  PACKING_FEATURE_DTYPES = None

  def __init__(self, pack: bool = False, use_custom_packing_ops: bool = False,
               apply_length_check: bool = True, bos_id: int = 0,
               passthrough_features=None):
    """Accepts t5x's keyword arguments; only ``pack=False`` is allowed.

    Args:
      pack: must be False (t5x's ``DatasetConfig.pack``).
      use_custom_packing_ops: ignored (no packing).
      apply_length_check: let SeqIO assert feature lengths at run time.
      bos_id: unused; accepted for t5x compatibility.
      passthrough_features: extra features kept unchanged, e.g.
        ``{'label': FeatureSpec(tf.int32, rank=0)}``.
    """
    if pack:
      raise ValueError("ImageTextFeatureConverter cannot pack image-text "
                       "pairs; set pack=False (t5x: DatasetConfig.pack=False).")
    super().__init__(pack=False, use_custom_packing_ops=use_custom_packing_ops,
                     apply_length_check=apply_length_check, bos_id=bos_id,
                     passthrough_features=passthrough_features)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]
                        ) -> tf.data.Dataset:
    side = task_feature_lengths["image"]
    length = task_feature_lengths["text"]
    image_shape = ds.element_spec["image"].shape
    if image_shape.is_fully_defined() and image_shape != [side, side, 3]:
      raise ValueError(f"Images are {image_shape.as_list()} but "
                       f"task_feature_lengths['image']={side} needs "
                       f"[{side}, {side}, 3]; resize them in the Task's image "
                       "preprocessor.")
    passthrough = tuple(self._passthrough_features)

    @tf.autograph.experimental.do_not_convert
    def fn(ex):
      text = ex["text"][:length]
      text = tf.pad(text, [[0, length - tf.shape(text)[0]]])
      out = {
          "image": tf.ensure_shape(ex["image"], [side, side, 3]),
          "text": tf.ensure_shape(text, [length]),
      }
      out.update({k: ex[k] for k in passthrough})
      return out

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(
      self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
    """Model lengths equal task lengths (image side, text length)."""
    lengths = {"image": task_feature_lengths["image"],
               "text": task_feature_lengths["text"]}
    for k in self._passthrough_features:
      lengths[k] = task_feature_lengths[k]
    return lengths
