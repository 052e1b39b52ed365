"""Checks of every stage of a run, made before the first one trains.

``runner.run`` calls ``check_run`` once, before any stage starts, and
``python -m clipa_t5x.train --check`` calls it and stops there. Each problem
stops the run with one line that names the stage, the setting and the fix:

* settings: image (and eval image) size divisible by the patch size, batch
  size divisible by the data-parallel size and by ``num_microbatches``,
  masking valid, steps positive, warmup shorter than the stage, the task
  registered;
* data: the stage's train files exist (a glob matching nothing stops here,
  not after the previous stage trained for days);
* ``init_from``: a checkpoint to start from can be read;
* memory: the stage's per-device estimate (``clipa_t5x.memory``, the same one
  ``python -m clipa_t5x.plan`` prints) fits the device: device memory on GPU
  and TPU, available host RAM on CPU;
* sharding: every parameter's sharded dimensions divide by the mesh.

Evaluation data is checked where the evaluators are built from gin (before
``runner.run`` starts), so it is covered as well.
"""

import contextlib
import dataclasses
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from clipa_t5x import memory
from clipa_t5x import text_table


@dataclasses.dataclass(frozen=True)
class StageReport:
  """What the preflight found for one stage.

  Attributes:
    name: stage name.
    estimate: the per-device memory estimate.
    capacity: bytes one device can hold (None: unknown).
    where: where ``capacity`` comes from (``'H100 memory'``, ``'host RAM available'``).
    skipped: the stage finished before; only its settings were checked.
  """
  name: str
  estimate: memory.MemoryEstimate
  capacity: Optional[int]
  where: str
  skipped: bool = False

  @property
  def fits(self) -> bool:
    return memory.fits(self.estimate, self.capacity)


def _stage_error(stage, message: str) -> ValueError:
  return ValueError(f"stage {stage.name!r}: {message}")


@contextlib.contextmanager
def _named(stage, prefix: str = "", errors: Tuple[type, ...] = (ValueError,)) -> Iterator[None]:
  """Re-raises ``errors`` of the block as one ValueError line naming the stage."""
  try:
    yield
  except errors as e:
    raise _stage_error(stage, f"{prefix}{e}") from None


def check_stage_settings(stage, model_config, partitioner) -> None:
  """Settings problems of one stage, found without data or devices, each in one line.

  Args:
    stage: a ``runner.Stage``.
    model_config: the ``ClipaConfig``.
    partitioner: anything with ``data_parallel_size`` (a ``PjitPartitioner``).

  Raises:
    ValueError: the first problem, naming the stage and the setting.
  """
  from clipa_t5x import optimizers  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import vit  # pylint: disable=import-outside-toplevel
  missing = {"image", "text"} - set(stage.task_feature_lengths)
  if missing:
    raise _stage_error(stage, f"task_feature_lengths lacks {sorted(missing)}; "
                       "give e.g. {'image': 224, 'text': 32}.")
  patch = model_config.image.patch_size
  for what, size in (("image", stage.image_size), ("eval image", stage.eval_image_size)):
    if size is not None and size % patch:
      raise _stage_error(stage, f"{what} size {size} is not divisible by the patch size "
                         f"{patch}; use {size - size % patch} or {size - size % patch + patch}.")
  # Errors name the setting as the gin files write it (Stage.batch_size), not the
  # internal DatasetConfig / partitioner fields it later reaches.
  data = partitioner.data_parallel_size
  if not isinstance(stage.batch_size, int) or stage.batch_size < 1:
    raise _stage_error(stage, f"Stage.batch_size must be a positive integer, got "
                       f"{stage.batch_size!r}.")
  if stage.batch_size % data:
    raise _stage_error(stage, f"Stage.batch_size={stage.batch_size} is not divisible by the "
                       f"data-parallel size {data}; use a multiple of it.")
  if stage.num_microbatches < 1 or stage.batch_size % (stage.num_microbatches * data):
    raise _stage_error(stage, f"Stage.batch_size={stage.batch_size} must split into "
                       f"num_microbatches={stage.num_microbatches} pieces, each divisible by "
                       f"the data-parallel size {data}.")
  with _named(stage, "Stage."):
    vit.check_masking(stage.mask_ratio, stage.mask_type)
  if stage.train_steps <= 0:
    raise _stage_error(stage, f"train_steps must be positive, got {stage.train_steps}.")
  with _named(stage, "OptimizerConfig: "):  # warmup vs steps, mu_dtype: the optimizer's checks
    optimizers.make_optimizer(stage.optimizer, stage.batch_size, stage.train_steps)
  from clipa_t5x.data import dataset as dataset_lib  # pylint: disable=import-outside-toplevel
  with _named(stage):
    dataset_lib.get_provider(stage.mixture_or_task_name)


# ------------------------------------------------------------------ adapters
# One small function per outside question, so that the data and checkpoint
# modules can change how they answer without touching the checks.

def train_data_files(task_or_mixture: str, split: str) -> List[Tuple[str, Any, int]]:
  """``[(task name, what it reads, number of files)]`` of a Task or every Task of a Mixture.

  Sources that cannot list their files (TFDS, in-memory) report ``-1`` files.
  """
  from clipa_t5x.data import dataset as dataset_lib  # pylint: disable=import-outside-toplevel
  provider = dataset_lib.get_provider(task_or_mixture)
  tasks = list(getattr(provider, "tasks", None) or [provider])
  out = []
  for task in tasks:
    source = getattr(task, "source", None)
    lister = getattr(source, "list_shards", None)
    if lister is None:
      out.append((task.name, source, -1))
      continue
    try:
      files = list(lister(split))
    except NotImplementedError:
      out.append((task.name, source, -1))
      continue
    corpus = getattr(source, "corpus", None)  # web corpora resolve their glob lazily
    if corpus is not None and hasattr(corpus, "pattern"):
      where = ", ".join(corpus.pattern())
    elif hasattr(source, "_patterns_for"):
      where = ", ".join(source._patterns_for(split))  # pylint: disable=protected-access
    else:
      where = repr(source)
    out.append((task.name, where, len(files)))
  return out


def check_train_data(stage, num_shards: int = 1) -> None:
  """Fails when a Task of the stage finds no train files, or fewer than the hosts reading them."""
  with _named(stage, errors=(ValueError, FileNotFoundError)):
    found = train_data_files(stage.mixture_or_task_name, stage.split)
  for task, what, count in found:
    if count == 0:
      raise _stage_error(stage, f"task {task!r} finds no {stage.split!r} files in {what}; "
                         "check the path/glob (e.g. --gin.DATACOMP1B_DATA=\"'gs://…/*.tar'\").")
    if 0 < count < num_shards:
      raise _stage_error(stage, f"task {task!r} has {count} {stage.split!r} files in {what} but "
                         f"{num_shards} hosts each read their own; write at least {num_shards} "
                         "shards (make_shards --samples_per_shard) or use fewer hosts.")


def init_source(init_from: Any, model_config=None) -> Optional[str]:
  """Where a ``RestoreCheckpointConfig`` points, checked readable; None for no checkpoint.

  Raises:
    ValueError / FileNotFoundError: the reference cannot be read.
  """
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  if init_from is None or init_from == "scratch":
    return None
  if isinstance(init_from, str):  # any model reference: run/stage/checkpoint dir, open_clip, npz
    from clipa_t5x import model_refs  # pylint: disable=import-outside-toplevel
    ref = model_refs.describe(init_from, model_config)
    return str(getattr(ref, "path", init_from))
  # The checkpoint module's own resolver (a lead may switch this to model_refs.describe).
  directory, step = checkpoints._directory_and_step(init_from)  # pylint: disable=protected-access
  return f"{directory} step {step}"


def check_init_from(stage, model_config=None) -> None:
  """Fails when the stage's ``init_from`` cannot be read (None: the previous stage, fine)."""
  with _named(stage, errors=(ValueError, FileNotFoundError)):
    init_source(stage.init_from, model_config)


# ------------------------------------------------------------------ memory
def stage_estimate(stage, model_config, mesh: memory.MeshShape,
                   platform: Optional[str] = None) -> memory.MemoryEstimate:
  """``memory.estimate`` for a ``runner.Stage`` (``platform``: see ``memory.estimate``)."""
  return memory.estimate(
      model_config, image_size=stage.image_size, text_length=stage.text_length,
      batch_size=stage.batch_size, mesh=mesh, mask_ratio=stage.mask_ratio,
      num_microbatches=stage.num_microbatches, mu_dtype=stage.optimizer.mu_dtype,
      platform=platform)


def mesh_of(partitioner) -> memory.MeshShape:
  """The ``MeshShape`` of a built ``PjitPartitioner``."""
  return memory.MeshShape(data=partitioner.data_parallel_size,
                          model=partitioner.num_partitions,
                          rules=tuple(tuple(r) for r in partitioner.logical_axis_rules))


def check_run(stages: Sequence[Any], model_config, partitioner, model_dir: Optional[str] = None,
              capacity: Optional[int] = None, where: str = "") -> List[StageReport]:
  """Every check of every stage, before the first one trains.

  Args:
    stages: the run's ``runner.Stage``s.
    model_config: the ``ClipaConfig``.
    partitioner: the run's ``PjitPartitioner``.
    model_dir: the run directory; stages that finished there (their
      ``stage_summary.json`` exists) get only the settings checks.
    capacity: bytes per device to plan against; None reads the device.
    where: what ``capacity`` is, for the error line.

  Returns:
    One ``StageReport`` per stage.

  Raises:
    ValueError: the first problem, in one line.
  """
  from clipa_t5x import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  if capacity is None:
    capacity, where = memory.device_memory()
  mesh = mesh_of(partitioner)
  reports = []
  for stage in stages:
    check_stage_settings(stage, model_config, partitioner)
    estimate = stage_estimate(stage, model_config, mesh)
    with _named(stage):
      memory.check_shardings(estimate, mesh)
    done = model_dir is not None and os.path.exists(
        os.path.join(model_dir, stage.name, model_dir_lib.STAGE_SUMMARY))
    if not done:
      check_train_data(stage, partitioner.get_data_layout(stage.batch_size).num_shards)
      check_init_from(stage, model_config)
      memory.check_fits(stage.name, estimate, capacity, where, mesh, stage.num_microbatches)
    reports.append(StageReport(stage.name, estimate, capacity, where, skipped=done))
  return reports


def format_reports(reports: Sequence[StageReport], mesh: memory.MeshShape) -> str:
  """The memory table: one row per stage, bytes per device."""
  g = memory.format_bytes
  header = ("stage", "ex/dev", "remat", "params", "optimizer", "grads+update", "activations",
            "loss+batch", "total", "device", "fits")
  rows = [header]
  for r in reports:
    e = r.estimate
    rows.append((r.name, str(e.examples_per_device), e.remat_policy, g(e.params), g(e.optimizer),
                 g(e.gradients + e.update), g(e.activations), g(e.loss + e.batch), g(e.total),
                 g(r.capacity) if r.capacity else "?",
                 "done" if r.skipped else ("yes" if r.fits else "NO")))
  where = next((r.where for r in reports if r.where), "")
  return (f"memory per device: mesh data={mesh.data} x model={mesh.model}"
          + (f", device = {where}" if where else "") + f", planning to {memory.HEADROOM:.0%}\n"
          + text_table.format_table(rows))
