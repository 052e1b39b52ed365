"""SeqIO Tasks over LAION-2B (img2dataset webdataset or TFRecord shards).

Registered names:

- ``laion2b``: train Task, captions truncated to ``sequence_length['text']``
  tokens;
- ``laion2b_syntax``: the same with CLIPA's syntax-based text reduction.

Where the data is, is an argument: ``task(text_reduction, train_pattern=...)``
registers one Task over those shards and returns its name. In the recipes a
user names it in ``TRAIN_DATA`` (``'laion2b'``, alone or in a Mixture) and sets
``--gin.LAION2B_DATA="'gs://.../{00000..99999}.tar'"``; ``tasks/train_data.py``
then calls ``task`` with the stage's text reduction. Importing this module
registers both with no pattern: the environment variable
``$CLIPA_LAION2B_PATTERN`` is then read when a dataset is built, which raises a
one-line ValueError naming both settings if neither is set. The format
(``'webdataset'`` or ``'tfrecord'``) is the ``format`` argument,
``$CLIPA_LAION2B_FORMAT``, or else the pattern's extension (``.tfrecord`` /
``.tfrec`` -> tfrecord, otherwise webdataset); ``clipa_t5x.data.web_corpus``.

The augmentation is CLIPA's: Inception crop (area 40-100%), SimCLR colour
jitter (strength 0.4, p 0.8) and random greyscale (p 0.2); undecodable or
too large images are skipped and counted (``clipa_t5x.data.bad_records``).
"""

from typing import Optional

from clipa_t5x.data.feature_converter import output_features
from clipa_t5x.data.web_corpus import WebScaleCorpus
from . import common  # relative: works as `tasks` and `clipa_t5x.tasks`

NAME = "laion2b"
ENV_PREFIX = "CLIPA_LAION2B"
SETTING = "LAION2B_DATA"
# text reduction -> Task name suffix
TEXT_METHODS = {"truncate": "", "syntax": "_syntax"}
# CLIPA's training augmentation (the preprocessor's defaults, spelled out).
TRAIN_AUGMENTATION = dict(area_range=(0.4, 1.0), colour_jitter=True,
                          jitter_strength=0.4, jitter_p=0.8, grayscale_p=0.2)


def register_corpus_task(corpus: WebScaleCorpus, prefix: str, text_reduction: str) -> str:
  """Registers ``prefix`` + the reduction's suffix over ``corpus``; returns the name."""
  name = prefix + common.task_suffix(text_reduction, prefix, TEXT_METHODS)
  common.register_task(name, source=corpus.source(), output_features=output_features(),
                       preprocessors=common.train_preprocessors(text_reduction,
                                                                TRAIN_AUGMENTATION))
  return name


def task(text_reduction: str = "truncate", train_pattern: Optional[str] = None,
         format: Optional[str] = None,  # pylint: disable=redefined-builtin
         caption_key: str = "txt", image_key: str = "jpg") -> str:
  """Registers ``laion2b`` / ``laion2b_syntax`` over the given shards; returns its name.

  Args:
    text_reduction: ``'truncate'`` (``laion2b``) or ``'syntax'``
      (``laion2b_syntax``).
    train_pattern: glob of the train shards, e.g. ``'gs://b/laion2b/*.tar'``
      (several: comma-separated); None reads ``$CLIPA_LAION2B_PATTERN`` when a
      dataset is built.
    format: ``'webdataset'`` or ``'tfrecord'``; None: ``$CLIPA_LAION2B_FORMAT``
      or the pattern's extension.
    caption_key: caption member extension / feature name.
    image_key: TFRecord image feature name.
  """
  corpus = WebScaleCorpus(NAME, ENV_PREFIX, train_pattern, format, caption_key, image_key,
                          setting=SETTING)
  return register_corpus_task(corpus, NAME, text_reduction)


def register(train_pattern: Optional[str] = None,
             format: Optional[str] = None,  # pylint: disable=redefined-builtin
             caption_key: str = "txt", image_key: str = "jpg") -> None:
  """Registers ``laion2b`` and ``laion2b_syntax`` over the given shards (see ``task``)."""
  for method in TEXT_METHODS:
    task(method, train_pattern, format, caption_key, image_key)



register()
