"""The input pipeline's position, saved beside every model checkpoint.

A resumed run must see exactly the batches an uninterrupted one would have
seen (open_clip cannot resume mid-epoch; webdataset cannot guarantee it).
tf.data can serialise an iterator -- file order, shuffle buffer, prefetched
batches -- when every op in the pipeline is native TF, as ours are.

Layout: ``<stage_dir>/data_iterators/step_<step>/process_<i>-of-<n>.*``, one
per host, written *before* the model checkpoint of the same step. So when a
complete model checkpoint exists, so does the data position it needs; a data
position without its model checkpoint (a save cut short) is ignored and later
deleted.
"""

import os
import re
import shutil
from typing import Dict, Iterable, Iterator, Mapping

import jax
import numpy as np
import tensorflow as tf

from clipa_t5x import model_dir as model_dir_lib

_DIR = model_dir_lib.DATA_ITERATORS
# Batch features under this prefix stay on the host (e.g. examples per source):
# ``host_values`` holds the latest ones, and the device batch never sees them.
HOST_PREFIX = "host/"


def _step_dir(stage_dir: str, step: int) -> str:
  return os.path.join(stage_dir, _DIR, f"step_{step}")


def _prefix(stage_dir: str, step: int) -> str:
  return os.path.join(_step_dir(stage_dir, step),
                      f"process_{jax.process_index()}-of-{jax.process_count()}")


class CheckpointableBatches:
  """An iterator of numpy batches whose position can be saved and restored.

  Args:
    dataset: the host's batched ``tf.data.Dataset`` (native TF ops only).

  Features named ``host/...`` are taken out of each batch; their latest values
  are in ``host_values`` (keys without the prefix).
  """

  def __init__(self, dataset: tf.data.Dataset):
    self._iterator = iter(dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)
    self.host_values: Dict[str, np.ndarray] = {}

  def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
    return self

  def __next__(self) -> Mapping[str, np.ndarray]:
    batch = {k: v.numpy() for k, v in next(self._iterator).items()}
    for key in [k for k in batch if k.startswith(HOST_PREFIX)]:
      self.host_values[key[len(HOST_PREFIX):]] = batch.pop(key)
    return batch

  def save(self, stage_dir: str, step: int) -> None:
    """Writes the position after ``step`` batches (call before the model save)."""
    os.makedirs(_step_dir(stage_dir, step), exist_ok=True)
    self._checkpoint.write(_prefix(stage_dir, step))

  def restore(self, stage_dir: str, step: int) -> bool:
    """Moves to the position saved at ``step``; False if none was saved."""
    prefix = _prefix(stage_dir, step)
    if not tf.io.gfile.exists(prefix + ".index"):
      return False
    self._checkpoint.read(prefix).assert_consumed()
    return True


def has_state(stage_dir: str, step: int) -> bool:
  """Whether this host's data position was saved at ``step``."""
  return tf.io.gfile.exists(_prefix(stage_dir, step) + ".index")


def remove_except(stage_dir: str, keep_steps: Iterable[int]) -> None:
  """Deletes saved positions whose model checkpoint is gone (host 0 only)."""
  if jax.process_index() != 0:
    return
  root = os.path.join(stage_dir, _DIR)
  if not os.path.isdir(root):
    return
  keep = set(int(s) for s in keep_steps)
  for name in os.listdir(root):
    match = re.fullmatch(r"step_(\d+)", name)
    if match and int(match.group(1)) not in keep:
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)
