"""The layout of a MODEL_DIR: every file and folder name, and how to read them.

A run writes::

  MODEL_DIR/
    config.gin                   the operative gin config (config.previous.gin: the one
                                 it replaced, after --allow_config_change)
    summary.json                 one row per finished stage, in run order
    <stage>/                     one folder per stage (e.g. pretrain_84px)
      model_config.json          the model + the stage's image size / text length
      model-info.txt             every parameter's shape, axes and sharding
      stage_summary.json         written when the stage has finished
      train_metrics.jsonl        train/ (TensorBoard)   one row per logged step
      eval_metrics.jsonl         eval/ (TensorBoard)    one row per evaluation
      checkpoint_<step>/         Orbax checkpoints (corrupt_checkpoint_<step>_<time>/:
                                 one that failed to restore, set aside)
      data_iterators/            the input pipeline's position at each checkpoint
      eval_<step>/               ``python -m clipa_t5x.eval`` of checkpoint_<step>:
        results.json             results, eval_metrics.jsonl and TensorBoard events

This module only names things (``os`` and ``re``, no TensorFlow, JAX or
torch), so every tool that reads a MODEL_DIR (training, inference, export)
can share it without pulling in the others' imports.
"""

import os
import re
from typing import List, Optional

STEP_PREFIX = "checkpoint"
CONFIG_GIN = "config.gin"
SUMMARY = "summary.json"
STAGE_SUMMARY = "stage_summary.json"
CONFIG_PREVIOUS_GIN = "config.previous.gin"
MODEL_CONFIG = "model_config.json"
MODEL_INFO = "model-info.txt"
TRAIN_METRICS = "train_metrics.jsonl"
EVAL_METRICS = "eval_metrics.jsonl"
TRAIN_EVENTS = "train"  # TensorBoard folders
EVAL_EVENTS = "eval"
DATA_ITERATORS = "data_iterators"
RESULTS = "results.json"

_STEP_DIR = re.compile(rf"{STEP_PREFIX}_(\d+)")


def checkpoint_name(step: int) -> str:
  """The folder name of the checkpoint of ``step``: ``checkpoint_<step>``."""
  return f"{STEP_PREFIX}_{int(step)}"


def corrupt_checkpoint_name(step: int, when: int) -> str:
  """Where a checkpoint that fails to restore is moved: ``corrupt_checkpoint_<step>_<when>``."""
  return f"corrupt_{checkpoint_name(step)}_{int(when)}"


def eval_dir_name(step: int) -> str:
  """The folder of ``python -m clipa_t5x.eval`` results of a step: ``eval_<step>``."""
  return f"eval_{int(step)}"


def step_of(path: str) -> Optional[int]:
  """The step of a ``.../checkpoint_<step>`` path, or None for any other path."""
  match = _STEP_DIR.fullmatch(os.path.basename(path.rstrip("/")))
  return int(match.group(1)) if match else None


def stage_dir_of(path: str) -> str:
  """The stage folder of ``path``: the parent of a checkpoint folder, else ``path`` itself."""
  path = path.rstrip("/")
  if step_of(path) is None:
    return path
  return os.path.dirname(path) or "."


def checkpoint_dirs(directory: str) -> List[str]:
  """Names of the ``checkpoint_<step>`` folders in ``directory`` ([] if unreadable).

  Local or remote (``gs://``...: read through ``tf.io.gfile``, see ``paths``).
  """
  from clipa_t5x import paths  # pylint: disable=import-outside-toplevel
  try:
    names = paths.listdir(directory)
  except Exception:  # pylint: disable=broad-except  (OSError; gfile's NotFoundError)
    return []
  return [n for n in names
          if step_of(n) is not None and paths.isdir(os.path.join(directory, n))]
