"""Where a web-scale image-text corpus (LAION-2B, DataComp-1B) lives, and its SeqIO source.

A ``WebScaleCorpus`` is a value: the train shards' glob(s), their format and
member / feature names. Nothing is listed or read when it is made, so SeqIO
Tasks can be registered over it before anyone has said where the data is; an
unset pattern falls back to ``$<ENV_PREFIX>_PATTERN`` when a dataset is built,
and a corpus with neither raises a one-line ValueError naming both settings.
``tasks/laion.py`` and ``tasks/datacomp.py`` register Tasks over these.
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple

import seqio
import tensorflow as tf

from clipa_t5x.data.sources import WebDatasetSource
from clipa_t5x.data.tfrecord_source import TFRecordSource

FORMATS = ("webdataset", "tfrecord")
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrec", ".tfrecords")


@dataclasses.dataclass(frozen=True)
class WebScaleCorpus:
  """One web-scale corpus at one location.

  Attributes:
    name: the corpus in messages, e.g. ``'laion2b'``.
    env_prefix: environment fallback, e.g. ``'CLIPA_LAION2B'`` for
      ``$CLIPA_LAION2B_PATTERN`` and ``$CLIPA_LAION2B_FORMAT``.
    train_pattern: glob of the train shards (several: comma-separated), or
      None for the environment variable.
    format: ``'webdataset'``, ``'tfrecord'``, or None (the environment
      variable, else the pattern's extension).
    caption_key: webdataset member extension / TFRecord feature of the caption.
    image_key: TFRecord feature of the image (webdataset tries jpg, jpeg, png,
      webp).
    setting: the gin macro that sets the location, named in the missing-path
      error (e.g. ``'DATACOMP1B_DATA'``).
  """
  name: str
  env_prefix: str
  train_pattern: Optional[str] = None
  format: Optional[str] = None
  caption_key: str = "txt"
  image_key: str = "jpg"
  setting: str = "TRAIN_DATA"

  def __post_init__(self):
    if self.format is not None and self.format not in FORMATS:
      raise ValueError(f"{self.name}: format must be one of {FORMATS}, got {self.format!r}.")

  @property
  def env_pattern(self) -> str:
    """The environment variable read when ``train_pattern`` is None."""
    return f"{self.env_prefix}_PATTERN"

  @property
  def env_format(self) -> str:
    """The environment variable read when ``format`` is None."""
    return f"{self.env_prefix}_FORMAT"

  def pattern(self) -> Tuple[str, ...]:
    """The train glob(s) in effect; a clear error when none is set."""
    pattern = self.train_pattern or os.environ.get(self.env_pattern)
    if not pattern:
      raise ValueError(f"No data path for {self.name}: pass --gin.{self.setting}=\"'PATH/*.tar'\" "
                       f"(or set ${self.env_pattern}).")
    return tuple(p.strip() for p in pattern.split(",") if p.strip())

  def resolved_format(self) -> str:
    """``'webdataset'`` or ``'tfrecord'``, as set or guessed from the extension."""
    fmt = self.format or os.environ.get(self.env_format)
    if fmt is None:
      tfrecord = all(p.rstrip("*").endswith(_TFRECORD_SUFFIXES) for p in self.pattern())
      fmt = "tfrecord" if tfrecord else "webdataset"
    if fmt not in FORMATS:
      raise ValueError(f"${self.env_format}={fmt!r} is not one of {FORMATS}.")
    return fmt

  def make_source(self) -> seqio.DataSource:
    """A source for the location in effect now (files listed lazily)."""
    patterns = {"train": self.pattern}
    if self.resolved_format() == "tfrecord":
      return TFRecordSource(patterns, caption_key=self.caption_key, image_key=self.image_key)
    return WebDatasetSource(patterns, caption_key=self.caption_key, with_labels=False)

  def source(self) -> "LazyCorpusSource":
    """A source that resolves the location only when a dataset is built."""
    return LazyCorpusSource(self)


class LazyCorpusSource(seqio.DataSource):
  """Delegates to ``corpus.make_source()``, built when data is first read.

  The environment fallback is read then, not when the Task is registered.
  """

  def __init__(self, corpus: WebScaleCorpus):
    """Wraps ``corpus`` (its only split is ``train``)."""
    super().__init__(splits=("train",), caching_permitted=False)
    self.corpus = corpus
    self._cache: Dict[tuple, seqio.DataSource] = {}

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.corpus.name})"

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def _delegate(self) -> seqio.DataSource:
    key = (self.corpus.pattern(), self.corpus.resolved_format())
    if key not in self._cache:
      self._cache[key] = self.corpus.make_source()
    return self._cache[key]

  def list_shards(self, split: str):
    """The delegate's files of ``split``."""
    return self._delegate().list_shards(split)

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None,
                  **kwargs) -> tf.data.Dataset:
    """The delegate's dataset (see WebDatasetSource / TFRecordSource)."""
    return self._delegate().get_dataset(split, shuffle=shuffle, seed=seed,
                                        shard_info=shard_info, **kwargs)
