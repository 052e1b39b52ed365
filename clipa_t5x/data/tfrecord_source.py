"""SeqIO data source for img2dataset's TFRecord output.

img2dataset (``--output_format tfrecord``) writes one ``tf.train.Example``
per sample with bytes features ``key``, ``jpg`` (the encoded image; the name
is the image format, e.g. ``webp`` with ``--encode_format webp``), ``txt``
(the caption) and metadata (``url``, ``width``, ``height``,
``original_width``, ``original_height``, ``sha256``, ``status``, ...). Only
the key, image and caption are read; the feature names are configurable.

Like ``WebDatasetSource``, a file is read whole with ``tf.io.read_file``
(``gs://`` works) and its records are split by TF ops, not by
``TFRecordDataset``: a file cut short then still yields the records before
the cut, and the damage is *counted* (``bad_records`` ``corrupt_shard``)
instead of ending the pipeline with a DataLossError. Record CRCs are not
checked (TF has no crc32c op); a record whose bytes are corrupt but whose
framing is intact fails to parse and fails the file's read.

Raw examples: ``{'key', 'image' (encoded bytes), 'text'}``. A record with an
empty or missing image or caption is skipped and counted; a caption that is
not UTF-8 is repaired and counted (see ``bad_records``).
"""

import os
from typing import Mapping, Optional

import tensorflow as tf

from clipa_t5x.data import bad_records
from clipa_t5x.data.sources import FilePatterns, ShardedFileSource, fix_caption

_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data


def _le_uint(content: tf.Tensor, offset: tf.Tensor, width: int) -> tf.Tensor:
  raw = tf.io.decode_raw(
      tf.strings.substr(content, offset, width), tf.uint8, fixed_length=width)
  b = tf.cast(raw, tf.int64)
  return sum(b[i] * (256 ** i) for i in range(width))


def split_tfrecords(content: tf.Tensor):
  """Splits the bytes of a TFRecord file into its records.

  Args:
    content: scalar ``tf.string``, the whole (uncompressed) file.

  Returns:
    ``(records [R] string, complete bool)``; ``complete`` is False when the
    file ends inside a record (the records before it are returned).
  """
  total = tf.cast(tf.strings.length(content), tf.int64)

  def cond(offset, done, *_):
    return tf.logical_not(done) & (offset < total)

  def body(offset, done, starts, lengths):
    del done
    header_ok = offset + _HEADER <= total
    length = tf.cond(header_ok, lambda: _le_uint(content, offset, 8),
                     lambda: tf.constant(-1, tf.int64))
    ok = header_ok & (length >= 0) & (
        offset + _HEADER + length + _FOOTER <= total)
    starts = tf.cond(ok, lambda: starts.write(starts.size(),
                                              offset + _HEADER),
                     lambda: starts)
    lengths = tf.cond(ok, lambda: lengths.write(lengths.size(), length),
                      lambda: lengths)
    return (tf.where(ok, offset + _HEADER + length + _FOOTER, offset),
            tf.logical_not(ok), starts, lengths)

  array = lambda: tf.TensorArray(tf.int64, size=0, dynamic_size=True,
                                 element_shape=[])
  offset, _, starts, lengths = tf.while_loop(
      cond, body, (tf.constant(0, tf.int64), tf.constant(False), array(),
                   array()))
  starts, lengths = starts.stack(), lengths.stack()
  return tf.strings.substr(content, starts, lengths), tf.equal(offset, total)


_split_fn = tf.function(split_tfrecords, autograph=False,
                        input_signature=[tf.TensorSpec([], tf.string)])


class TFRecordSource(ShardedFileSource):
  """Image-text examples from img2dataset TFRecord files, sharded by file.

  Example::

    source = TFRecordSource({'train': 'gs://bucket/laion/*.tfrecord'})
  """

  def __init__(self, split_to_filepattern: Mapping[str, FilePatterns],
               caption_key: str = "txt", image_key: str = "jpg",
               key_key: str = "key",
               num_input_examples: Optional[Mapping[str, int]] = None,
               cycle_length: int = 4, caching_permitted: bool = True):
    """Creates the source.

    Args:
      split_to_filepattern, num_input_examples, cycle_length,
        caching_permitted: as ``ShardedFileSource``'s (the files: TFRecord;
        each read whole, held in memory while read).
      caption_key: bytes feature holding the caption.
      image_key: bytes feature holding the encoded image.
      key_key: bytes feature holding the sample key; records without one get
        ``FILENAME:INDEX``.
    """
    names = (caption_key, image_key, key_key)
    if not all(names) or len(set(names)) != 3:
      raise ValueError(f"caption_key, image_key and key_key must be distinct "
                       f"feature names, got {names}.")
    super().__init__(split_to_filepattern, "TFRecord", num_input_examples, cycle_length,
                     caching_permitted)
    self._caption_key, self._image_key, self._key_key = names

  def _read_file(self, path: tf.Tensor, split: str) -> tf.data.Dataset:
    del split
    records, complete = _split_fn(tf.io.read_file(path))
    spec = lambda: tf.io.FixedLenFeature([], tf.string, default_value="")
    parsed = tf.io.parse_example(records, {
        self._key_key: spec(), self._image_key: spec(),
        self._caption_key: spec()})
    image = parsed[self._image_key]
    text, fix_op = fix_caption(parsed[self._caption_key])
    has_image = tf.strings.length(image) > 0
    has_caption = tf.strings.length(text) > 0
    ok = has_image & has_caption
    index = tf.strings.as_string(tf.range(tf.size(records)))
    name = tf.strings.regex_replace(path, "^.*/", "")
    key = parsed[self._key_key]
    key = tf.where(tf.strings.length(key) > 0, key,
                   tf.strings.join([tf.fill(tf.shape(index), name), index],
                                   ":"))
    n = lambda mask: tf.reduce_sum(tf.cast(mask, tf.int64))
    updates = [
        fix_op,
        bad_records.count("corrupt_shard", tf.cast(~complete, tf.int64)),
        bad_records.count("missing_image", n(~has_image)),
        bad_records.count("missing_caption", n(has_image & ~has_caption)),
        bad_records.count("incomplete_sample", n(~ok)),
    ]
    with tf.control_dependencies(updates):
      example = {"key": tf.boolean_mask(key, ok),
                 "image": tf.boolean_mask(image, ok),
                 "text": tf.boolean_mask(text, ok)}
      example = {k: tf.identity(v) for k, v in example.items()}
    return tf.data.Dataset.from_tensor_slices(example)


def write_img2dataset_tfrecord(path: str, samples, caption_key: str = "txt",
                               image_key: str = "jpg") -> None:
  """Writes samples the way img2dataset's TFRecord writer lays them out.

  For tests and small local data sets.

  Args:
    path: output file (local or ``gs://``).
    samples: iterable of dicts with ``key`` (str), ``image`` (bytes),
      ``text`` (bytes or str) and optional int ``width`` / ``height``; a
      value of None leaves the feature out.
    caption_key: feature name of the caption.
    image_key: feature name of the image.
  """
  def feature(value):
    if isinstance(value, int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    if isinstance(value, str):
      value = value.encode()
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  with tf.io.TFRecordWriter(path) as writer:
    for s in samples:
      names = {"key": "key", "image": image_key, "text": caption_key,
               "width": "width", "height": "height"}
      features = {names[k]: feature(v) for k, v in s.items()
                  if v is not None and k in names}
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=features)).SerializeToString())
