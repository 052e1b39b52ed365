"""Process-wide counters of skipped or repaired input records.

Every place in the input pipeline that drops or repairs a record (a sample
without an image, an undecodable image, a non-UTF-8 caption, ...) adds to one
of the counters here. The counters are int64 ``tf.Variable`` s updated by
``assign_add`` ops inside the tf.data graph, so counting costs no Python call
and no extra pass over the data; the host reads them with ``snapshot()`` at
any time (e.g. once per logging step, next to the training metrics).

Kinds (``KINDS``):

- ``bad_image``: image bytes that failed to decode (truncated, zero bytes,
  not an image); the example is skipped.
- ``too_large_image``: more than ``image_ops.MAX_IMAGE_PIXELS`` pixels by the
  size in the file header (JPEG, PNG, GIF, BMP, WebP; other formats are
  decoded unchecked); skipped without decoding.
- ``missing_image``: a sample/row with no image (skipped).
- ``missing_caption``: a sample/row with no caption or an empty one (skipped).
- ``bad_caption_utf8``: a caption that is not valid UTF-8; invalid bytes are
  replaced by U+FFFD and the example is kept.
- ``incomplete_sample``: a webdataset sample or TFRecord record skipped for
  a missing image or a missing/empty caption (each also counted under
  ``missing_image`` / ``missing_caption``).
- ``corrupt_shard``: a file that ended early or has a corrupt record; the
  records before the damage are read.
- ``missing_label`` / ``bad_label``: label absent or not an integer (set to
  -1, kept).

Counts are taken when a record is read, which with prefetching runs a little
ahead of the examples the trainer consumes, and again on every epoch.
"""

import threading
from typing import Dict, Union

import tensorflow as tf

KINDS = ("bad_image", "too_large_image", "missing_image", "missing_caption",
         "bad_caption_utf8", "incomplete_sample", "corrupt_shard",
         "missing_label", "bad_label")

_lock = threading.Lock()
_vars: Dict[str, tf.Variable] = {}


def _variables() -> Dict[str, tf.Variable]:
  # Made on first use rather than at import, so importing the Tasks neither
  # starts TF's runtime nor touches an accelerator; kept on the CPU because
  # tf.data runs there.
  if not _vars:
    with _lock:
      if not _vars:
        with tf.init_scope(), tf.device("/CPU:0"):
          made = {k: tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name=f"bad_records_{k}") for k in KINDS}
        _vars.update(made)
  return _vars


def _check(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"Unknown bad-record kind {kind!r}; use one of {KINDS}.")


def count(kind: str, n: Union[int, tf.Tensor] = 1) -> tf.Operation:
  """Adds ``n`` to counter ``kind``; usable inside tf.data functions.

  Args:
    kind: one of ``KINDS``.
    n: integer scalar (Python or tensor) to add.

  Returns:
    The update op; inside a graph, make the output depend on it (e.g. with
    ``tf.control_dependencies``) so that it runs.
  """
  _check(kind)
  return _variables()[kind].assign_add(tf.cast(n, tf.int64))


def snapshot() -> Dict[str, int]:
  """Current value of every counter, ``{kind: count}`` (all ``KINDS``)."""
  return {k: int(v.numpy()) for k, v in _variables().items()}


def reset() -> None:
  """Sets every counter back to zero."""
  for v in _variables().values():
    v.assign(0)


def pipeline_options() -> tf.data.Options:
  """tf.data options for a pipeline that updates the counters.

  The counters are state outside the pipeline; with this policy checkpoints
  of the iterator skip them instead of failing.
  """
  options = tf.data.Options()
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  return options
