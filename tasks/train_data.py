"""One Task factory for every recipe's training data: ``train_data.task(data=%TRAIN_DATA)``.

``data`` is what ``TRAIN_DATA`` holds (``clipa_t5x.data.mixtures``): a file
location, a registered Task/Mixture name, or ``{source: rate}``. The factory
registers what that needs for one stage and returns the name to train on::

  PRETRAIN_TASK = @pretrain/train_data.task()
  pretrain/train_data.task.text_reduction = 'syntax'   # the stage's captions
  train_data.task.data = %TRAIN_DATA
  train_data.task.locations = {'laion2b': %LAION2B_DATA, 'datacomp1b': %DATACOMP1B_DATA}

Per source and stage:

* a file location -> a ``user_data`` Task with the stage's text reduction,
  named from the location's folder and a hash of it
  (``user_data_mine_1a2b3c4d_syntax``);
* a corpus, ``'laion2b'`` or ``'datacomp1b'`` -> its Task for the stage
  (``laion2b_syntax`` in syntax-masked pre-training) over ``locations[name]``
  (None: ``$CLIPA_LAION2B_PATTERN`` / ``$CLIPA_DATACOMP1B_PATTERN``);
* another registered name -> its variant for the stage's reduction when one
  is registered (``demo_shapes`` -> ``demo_shapes_syntax``), else the name.

Several sources register a Mixture (``train_mix_<hash>``) that tags each
example with its source, so the run records examples seen per source.
Resolution and text length are not part of a Task: they come from the stage's
``task_feature_lengths``.
"""

from typing import Any, Callable, Dict, Mapping, Optional

from clipa_t5x.data import mixtures
from . import common  # relative: works as `tasks` and `clipa_t5x.tasks`
from . import datacomp
from . import laion
from . import user_data

SUFFIXES = common.TEXT_METHODS
# Corpus name -> its Task factory ``(text_reduction, train_pattern=...) -> name``.
CORPORA: Dict[str, Callable[..., str]] = {laion.NAME: laion.task, datacomp.NAME: datacomp.task}


def _stage_variant(name: str, text_reduction: str) -> str:
  """``name``'s registered variant for the reduction: ``x_syntax``, or ``x_syntax_mix`` for ``x_mix``."""
  suffix = SUFFIXES[text_reduction]
  candidates = [name + suffix]
  if name.endswith("_mix"):
    candidates.append(name[:-len("_mix")] + suffix + "_mix")
  return next((c for c in candidates if mixtures.is_registered(c)), name)


def _source_task(source: str, text_reduction: str, in_mixture: bool,
                 locations: Mapping[str, Optional[str]], setting: str,
                 file_options: Mapping[str, Any]) -> str:
  """Registers (or finds) the Task that reads one ``TRAIN_DATA`` entry in this stage."""
  if source in CORPORA:
    return CORPORA[source](text_reduction, train_pattern=locations.get(source))
  if mixtures.is_registered(source):
    return _stage_variant(source, text_reduction)
  if not mixtures.is_file_location(source):
    raise mixtures.unknown_name_error(source, setting, extra=CORPORA)
  # Named by location: stages reading different files (FT224_DATA, FT336_DATA) never share a Task.
  options = ";".join(f"{k}={v}" for k, v in sorted(file_options.items()) if v is not None)
  name = mixtures.files_task_name(source, SUFFIXES[text_reduction], options)
  where = f"{setting}[{source!r}]" if in_mixture else setting
  return user_data.task(source, text_reduction=text_reduction, name=name, setting=where,
                        **file_options)


def task(data: Any,
         text_reduction: str = "truncate",
         locations: Optional[Mapping[str, Optional[str]]] = None,
         format: Optional[str] = None,  # pylint: disable=redefined-builtin
         caption_key: Optional[str] = None,
         image_key: Optional[str] = None,
         setting: str = "TRAIN_DATA") -> str:
  """Registers the Task or Mixture that reads ``data`` in one stage; returns its name.

  Args:
    data: a file location (brace ranges, globs, comma-separated, ``gs://``;
      tar, TFRecord, CSV/TSV), a registered Task/Mixture name, or a mapping
      ``{source: rate}`` of these (rates relative; normalised).
    text_reduction: the stage's caption reduction: ``'truncate'``,
      ``'syntax'`` (``'random'``, ``'block'`` for file sources).
    locations: corpus name -> its shards (``{'laion2b': 'gs://b/laion/*.tar'}``);
      a missing or None entry falls back to the corpus's environment variable.
    format, caption_key, image_key: how file sources are read
      (``tasks/user_data.py``); None infers them per source.
    setting: the user-facing name of ``data`` in messages.

  Returns:
    A registered Task name (one source) or Mixture name (several). The same
    arguments always give the same names.
  """
  common.task_suffix(text_reduction, "train_data.task")
  entries = mixtures.parse(data, setting)
  in_mixture = len(entries) > 1
  file_options = dict(format=format, caption_key=caption_key, image_key=image_key)
  rates: Dict[str, float] = {}
  for source, rate in entries:
    name = _source_task(source, text_reduction, in_mixture, dict(locations or {}), setting,
                        file_options)
    if name in rates:
      raise ValueError(f"{setting}: {source!r} reads Task {name!r}, which another entry "
                       "already reads; give each source once.")
    mixtures.record_origin(name, source)
    rates[name] = rate
  if not in_mixture:
    return next(iter(rates))
  return mixtures.register_mixture(
      mixtures.mixture_name(rates, SUFFIXES[text_reduction]), rates)
