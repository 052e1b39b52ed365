"""SeqIO data source for image-text data sets prepared with TFDS.

Reads any TFDS data set that has an image and one or more captions per
example, e.g. ``coco_captions`` (``image`` + ``captions/text``, five per
image), from a ``data_dir`` where the user has prepared it (``tfds build``);
nothing is downloaded. Emits the raw example dict of the other sources,
``{'key', 'image' (encoded bytes, not decoded), 'text'}``.

With several captions per image, one is drawn per image per epoch: the draw
comes from ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``
zipped with the examples, so it is a function of the seed, the example's
position and the epoch (SeqIO repeats the source), and differs between
epochs. An image without a (non-empty) caption is skipped and counted
(``bad_records`` ``missing_caption``).

Sharding is per file: TFDS's ``ReadConfig.input_context`` gives host i of n
the files i, i+n, ... of the split.
"""

from typing import Optional, Sequence

import seqio
import tensorflow as tf

from clipa_t5x.data import bad_records
from clipa_t5x.data.sources import fix_caption


def prepared_builder(name: str, data_dir: Optional[str]):
  """The TFDS builder of ``name``, prepared in ``data_dir``; a one-line error otherwise.

  Nothing is downloaded: an unknown name or a data set that was never built
  raises ``ValueError`` saying how to fix it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # TFDS raises its own not-found error types
    raise ValueError(f"TFDS data set {name!r} is unknown ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}); check the name, e.g. "
                     "'coco_captions', 'imagenet2012'.") from e
  if not builder.is_prepared():
    raise ValueError(
        f"TFDS data set {name!r} is not prepared in data_dir {data_dir!r}; prepare it first "
        f"(`tfds build {name} --data_dir=DIR`, with manual downloads as TFDS documents) and "
        "pass that data_dir. Nothing is downloaded.")
  return builder


class TfdsSource(seqio.DataSource):
  """Image-caption examples of a prepared TFDS data set, sharded by file.

  Example::

    source = TfdsSource('coco_captions', data_dir='gs://bucket/tfds',
                        splits=('train', 'val'))
  """

  def __init__(self, name: str, data_dir: Optional[str] = None,
               splits: Sequence[str] = ("train",),
               image_key: str = "image", caption_key: str = "captions/text",
               caching_permitted: bool = True):
    """Creates the source (the data set is opened when first read).

    Args:
      name: TFDS name, optionally with config/version ('coco_captions:1.*').
      data_dir: where the data set is prepared; None is TFDS's default.
      splits: split names this source offers (TFDS split syntax allowed,
        e.g. 'train[:90%]').
      image_key: the image feature (read as encoded bytes).
      caption_key: the caption feature; '/' separates nested features. A
        scalar string or a sequence of strings (one is sampled).
      caching_permitted: whether SeqIO may cache this source.
    """
    if not name:
      raise ValueError("name is empty; give a TFDS name, e.g. "
                       "'coco_captions'.")
    if not splits:
      raise ValueError("splits is empty; give e.g. ('train',).")
    super().__init__(splits=tuple(splits), caching_permitted=caching_permitted)
    self._name, self._data_dir = name, data_dir
    self._image_key = image_key
    self._caption_path = tuple(caption_key.split("/"))

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self._name!r}, {self._data_dir!r})"

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    """The split's file names, as TFDS knows them."""
    builder = prepared_builder(self._name, self._data_dir)
    return [str(f) for f in builder.info.splits[split].filenames]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, **unused) -> tf.data.Dataset:
    """Raw examples of ``split`` (one pass; SeqIO repeats).

    Args:
      split: the split to read.
      shuffle: shuffle the order of this shard's files (with ``seed``).
      seed: seeds the file order and the caption draws; None is random.
      shard_info: read only files ``index, index + num_shards, ...``.

    Returns:
      A dataset of ``{'key', 'image', 'text'}``.
    """
    del unused  # sequence_length, use_cached, num_epochs
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if split not in self.splits:
      raise ValueError(f"Unknown split {split!r}; this source has splits "
                       f"{list(self.splits)}.")
    builder = prepared_builder(self._name, self._data_dir)
    features = builder.info.features
    if self._image_key not in features:
      raise ValueError(f"{self._name} has no feature {self._image_key!r} "
                       f"(it has {sorted(features.keys())}); set image_key.")
    context = None
    if shard_info is not None and shard_info.num_shards > 1:
      num_files = builder.info.splits[split].num_shards
      if num_files < shard_info.num_shards:
        raise ValueError(
            f"{self._name} split {split!r} has {num_files} files but "
            f"{shard_info.num_shards} shards (hosts) want their own files; "
            "re-prepare it with more shards or read it without shard_info.")
      context = tf.distribute.InputContext(
          num_input_pipelines=shard_info.num_shards,
          input_pipeline_id=shard_info.index)
    ds = builder.as_dataset(
        split=split, shuffle_files=shuffle,
        decoders={self._image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, input_context=context,
                                    add_tfds_id=True))
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    caption_path, image_key = self._caption_path, self._image_key

    @tf.autograph.experimental.do_not_convert
    def pick(ex, draw):
      value = ex
      for part in caption_path:
        if part not in value:
          raise ValueError(f"Caption feature {'/'.join(caption_path)!r} not "
                           f"found (have {sorted(value)}); set caption_key.")
        value = value[part]
      captions = tf.strings.strip(tf.reshape(value, [-1]))
      captions = tf.boolean_mask(captions, tf.strings.length(captions) > 0)
      n = tf.size(captions, out_type=tf.int64)
      # A "" after the captions is what an image without any gets.
      index = tf.where(n > 0, tf.math.floormod(draw, tf.maximum(n, 1)), n)
      text = tf.gather(tf.concat([captions, [""]], 0), index)
      fixed, fix_op = fix_caption(text)
      updates = [
          bad_records.count("missing_caption", tf.cast(n == 0, tf.int64)),
          fix_op,
      ]
      with tf.control_dependencies(updates):
        return {"key": tf.identity(ex["tfds_id"]),
                "image": tf.identity(ex[image_key]),
                "text": tf.identity(fixed)}

    ds = tf.data.Dataset.zip((ds, draws)).map(
        pick, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda ex: tf.strings.length(ex["text"]) > 0)
    return ds.with_options(bad_records.pipeline_options())
