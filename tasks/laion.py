"""SeqIO Tasks over LAION-2B (img2dataset webdataset or TFRecord shards).

Registered names:

- ``laion2b``: train Task, captions truncated to ``sequence_length['text']``
  tokens;
- ``laion2b_syntax``: the same with CLIPA's syntax-based text reduction.

Where the data is, in order: ``configure(train_pattern=...)`` (e.g. from gin:
``runner.run.before_run = [@laion.configure()]`` and
``laion.configure.train_pattern = 'gs://bucket/laion2b/*.tar'``), or the
environment variable ``$CLIPA_LAION2B_PATTERN``. Nothing is looked up at
import: the pattern is resolved, and the files listed, when a dataset is
built, which raises a one-line ValueError naming both settings if neither is
set. The format (``'webdataset'`` or ``'tfrecord'``) comes from
``configure(format=...)``, ``$CLIPA_LAION2B_FORMAT``, or else the pattern's
extension (``.tfrecord``/``.tfrec`` -> tfrecord, otherwise webdataset).

The augmentation is CLIPA's: Inception crop (area 40-100%), SimCLR colour
jitter (strength 0.4, p 0.8) and random greyscale (p 0.2); undecodable or
too large images are skipped and counted (``clipa_t5x.data.bad_records``).

``WebScaleCorpus`` here is also what ``tasks/datacomp.py`` uses.
"""

import os
from typing import Dict, Optional, Tuple

import seqio
import tensorflow as tf

from clipa_t5x.data.feature_converter import output_features
from clipa_t5x.data.sources import WebDatasetSource
from clipa_t5x.data.tfrecord_source import TFRecordSource
from . import common  # relative: works as `tasks` and `clipa_t5x.tasks`

FORMATS = ("webdataset", "tfrecord")
TEXT_METHODS = {"": "truncate", "_syntax": "syntax"}
# CLIPA's training augmentation (the preprocessor's defaults, spelled out).
TRAIN_AUGMENTATION = dict(area_range=(0.4, 1.0), colour_jitter=True,
                          jitter_strength=0.4, jitter_p=0.8, grayscale_p=0.2)


class WebScaleCorpus:
  """Where one web-scale corpus lives and in which format (gin-settable).

  Attributes:
    train_pattern: glob(s) of the train shards, or None (use the env var).
    format: 'webdataset', 'tfrecord', or None (env var, else by extension).
    caption_key: caption member extension / feature name.
    image_key: TFRecord image feature name.
  """

  def __init__(self, name: str, env_prefix: str):
    """Creates an unconfigured corpus.

    Args:
      name: the module name gin binds (``name.configure``).
      env_prefix: env var prefix, e.g. ``CLIPA_LAION2B`` for
        ``$CLIPA_LAION2B_PATTERN`` and ``$CLIPA_LAION2B_FORMAT``.
    """
    self.name = name
    self.env_pattern = f"{env_prefix}_PATTERN"
    self.env_format = f"{env_prefix}_FORMAT"
    self.train_pattern: Optional[str] = None
    self.format: Optional[str] = None
    self.caption_key = "txt"
    self.image_key = "jpg"

  def configure(self, train_pattern: Optional[str] = None,
                format: Optional[str] = None,  # pylint: disable=redefined-builtin
                caption_key: str = "txt", image_key: str = "jpg") -> None:
    """Sets the data location and format; None keeps env/default lookups.

    Args:
      train_pattern: glob of the train shards (several: comma-separated).
      format: 'webdataset' or 'tfrecord'.
      caption_key: webdataset member extension / TFRecord feature of the
        caption.
      image_key: TFRecord feature of the image (webdataset tries jpg, jpeg,
        png, webp).
    """
    if format is not None and format not in FORMATS:
      raise ValueError(f"{self.name}.configure: format must be one of "
                       f"{FORMATS}, got {format!r}.")
    self.train_pattern, self.format = train_pattern, format
    self.caption_key, self.image_key = caption_key, image_key

  def pattern(self) -> Tuple[str, ...]:
    """The train glob(s) in effect; a clear error when none is set."""
    pattern = self.train_pattern or os.environ.get(self.env_pattern)
    if not pattern:
      raise ValueError(
          f"No data path for {self.name}: set ${self.env_pattern} or the gin "
          f"binding {self.name}.configure.train_pattern = 'PATH/*.tar' (with "
          f"runner.run.before_run = [@{self.name}.configure()]).")
    return tuple(p.strip() for p in pattern.split(",") if p.strip())

  def resolved_format(self) -> str:
    """'webdataset' or 'tfrecord', as configured or guessed."""
    fmt = self.format or os.environ.get(self.env_format)
    if fmt is None:
      tfrecord = all(p.rstrip("*").endswith((".tfrecord", ".tfrec",
                                             ".tfrecords"))
                     for p in self.pattern())
      fmt = "tfrecord" if tfrecord else "webdataset"
    if fmt not in FORMATS:
      raise ValueError(f"${self.env_format}={fmt!r} is not one of {FORMATS}.")
    return fmt

  def make_source(self) -> seqio.DataSource:
    """A source for the current configuration (files listed lazily)."""
    patterns = {"train": self.pattern}
    if self.resolved_format() == "tfrecord":
      return TFRecordSource(patterns, caption_key=self.caption_key,
                            image_key=self.image_key)
    return WebDatasetSource(patterns, caption_key=self.caption_key,
                            with_labels=False)

  def source(self) -> "ConfiguredSource":
    """A source that reads the configuration only when a dataset is built."""
    return ConfiguredSource(self)


class ConfiguredSource(seqio.DataSource):
  """Delegates to ``corpus.make_source()``, built when data is first read.

  Tasks are registered at import, before gin or the env var say where the
  data is and in which format; this source defers that choice.
  """

  def __init__(self, corpus: WebScaleCorpus):
    super().__init__(splits=("train",), caching_permitted=False)
    self._corpus = corpus
    self._cache: Dict[tuple, seqio.DataSource] = {}

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self._corpus.name})"

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def _delegate(self) -> seqio.DataSource:
    c = self._corpus
    config = (c.pattern(), c.resolved_format(), c.caption_key, c.image_key)
    if config not in self._cache:
      self._cache[config] = c.make_source()
    return self._cache[config]

  def list_shards(self, split: str):
    return self._delegate().list_shards(split)

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None,
                  **kwargs) -> tf.data.Dataset:
    """The delegate's dataset (see WebDatasetSource / TFRecordSource)."""
    return self._delegate().get_dataset(split, shuffle=shuffle, seed=seed,
                                        shard_info=shard_info, **kwargs)


def register_tasks(corpus: WebScaleCorpus, prefix: str) -> None:
  """Registers ``prefix`` (truncation) and ``prefix_syntax`` (idempotent)."""
  for suffix, method in TEXT_METHODS.items():
    common.register_task(prefix + suffix, source=corpus.source(),
                         output_features=output_features(),
                         preprocessors=common.train_preprocessors(method, TRAIN_AUGMENTATION))


register_mixture = common.register_mixture


CORPUS = WebScaleCorpus("laion", "CLIPA_LAION2B")


def configure(train_pattern: Optional[str] = None,
              format: Optional[str] = None,  # pylint: disable=redefined-builtin
              caption_key: str = "txt", image_key: str = "jpg") -> None:
  """Sets where LAION-2B lives (gin: ``laion.configure.train_pattern``).

  Args:
    train_pattern: glob of the train shards, e.g. 'gs://b/laion2b/*.tar'
      (several: comma-separated); None uses ``$CLIPA_LAION2B_PATTERN``.
    format: 'webdataset' or 'tfrecord'; None: ``$CLIPA_LAION2B_FORMAT`` or
      the pattern's extension.
    caption_key: caption member extension / feature name.
    image_key: TFRecord image feature name.
  """
  CORPUS.configure(train_pattern, format, caption_key, image_key)


def register() -> None:
  """Registers ``laion2b`` and ``laion2b_syntax``."""
  register_tasks(CORPUS, "laion2b")


register()
