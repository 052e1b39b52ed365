"""Per-host input pipelines: t5x-style ``DatasetConfig`` -> batched tf.data.

Each host builds its own pipeline over its own files (``seqio.ShardInfo``)
with batch ``global_batch // num_shards``; the trainer assembles the global
batch from the hosts' pieces.
"""

import dataclasses
from typing import Mapping, Optional, Type

import seqio
import tensorflow as tf

from clipa_t5x.data import mixtures
from clipa_t5x.data.feature_converter import FeatureSpec, ImageTextFeatureConverter


@dataclasses.dataclass
class DatasetConfig:
  """What to read, in t5x's ``utils.DatasetConfig`` shape (set from gin).

  Attributes:
    mixture_or_task_name: a registered SeqIO Task or Mixture.
    task_feature_lengths: e.g. ``{'image': 84, 'text': 8}`` (image side,
      text tokens).
    split: the split to read.
    batch_size: the *global* batch size, over all hosts.
    shuffle: shuffle files and examples.
    seed: data seed (shuffling and augmentation); None is random. Use the
      same seed on every host.
    use_cached: read SeqIO's offline cache.
    pack: must be False for image-text pairs.
    num_epochs: passes over the data; None repeats forever.
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  shuffle: bool
  seed: Optional[int] = None
  use_cached: bool = False
  pack: bool = False
  num_epochs: Optional[int] = None


# Tasks whose preprocessing is deterministic and whose split fits in memory
# (``mark_in_memory``): their repeated pipelines preprocess one pass only.
_IN_MEMORY_TASKS = set()
# Examples shuffled at once when a cached pass is replayed (per epoch).
_REPLAY_SHUFFLE_BUFFER = 4096
# (task, split, lengths, shard, converter) -> (the Task, its cached pass).
_CACHED_PASSES = {}


def mark_in_memory(task_name: str) -> None:
  """Declares ``task_name``'s preprocessed examples deterministic and small.

  A repeated pipeline over such a Task (``num_epochs`` != 1) then runs the
  preprocessors for one pass, keeps the examples in memory and replays them,
  reshuffled every epoch, instead of decoding, resizing and tokenizing every
  example again. Only for Tasks without random augmentation or random text
  reduction: a cached pass would repeat its first draws forever.
  """
  _IN_MEMORY_TASKS.add(task_name)


def is_in_memory(task_name: str) -> bool:
  """Whether ``mark_in_memory`` declared ``task_name``."""
  return task_name in _IN_MEMORY_TASKS


def get_provider(name: str):
  """The registered Task or Mixture ``name``, with a helpful error if unknown.

  Args:
    name: a SeqIO Task or Mixture name.

  Returns:
    The ``seqio.Task`` or ``seqio.Mixture``.
  """
  if not isinstance(name, str):
    raise ValueError(f"Expected a Task or Mixture name (str), got {name!r}.")
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  raise ValueError(
      f"No SeqIO Task or Mixture named {name!r}; registered: {mixtures.registered_names()}. Import "
      "the module that registers it first (e.g. `import clipa_t5x.tasks`).")


def per_host_batch_size(batch_size: int, num_shards: int) -> int:
  """``batch_size // num_shards``, refusing sizes that do not divide."""
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
  if batch_size < 1 or batch_size % num_shards:
    raise ValueError(f"Global batch size {batch_size} must be a positive "
                     f"multiple of the {num_shards} data shards (hosts); "
                     "change DatasetConfig.batch_size.")
  return batch_size // num_shards


def get_dataset(
    cfg: DatasetConfig,
    shard_id: int,
    num_shards: int,
    feature_converter_cls: Type[seqio.FeatureConverter] = (
        ImageTextFeatureConverter),
    prefetch: int = 2,
) -> tf.data.Dataset:
  """This host's batched dataset for ``cfg``.

  Args:
    cfg: what to read.
    shard_id: this host's data shard (t5x: from the partitioner's layout).
    num_shards: number of data shards (hosts reading distinct data).
    feature_converter_cls: built as ``cls(pack=cfg.pack)``.
    prefetch: batches to prefetch.

  Returns:
    Batches ``{'image': uint8 [B, S, S, 3], 'text': int32 [B, L]}`` with
    B = ``cfg.batch_size // num_shards`` (remainder dropped). A tagged Mixture
    (``mixtures.SourceTaggedMixture``) adds ``mixtures.SOURCE_COUNTS``, the
    running count of examples per source, which stays on the host.
  """
  if not 0 <= shard_id < num_shards:
    raise ValueError(f"shard_id {shard_id} is outside [0, {num_shards}).")
  batch = per_host_batch_size(cfg.batch_size, num_shards)
  provider = get_provider(cfg.mixture_or_task_name)
  if cfg.num_epochs != 1 and is_in_memory(cfg.mixture_or_task_name) and not cfg.use_cached:
    return _replayed_from_memory(provider, cfg, shard_id, num_shards, feature_converter_cls,
                                 batch).prefetch(prefetch)
  lengths, converter = dict(cfg.task_feature_lengths), feature_converter_cls(pack=cfg.pack)
  tagged = mixtures.is_tagged(provider)
  if tagged:  # the source id rides through the converter, then becomes per-batch counts
    lengths[mixtures.SOURCE_ID] = 0
    converter = feature_converter_cls(
        pack=cfg.pack, passthrough_features={mixtures.SOURCE_ID: FeatureSpec(tf.int32, rank=0)})
  ds = seqio.get_dataset(
      provider, task_feature_lengths=lengths, feature_converter=converter,
      dataset_split=cfg.split, use_cached=cfg.use_cached, shuffle=cfg.shuffle,
      num_epochs=cfg.num_epochs, shard_info=seqio.ShardInfo(index=shard_id, num_shards=num_shards),
      seed=cfg.seed, batch_size=batch, verbose=False)
  if tagged:
    ds = mixtures.count_sources(ds, len(mixtures.source_tasks(provider, cfg.split)))
  return ds.prefetch(prefetch)


def _replayed_from_memory(provider, cfg: DatasetConfig, shard_id: int, num_shards: int,
                          feature_converter_cls, batch: int) -> tf.data.Dataset:
  """One preprocessed pass kept in memory, reshuffled and replayed ``num_epochs`` times.

  The pass is read in file order (no shuffle), so the stream depends on
  ``cfg.seed`` only through the replay's shuffle, and one cached pass serves
  every pipeline of this process over the same Task, split, lengths and shard
  (the stages and runs of a sweep): only the first one preprocesses.
  """
  key = (cfg.mixture_or_task_name, cfg.split, tuple(sorted(cfg.task_feature_lengths.items())),
         shard_id, num_shards, feature_converter_cls, cfg.pack)
  cached = _CACHED_PASSES.get(key)
  if cached is None or cached[0] is not provider:  # new, or the Task was re-registered
    ds = seqio.get_dataset(
        provider, task_feature_lengths=dict(cfg.task_feature_lengths),
        feature_converter=feature_converter_cls(pack=cfg.pack), dataset_split=cfg.split,
        shuffle=False, num_epochs=1,
        shard_info=seqio.ShardInfo(index=shard_id, num_shards=num_shards),
        batch_size=None, verbose=False)
    cached = _CACHED_PASSES[key] = (provider, ds.cache())
  ds = cached[1]
  if cfg.shuffle:
    ds = ds.shuffle(_REPLAY_SHUFFLE_BUFFER, seed=cfg.seed, reshuffle_each_iteration=True)
  return ds.repeat(cfg.num_epochs).batch(batch, drop_remainder=True)


def get_eval_examples(task_name: str, split: str,
                      task_feature_lengths: Mapping[str, int],
                      shard_id: int = 0, num_shards: int = 1
                      ) -> tf.data.Dataset:
  """Unbatched, unshuffled single pass over an eval Task, converter bypassed.

  Args:
    task_name: a registered Task (e.g. ``demo_shapes_eval``).
    split: the split to read.
    task_feature_lengths: lengths for its preprocessors.
    shard_id: this host's shard.
    num_shards: number of shards.

  Returns:
    Examples as the Task's preprocessors leave them, e.g. ``{'image': uint8
    [S, S, 3], 'text': int32 [L], 'label': int32 []}`` (the order is fixed).
  """
  provider = get_provider(task_name)
  if not isinstance(provider, seqio.Task):
    raise ValueError(f"{task_name!r} is a Mixture; evaluation reads one "
                     "Task, pass a Task name.")
  shard_info = (seqio.ShardInfo(index=shard_id, num_shards=num_shards)
                if num_shards > 1 else None)
  return provider.get_dataset(
      sequence_length=dict(task_feature_lengths), split=split, shuffle=False,
      num_epochs=1, shard_info=shard_info, seed=0)
