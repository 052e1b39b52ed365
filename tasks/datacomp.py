"""SeqIO Tasks over DataComp-1B, and its Mixtures with LAION-2B.

Registered names:

- ``datacomp1b``: train Task, captions truncated (CLIPA-v2's fine-tuning
  stages);
- ``datacomp1b_syntax``: syntax-based text reduction (CLIPA-v2's
  low-resolution pretraining);
- ``laion2b_datacomp1b_mix`` and ``laion2b_datacomp1b_syntax_mix``: the two
  corpora sampled by ``MIXTURE_RATES``.

Data location, as in ``tasks/laion.py``: the ``train_pattern`` argument of
``task`` / ``register``. The recipes train on ``TRAIN_DATA = 'datacomp1b'``
with ``--gin.DATACOMP1B_DATA="'gs://.../*.tar'"`` (``gin/stages/train_data.gin``,
through ``tasks/train_data.py``); else ``$CLIPA_DATACOMP1B_PATTERN`` /
``$CLIPA_DATACOMP1B_FORMAT``, read when a dataset is built. CLIPA's
augmentation (see ``tasks/laion.py``).
"""

from typing import Optional

from clipa_t5x.data.web_corpus import WebScaleCorpus
from . import common  # relative: works as `tasks` and `clipa_t5x.tasks`
from . import laion

NAME = "datacomp1b"
ENV_PREFIX = "CLIPA_DATACOMP1B"
SETTING = "DATACOMP1B_DATA"
# Sampling rates of the mixtures (relative; SeqIO normalises them).
MIXTURE_RATES = {"laion2b": 1.0, "datacomp1b": 1.0}


def task(text_reduction: str = "truncate", train_pattern: Optional[str] = None,
         format: Optional[str] = None,  # pylint: disable=redefined-builtin
         caption_key: str = "txt", image_key: str = "jpg") -> str:
  """Registers ``datacomp1b`` / ``datacomp1b_syntax`` over the given shards; returns its name.

  Args: as ``laion.task``'s, with ``$CLIPA_DATACOMP1B_PATTERN`` and
  ``$CLIPA_DATACOMP1B_FORMAT`` read when no pattern or format is given.
  """
  corpus = WebScaleCorpus(NAME, ENV_PREFIX, train_pattern, format, caption_key, image_key,
                          setting=SETTING)
  return laion.register_corpus_task(corpus, NAME, text_reduction)


def mixture(text_reduction: str = "truncate") -> str:
  """Registers the LAION-2B + DataComp-1B Mixture over the Tasks registered now; returns it.

  Register the two Tasks first (``laion.task``, ``task``) to point them at data.
  """
  suffix = laion.TEXT_METHODS[text_reduction]
  name = f"laion2b_datacomp1b{suffix}_mix"
  common.register_mixture(
      name, {f"{corpus}{suffix}": rate for corpus, rate in MIXTURE_RATES.items()})
  return name


def register(train_pattern: Optional[str] = None,
             format: Optional[str] = None,  # pylint: disable=redefined-builtin
             caption_key: str = "txt", image_key: str = "jpg") -> None:
  """Registers the DataComp Tasks over the given shards (see ``task``) and the Mixtures."""
  for method in laion.TEXT_METHODS:
    task(method, train_pattern, format, caption_key, image_key)
    mixture(method)



register()
