"""Orbax checkpoints: periodic saves, automatic resume, and stage hand-off.

Each checkpoint ``MODEL_DIR/checkpoint_<step>/`` holds three items:
``params``, ``opt_state`` (both sharded arrays; every host writes its own
part) and ``meta`` (JSON: step, examples seen, data position, stage). Orbax
writes into a temporary directory and renames it when complete, so a save
interrupted half-way is never listed, never picked up on resume.

Restores go straight into the *current* mesh's shardings, whatever mesh wrote
the checkpoint. A fine-tune stage restores only the parameters of the previous
stage (``restore_params``), resizing the text position embedding when the
text length changed (8 → 32 in CLIPA-v2), and starts a fresh optimizer.
"""

import dataclasses
import errno
import logging
import os
import re
import shutil
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import model_info
from clipa_t5x.model_dir import STEP_PREFIX  # re-exported: the folder prefix Orbax writes
from clipa_t5x.train_state import TrainState

_ITEMS = ("params", "opt_state", "meta")


@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
  """t5x's name. ``period``: steps between saves; ``keep``: how many to keep (None = all)."""
  period: int = 1000
  keep: Optional[int] = 3


@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
  """Where a stage's initial parameters come from (t5x's name and fields).

  Attributes:
    path: a checkpoint directory (``…/checkpoint_<step>``) or a model/stage
      directory whose latest checkpoint is used.
    mode: ``'specific'`` (the path is one checkpoint) or ``'latest'``.
    assignment_map: ``[(regex_on_new_param_path, old_path_or_None)]``: rename
      parameters, or ``None`` to leave a parameter at its fresh initialisation.
    fallback_to_scratch: parameters absent from the checkpoint keep their
      fresh initialisation instead of raising.
  """
  path: str = ""
  mode: str = "latest"
  assignment_map: Sequence[Tuple[str, Optional[str]]] = ()
  fallback_to_scratch: bool = False


def _manager(directory: str, keep: Optional[int] = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      # read_only only stops directory creation: Orbax's own read_only mode
      # logs warnings on every use.
      max_to_keep=keep, create=not read_only, step_prefix=STEP_PREFIX,
      # Saves block until written: simpler failure semantics; the step after a
      # save is only a small fraction of a checkpoint period.
      enable_async_checkpointing=False)
  # Handlers named up front, so a fresh manager can read metadata before any
  # save or restore call has told it what each item is.
  handlers = {"params": ocp.StandardCheckpointHandler(),
              "opt_state": ocp.StandardCheckpointHandler(),
              "meta": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def check_free_space(directory: str, abstract_state: Any) -> None:
  """Fails before training when a local ``directory`` cannot hold one checkpoint.

  Remote paths (``gs://``...) are not checked. The estimate is the state's
  size in bytes (the sum over all hosts' shards).
  """
  if "://" in directory:
    return
  needed = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
  os.makedirs(directory, exist_ok=True)
  free = shutil.disk_usage(directory).free
  if free < needed:
    raise ValueError(
        f"MODEL_DIR {directory!r} has {free / 2**30:.2f} GiB free but one checkpoint needs "
        f"about {needed / 2**30:.2f} GiB; free some space or choose another MODEL_DIR.")


class Checkpointer:
  """Saves every ``period`` steps and restores the latest complete checkpoint."""

  def __init__(self, directory: str, config: SaveCheckpointConfig = SaveCheckpointConfig()):
    self.directory = directory
    self.config = config
    self._manager = _manager(directory, config.keep)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> Sequence[int]:
    return list(self._manager.all_steps())

  def has_step(self, step: int) -> bool:
    return step in self._manager.all_steps()

  def should_save(self, step: int) -> bool:
    return self.config.period > 0 and step % self.config.period == 0

  def save(self, state: TrainState, step: int, meta: Dict[str, Any]) -> None:
    """Writes ``state`` at ``step`` unless that step is already saved."""
    if step in self._manager.all_steps():
      return
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.JsonSave({**meta, "step": int(step)}))
    try:
      self._manager.save(step, args=args, force=True)
      self._manager.wait_until_finished()
    except OSError as e:
      if e.errno == errno.ENOSPC:
        raise ValueError(
            f"the disk of {self.directory!r} is full: checkpoint {step} was not written (the "
            "previous ones are intact); free some space and rerun to resume.") from e
      raise

  def restore(self, abstract_state: TrainState, step: Optional[int] = None
              ) -> Tuple[TrainState, Dict[str, Any]]:
    """Restores a full train state into ``abstract_state``'s shardings."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state.params),
        opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
        meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    step_array = jax.device_put(jnp.asarray(meta["step"], jnp.int32),
                                abstract_state.step.sharding)
    state = TrainState(step=step_array, params=restored["params"],
                       opt_state=restored["opt_state"])
    return state, meta

  def restore_latest_good(self, abstract_state: TrainState
                          ) -> Optional[Tuple[TrainState, Dict[str, Any]]]:
    """Restores the newest checkpoint that reads back whole; None if there is none.

    A checkpoint that fails to read (a file truncated or deleted after it was
    written, a disk error) is renamed ``corrupt_checkpoint_<step>_<time>`` --
    kept for inspection, never picked up again -- with a warning, and the
    previous one is tried.
    """
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self.restore(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except  (any read failure)
        path = os.path.join(self.directory, model_dir_lib.checkpoint_name(step))
        moved = os.path.join(self.directory,
                             model_dir_lib.corrupt_checkpoint_name(step, int(time.time())))
        message = (f"checkpoint {path} cannot be read ({type(e).__name__}: "
                   f"{str(e).splitlines()[0][:200] if str(e) else ''}); moved to {moved}, "
                   "trying the previous one")
        logging.warning(message)
        print(f"warning: {message}", flush=True)
        if jax.process_index() == 0:
          os.rename(path, moved)
        self._manager.close()
        self._manager = _manager(self.directory, self.config.keep)
    return None

  def close(self) -> None:
    self._manager.close()


def resize_text_pos_embedding(pos_embedding: jax.Array, length: int) -> jax.Array:
  """Bilinear resize of a (1, L_old, W) position embedding to (1, length, W)."""
  _, _, width = pos_embedding.shape
  return jax.image.resize(pos_embedding.astype(jnp.float32), (1, length, width),
                          method="bilinear").astype(pos_embedding.dtype)


def restore_params(config: RestoreCheckpointConfig, abstract_params: Any,
                   fresh_params: Any) -> Any:
  """Loads parameters from another run's checkpoint for a new stage.

  Args:
    config: where from, and how to map names.
    abstract_params: ``ShapeDtypeStruct`` tree (with shardings) of the new model.
    fresh_params: the new model's freshly initialised parameters (used for
      ``assignment_map`` entries mapped to ``None`` and for
      ``fallback_to_scratch``).

  Returns:
    Parameters shaped and sharded like ``abstract_params``. A saved text
    ``pos_embedding`` of another length is resized bilinearly; any other shape
    mismatch raises with the parameter's name.
  """
  directory, step = _directory_and_step(config)
  manager = _manager(directory, read_only=True)
  saved_meta = manager.item_metadata(step)["params"].tree
  saved_flat = {model_info.path_name(p): m for p, m in
                jax.tree_util.tree_flatten_with_path(saved_meta)[0]}
  new_flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  fresh_flat = jax.tree.leaves(fresh_params)

  sources = {}
  for path, _ in new_flat:
    name = model_info.path_name(path)
    source = name
    for pattern, old in config.assignment_map:
      if re.fullmatch(pattern, name):
        source = None if old is None else re.sub(pattern, old, name)
        break
    if source is not None and source not in saved_flat:
      if not config.fallback_to_scratch:
        raise ValueError(
            f"parameter {name!r} is not in checkpoint {directory} (step {step}); map it with "
            "RestoreCheckpointConfig.assignment_map or set fallback_to_scratch=True.")
      source = None
    sources[name] = source

  # Restore every saved leaf in its saved shape: those we use directly into the
  # new sharding, the rest (renamed away, to be resized) replicated.
  any_sharding = new_flat[0][1].sharding
  replicated = jax.sharding.NamedSharding(any_sharding.mesh, jax.sharding.PartitionSpec())
  target_of_source = {sources[model_info.path_name(p)]: t for p, t in new_flat
                      if sources[model_info.path_name(p)] is not None}

  def restore_target(path, meta):
    target = target_of_source.get(model_info.path_name(path))
    sharding = (target.sharding if target is not None and tuple(meta.shape) == target.shape
                else replicated)
    return jax.ShapeDtypeStruct(tuple(meta.shape), meta.dtype, sharding=sharding)

  target_tree = jax.tree_util.tree_map_with_path(restore_target, saved_meta)
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(target_tree)))["params"]
  manager.close()
  restored_flat = {model_info.path_name(p): v for p, v in
                   jax.tree_util.tree_flatten_with_path(restored)[0]}

  leaves = []
  for ((path, target), fresh) in zip(new_flat, fresh_flat):
    name = model_info.path_name(path)
    source = sources[name]
    if source is None:
      leaves.append(fresh)
      continue
    value = restored_flat[source]
    if value.shape != target.shape:
      if name.endswith("pos_embedding") and value.ndim == 3 and value.shape[2] == target.shape[2]:
        value = jax.jit(resize_text_pos_embedding, static_argnums=1,
                        out_shardings=target.sharding)(value, target.shape[1])
      else:
        raise ValueError(
            f"parameter {name!r} has shape {value.shape} in the checkpoint but {target.shape} "
            "in the model: the model config differs from the one that wrote the checkpoint.")
    leaves.append(value.astype(target.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _directory_and_step(config: RestoreCheckpointConfig) -> Tuple[str, int]:
  """(Orbax manager directory, step) of a checkpoint or stage path (``model_refs`` resolves
  every other kind of reference)."""
  path = config.path.rstrip("/")
  if not path:
    raise ValueError("RestoreCheckpointConfig.path is empty; set it to a checkpoint or run directory.")
  step = model_dir_lib.step_of(path)
  if config.mode == "specific" or step is not None:
    if step is None:
      raise ValueError(f"mode='specific' needs a path ending in {STEP_PREFIX}_<step>, got {path!r}")
    return model_dir_lib.stage_dir_of(path), step
  if config.mode != "latest":
    raise ValueError(f"RestoreCheckpointConfig.mode must be 'latest' or 'specific', got {config.mode!r}")
  manager = _manager(path, read_only=True)
  step = manager.latest_step()
  manager.close()
  if step is None:
    raise FileNotFoundError(
        f"no complete checkpoint under {path!r} to initialise from; train the previous stage "
        "first or fix RestoreCheckpointConfig.path.")
  return path, step


def save_params(directory: str, params: Any, step: int = 0,
                meta: Optional[Dict[str, Any]] = None) -> str:
  """Writes a parameters-only checkpoint ``directory/checkpoint_<step>``.

  It has the ``params`` and ``meta`` items but no optimizer state: usable as
  a stage's ``init_from`` (``RestoreCheckpointConfig``), by
  ``python -m clipa_t5x.eval`` and by ``load_params``, not for resuming.
  Used for imported weights (e.g. from open_clip).

  Args:
    directory: the run/stage-like directory to write into.
    params: unboxed parameter tree (numpy or jax arrays).
    step: the step number in the checkpoint's name.
    meta: JSON values to record (e.g. where the weights came from).

  Returns:
    The checkpoint's path.
  """
  manager = _manager(directory)
  if step in manager.all_steps():
    manager.close()
    raise ValueError(f"{directory} already has checkpoint {step}; choose an empty directory.")
  params = jax.tree.map(jnp.asarray, params)
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      meta=ocp.args.JsonSave({**(meta or {}), "step": int(step)})), force=True)
  manager.wait_until_finished()
  manager.close()
  return os.path.join(directory, model_dir_lib.checkpoint_name(step))


def load_params(path: str, mode: str = "latest") -> Tuple[Any, Dict[str, Any], str]:
  """Reads the parameters of a checkpoint onto one device (for inference/export).

  Args:
    path: a ``.../checkpoint_<step>`` directory, or a stage directory whose
      latest checkpoint is read.
    mode: as ``RestoreCheckpointConfig.mode``.

  Returns:
    ``(params, meta, checkpoint_path)``; ``params`` is a tree of arrays on the
    first local device, as saved (any mesh wrote it).
  """
  directory, step = _directory_and_step(RestoreCheckpointConfig(path=path, mode=mode))
  manager = _manager(directory, read_only=True)
  try:
    saved = manager.item_metadata(step)["params"].tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), saved)
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  return restored["params"], dict(restored["meta"] or {}), os.path.join(
      directory, model_dir_lib.checkpoint_name(step))
