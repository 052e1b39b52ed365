"""SeqIO Tasks over DataComp-1B, and its Mixtures with LAION-2B.

Registered names:

- ``datacomp1b``: train Task, captions truncated (CLIPA-v2's fine-tuning
  stages);
- ``datacomp1b_syntax``: syntax-based text reduction (CLIPA-v2's
  low-resolution pretraining);
- ``laion2b_datacomp1b_mix`` and ``laion2b_datacomp1b_syntax_mix``: the two
  corpora sampled by ``MIXTURE_RATES``.

Data location, as in ``tasks/laion.py``: ``configure(train_pattern=...,
format=...)`` (gin: ``datacomp.configure.train_pattern``) or
``$CLIPA_DATACOMP1B_PATTERN`` / ``$CLIPA_DATACOMP1B_FORMAT``, resolved when a
dataset is built. CLIPA's augmentation (see ``tasks/laion.py``).
"""

from typing import Optional

from . import laion

CORPUS = laion.WebScaleCorpus("datacomp", "CLIPA_DATACOMP1B")
# Sampling rates of the mixtures (relative; SeqIO normalises them).
MIXTURE_RATES = {"laion2b": 1.0, "datacomp1b": 1.0}


def configure(train_pattern: Optional[str] = None,
              format: Optional[str] = None,  # pylint: disable=redefined-builtin
              caption_key: str = "txt", image_key: str = "jpg") -> None:
  """Sets where DataComp-1B lives (gin: ``datacomp.configure.train_pattern``).

  Args:
    train_pattern: glob of the train shards (several: comma-separated); None
      uses ``$CLIPA_DATACOMP1B_PATTERN``.
    format: 'webdataset' or 'tfrecord'; None: ``$CLIPA_DATACOMP1B_FORMAT`` or
      the pattern's extension.
    caption_key: caption member extension / feature name.
    image_key: TFRecord image feature name.
  """
  CORPUS.configure(train_pattern, format, caption_key, image_key)


def register() -> None:
  """Registers the DataComp Tasks and the LAION+DataComp Mixtures."""
  laion.register_tasks(CORPUS, "datacomp1b")
  for suffix in laion.TEXT_METHODS:
    laion.register_mixture(
        f"laion2b_datacomp1b{suffix}_mix",
        {f"{task}{suffix}": rate for task, rate in MIXTURE_RATES.items()})


register()
