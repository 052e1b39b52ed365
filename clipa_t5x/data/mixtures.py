"""Training data as one value: a location, a registered name, or sources with sampling rates.

``TRAIN_DATA`` (gin) is one of

* a file location as ``clipa_t5x.data.user_data`` reads it: brace ranges,
  globs, comma-separated lists, local or ``gs://``; tar, TFRecord, CSV/TSV;
* a registered SeqIO Task or Mixture name (``'laion2b'``, ``'datacomp1b'``,
  ``'demo_shapes'``);
* a mapping of such sources to sampling rates,
  ``{'/data/mine/{00000..00099}.tar': 0.3, 'laion2b': 0.7}``: a SeqIO Mixture.
  Rates are relative (``{a: 3, b: 7}`` is 30/70); they are normalised and
  recorded.

This module parses that value, names the Tasks and Mixtures it needs
deterministically (the same value always gives the same names, so a resumed
run finds them again), registers Mixtures that tag each example with its
source, counts the examples of each source per batch on the host, and lists
the files behind a value without reading a record (``resolve_sources``, the
check that data is present before a stage starts). Registering the per-source
Tasks is ``tasks/train_data.py``'s job: it knows the corpora and the stage's
text reduction.
"""

import dataclasses
import difflib
import functools
import hashlib
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import seqio
import tensorflow as tf

from clipa_t5x.data import iterator_state
from clipa_t5x.data import user_data

# Per-example source index inside a tagged Mixture's pipeline (dropped before the device).
SOURCE_ID = "source_id"
# Cumulative examples per source, carried with each host batch; "host/" features never
# reach the device (iterator_state.CheckpointableBatches keeps them in host_values[COUNTS]).
COUNTS = "examples_per_source"
SOURCE_COUNTS = iterator_state.HOST_PREFIX + COUNTS
_PATH_CHARS = re.compile(r"[/\\*?\[{]")
# Task name -> the TRAIN_DATA entry it was registered for (records and messages).
_ORIGINS: Dict[str, str] = {}


# ------------------------------------------------------------- the value ---
def parse(value: Any, setting: str = "TRAIN_DATA") -> List[Tuple[str, float]]:
  """``TRAIN_DATA`` -> ``[(source, rate given), ...]`` in the order written.

  Args:
    value: a location or name (str, or a list of location strings: one
      source), or a mapping ``{source: rate}`` (or a list of pairs).
    setting: the user-facing name in messages.

  Raises:
    ValueError: on an empty value, a non-positive or non-numeric rate, or an
      entry that is not a string.
  """
  if (isinstance(value, (list, tuple)) and value
      and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value)):
    value = dict(value)  # [(source, rate), ...], as gin may write it
  if isinstance(value, Mapping):
    if not value:
      raise ValueError(f"{setting} is an empty mapping; give sources with rates, e.g. "
                       f"{{'/data/mine/{{00000..00099}}.tar': 0.3, 'laion2b': 0.7}}.")
    out = []
    for source, rate in value.items():
      if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{setting}: every key must be a file location or a Task name, "
                         f"got {source!r}.")
      if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (
          math.isfinite(rate) and rate > 0):
        raise ValueError(f"{setting}: the rate of {source!r} must be a positive number, got "
                         f"{rate!r}; leave the source out to skip it.")
      out.append((source.strip(), float(rate)))
    return out
  if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
    return [(",".join(v.strip() for v in value), 1.0)]
  if not isinstance(value, str) or not value.strip():
    raise ValueError(f"{setting} is not set; give a file location "
                     f"(--gin.{setting}=\"'/data/shards/{{00000..00099}}.tar'\"), a Task name "
                     f"('laion2b') or sources with rates (\"{{'a/*.tar': 0.3, 'laion2b': 0.7}}\").")
  return [(value.strip(), 1.0)]


def normalise(rates: Sequence[float]) -> List[float]:
  """Rates scaled to sum to 1."""
  total = float(sum(rates))
  return [r / total for r in rates]


def is_file_location(source: str) -> bool:
  """Whether a ``TRAIN_DATA`` entry names files (a path, glob or data file) rather than a Task."""
  # A dot: a file name (.tar, .csv, ...); Task and Mixture names have none.
  return "://" in source or "," in source or "." in source or bool(_PATH_CHARS.search(source))


def registered_names() -> List[str]:
  """Every registered SeqIO Task and Mixture name, sorted."""
  return sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))


def is_registered(name: str) -> bool:
  """Whether ``name`` is a registered SeqIO Task or Mixture."""
  return name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names()


def unknown_name_error(name: str, setting: str = "TRAIN_DATA",
                       extra: Sequence[str] = ()) -> ValueError:
  """The one-line error for a ``TRAIN_DATA`` entry that is neither files nor a registered name."""
  known = sorted(set(registered_names()) | set(extra))
  close = difflib.get_close_matches(name, known, n=3)
  hint = f"did you mean {close}? " if close else ""
  return ValueError(f"{setting}: {name!r} is neither a registered Task/Mixture nor a file "
                    f"location; {hint}registered: {known}. Write files as a path "
                    f"('/data/{name}/*.tar').")


def _digest(text: str, n: int = 8) -> str:
  return hashlib.sha1(text.encode()).hexdigest()[:n]


def files_task_name(location: str, suffix: str = "", options: str = "") -> str:
  """The deterministic Task name of a file source inside a Mixture.

  ``'/data/mine/{00000..00099}.tar'`` -> ``'user_data_mine_<hash>'`` + suffix:
  the folder for people, a hash of the location (and reader ``options``) so
  two sources never share a name and a resumed run finds the same one.
  """
  head = location.split(",")[0].split("://")[-1]
  folder = os.path.basename(os.path.dirname(head)) or os.path.basename(head)
  slug = re.sub(r"[^a-z0-9]+", "_", folder.lower()).strip("_")[:24] or "files"
  return f"user_data_{slug}_{_digest(location + '|' + options)}{suffix}"


def mixture_name(task_rates: Mapping[str, float], suffix: str = "") -> str:
  """The deterministic name of the Mixture of ``task_rates`` (normalised rates)."""
  rates = normalise(list(task_rates.values()))
  key = ";".join(f"{t}={r:.9f}" for t, r in sorted(zip(task_rates, rates)))
  return f"train_mix_{_digest(key, 10)}{suffix}"


def record_origin(task_name: str, source: str) -> None:
  """Remembers which ``TRAIN_DATA`` entry a Task was registered for (shown in records)."""
  _ORIGINS[task_name] = source


def origin(task_name: str) -> str:
  """The ``TRAIN_DATA`` entry behind ``task_name`` (the name itself when none was recorded)."""
  return _ORIGINS.get(task_name, task_name)


# --------------------------------------------------------- the Mixture ---
def _tag(example: Dict[str, tf.Tensor], source_id: int) -> Dict[str, tf.Tensor]:
  return dict(example, **{SOURCE_ID: tf.constant(source_id, tf.int32)})


def _tag_and_sample(datasets: Sequence[tf.data.Dataset], rates: Sequence[float],
                    seed: Optional[int]) -> tf.data.Dataset:
  """SeqIO's sampling, each example tagged with its Task's index in ``Mixture.tasks``."""
  tagged = [ds.map(functools.partial(_tag, source_id=i), num_parallel_calls=tf.data.AUTOTUNE)
            for i, ds in enumerate(datasets)]
  return tf.data.Dataset.sample_from_datasets(tagged, weights=list(rates), seed=seed,
                                              stop_on_empty_dataset=True)


class SourceTaggedMixture(seqio.Mixture):
  """A SeqIO Mixture whose examples carry ``source_id`` (their Task's index in ``tasks``)."""

  def __init__(self, name: str, tasks, default_rate=None, source_info=None, **kwargs):
    kwargs.pop("sample_fn", None)
    super().__init__(name, tasks, default_rate=default_rate, sample_fn=_tag_and_sample,
                     source_info=source_info)


def register_mixture(name: str, rates: Mapping[str, float]) -> str:
  """Registers (or replaces) the tagged Mixture ``name`` of registered Tasks; returns ``name``."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, list(rates.items()), mixture_cls=SourceTaggedMixture)
  return name


def is_tagged(provider: Any) -> bool:
  """Whether ``provider``'s examples carry ``source_id``."""
  return isinstance(provider, SourceTaggedMixture)


def source_tasks(provider: Any, split: str = "train") -> List[str]:
  """The Task names of a provider's sources, in ``source_id`` order (one for a Task)."""
  if isinstance(provider, seqio.Mixture):
    return [t.name for t in provider.tasks if split in t.splits]
  return [provider.name]


def source_rates(provider: Any, split: str = "train") -> List[float]:
  """Normalised sampling rates of ``source_tasks(provider, split)``."""
  if isinstance(provider, seqio.Mixture):
    tasks = [t for t in provider.tasks if split in t.splits]
    return normalise([float(provider.get_rate(t)) for t in tasks])
  return [1.0]


def count_sources(batches: tf.data.Dataset, num_sources: int) -> tf.data.Dataset:
  """Replaces each batch's ``source_id`` column by the running count of each source.

  The count is ``SOURCE_COUNTS`` (int64 ``[num_sources]``, examples of every
  batch so far including this one). It is pipeline state, so it is saved and
  restored with the iterator and a resumed stage keeps counting.
  """
  def step(total, batch):
    batch = dict(batch)
    ids = batch.pop(SOURCE_ID)
    total += tf.math.bincount(ids, minlength=num_sources, maxlength=num_sources,
                              dtype=tf.int64)
    batch[SOURCE_COUNTS] = total
    return total, batch
  return batches.scan(tf.zeros([num_sources], tf.int64), step)


# ------------------------------------------------------------- records ---
def global_counts(local: Optional[np.ndarray]) -> Optional[np.ndarray]:
  """This host's per-source counts summed over all hosts (every host must call it)."""
  if local is None:
    return None
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1:
    return np.asarray(local)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(np.asarray(local))).sum(axis=0)


def data_record(name: str, counts: Optional[np.ndarray] = None,
                examples_seen: Optional[int] = None, split: str = "train") -> Dict[str, Any]:
  """What a stage trained on: ``{'mixture_or_task', 'sources': [{task, source, rate, examples}]}``.

  Args:
    name: the stage's registered Task or Mixture.
    counts: examples seen per source (``SOURCE_COUNTS``, all hosts), or None.
    examples_seen: the stage's examples, credited to a single-Task source
      when ``counts`` is None.
    split: the split trained on.
  """
  provider = seqio.get_mixture_or_task(name)
  tasks, rates = source_tasks(provider, split), source_rates(provider, split)
  if counts is None and len(tasks) == 1 and examples_seen is not None:
    counts = [examples_seen]
  sources = []
  for i, (task, rate) in enumerate(zip(tasks, rates)):
    sources.append({"task": task, "source": origin(task), "rate": rate,
                    "examples": None if counts is None else int(counts[i])})
  return {"mixture_or_task": name, "sources": sources}


def format_data_record(record: Mapping[str, Any]) -> str:
  """Lines for ``model-info.txt`` and the log: each source's rate and examples seen."""
  lines = [f"Data: {record['mixture_or_task']}"]
  total = sum(s["examples"] or 0 for s in record["sources"])
  for s in record["sources"]:
    seen = ""
    if s["examples"] is not None:
      share = s["examples"] / total if total else 0.0
      seen = f"  examples seen {s['examples']:,} ({100 * share:.1f}%)"
    lines.append(f"  rate {100 * s['rate']:5.1f}%  {s['source']}  [{s['task']}]{seen}")
  return "\n".join(lines) + "\n"


# ------------------------------------------------------ files, unread ---
@dataclasses.dataclass(frozen=True)
class SourceFiles:
  """One source of a ``TRAIN_DATA`` value and the files behind it (no record read).

  Attributes:
    source: the entry as written (a location or a name).
    task: the registered Task it reads (None for a location not registered yet).
    rate: normalised sampling rate.
    patterns: the globs listed (empty when unknown).
    files: how many files match (None when the source is not file-based).
    problem: why no files could be listed (unset location, nothing matches,
      unknown name), or None.
  """
  source: str
  task: Optional[str]
  rate: float
  patterns: Tuple[str, ...] = ()
  files: Optional[int] = None
  problem: Optional[str] = None


def _glob_count(patterns: Sequence[str]) -> int:
  found = set()
  for pattern in patterns:
    found.update(tf.io.gfile.glob(pattern))
  return len(found)


def _files_of_location(source: str, task: Optional[str], rate: float) -> SourceFiles:
  try:
    patterns = tuple(user_data.file_patterns(source, "TRAIN_DATA"))
  except ValueError as e:
    return SourceFiles(source, task, rate, problem=str(e))
  count = _glob_count(patterns)
  problem = None if count else f"no files match {source!r}"
  return SourceFiles(source, task, rate, patterns, count, problem)


def _files_of_task(task_name: str, rate: float, split: str, source: str) -> SourceFiles:
  if source != task_name and is_file_location(source):  # registered from TRAIN_DATA files
    return _files_of_location(source, task_name, rate)
  data_source = seqio.get_mixture_or_task(task_name).source
  list_shards = getattr(data_source, "list_shards", None)
  if list_shards is None:
    return SourceFiles(source, task_name, rate)
  patterns: Tuple[str, ...] = ()
  try:
    corpus = getattr(data_source, "corpus", None)   # LAION / DataComp: the location in effect
    if corpus is not None:
      patterns = tuple(corpus.pattern())
    files = list(list_shards(split))
  except (ValueError, tf.errors.OpError) as e:
    return SourceFiles(source, task_name, rate, patterns, None, str(e))
  problem = None if files else f"Task {task_name!r} lists no {split!r} files"
  return SourceFiles(source, task_name, rate, patterns, len(files), problem)


def resolve_sources(value: Any, split: str = "train") -> List[SourceFiles]:
  """The sources of a ``TRAIN_DATA`` value (or a registered name) and their file counts.

  Lists files (globs; on ``gs://`` a few listings) but reads no record, so it
  is the cheap "is the data there" check before a stage. A registered Mixture
  expands to its Tasks; a Task's files are its source's ``list_shards``
  (LAION/DataComp: the location in effect, gin or environment). Import
  ``clipa_t5x.tasks`` first so that registered names are known. Problems are
  returned (``SourceFiles.problem``), not raised, so a check can report all.

  Args:
    value: as ``TRAIN_DATA`` takes it, or a stage's ``mixture_or_task_name``.
    split: the split whose files are counted.
  """
  entries = parse(value)
  rates = normalise([r for _, r in entries])
  out: List[SourceFiles] = []
  for (source, _), rate in zip(entries, rates):
    if is_registered(source):
      provider = seqio.get_mixture_or_task(source)
      for task, sub_rate in zip(source_tasks(provider, split), source_rates(provider, split)):
        out.append(_files_of_task(task, rate * sub_rate, split, origin(task)))
    elif is_file_location(source):
      out.append(_files_of_location(source, None, rate))
    else:
      out.append(SourceFiles(source, None, rate, problem=str(unknown_name_error(source))))
  return out
