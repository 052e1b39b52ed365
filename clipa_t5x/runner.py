"""Runs a CLIPA recipe: one or more training stages, each into its own directory.

A recipe is a list of ``Stage``s (in gin, ``run.stages = [@pretrain/Stage(),
@finetune/Stage()]``). Each stage trains into ``MODEL_DIR/<stage name>/``:

* a stage that finished before (its ``stage_summary.json`` exists) is skipped;
* a stage with checkpoints resumes from its latest one (its own checkpoint
  always wins over the initial one);
* otherwise it starts fresh, taking parameters from ``init_from`` (the
  previous stage by default) with a fresh optimizer and step 0, as CLIPA-v2's
  fine-tuning does.

At the end, ``MODEL_DIR/summary.json`` lists one row per stage (tokens,
GFLOPs per sample, wall time, zero-shot top-1) and the table is printed.
"""

import dataclasses
import itertools
import json
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import jax

from clipa_t5x import checkpoints
from clipa_t5x import flops
from clipa_t5x import metrics_logging
from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import model_info
from clipa_t5x import model_refs
from clipa_t5x import optimizers
from clipa_t5x import partitioning
from clipa_t5x import paths
from clipa_t5x import preemption
from clipa_t5x import preflight
from clipa_t5x import text_table
from clipa_t5x import train_state as train_state_lib
from clipa_t5x import trainer as trainer_lib
from clipa_t5x.evaluation import evaluators as evaluators_lib
from clipa_t5x.models import clip as clip_lib
from clipa_t5x.models import configs as model_configs
from clipa_t5x.models import config_io

@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage of a recipe.

  Attributes:
    name: directory name under ``MODEL_DIR`` (e.g. ``'pretrain'``).
    mixture_or_task_name: registered SeqIO task or mixture to train on.
    task_feature_lengths: ``{'image': side in px, 'text': tokens}``.
    batch_size: global batch size.
    train_steps: steps of this stage.
    optimizer: learning rate, warmup, betas, decay.
    mask_ratio: fraction of image patches dropped in training (0 = none).
    mask_type: ``'random'``, ``'grid'`` or ``'block'``.
    init_from: where the parameters come from when the stage starts: ``None``
      = the previous stage (fresh initialisation for the first stage),
      ``'scratch'``, any model reference (``model_refs``: a run, stage or
      checkpoint directory, open_clip weights, an official CLIPA JAX
      ``.npz``), or a ``RestoreCheckpointConfig``.
    eval_image_size: resolution of evaluation (default: the training one).
    eval_text_length: prompt length at evaluation (default: the training one).
    eval_text_reduction: how prompts are cut to ``eval_text_length``.
    split: data split to train on.
    num_microbatches: encode each batch in this many pieces and accumulate the
      exact full-batch gradient (memory lever; the same loss and gradients).
  """
  name: str
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  batch_size: int
  train_steps: int
  optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig()
  mask_ratio: float = 0.0
  mask_type: str = "random"
  init_from: Union[None, str, checkpoints.RestoreCheckpointConfig] = None
  eval_image_size: Optional[int] = None
  eval_text_length: Optional[int] = None
  eval_text_reduction: str = "truncate"
  split: str = "train"
  num_microbatches: int = 1

  @property
  def image_size(self) -> int:
    return int(self.task_feature_lengths["image"])

  @property
  def text_length(self) -> int:
    return int(self.task_feature_lengths["text"])


# The evaluation configs live in evaluation/evaluators.py; these names keep gin
# files that say ``runner.ZeroShotEvalConfig`` working.
ZeroShotEvalConfig = evaluators_lib.ZeroShotEvalConfig
RetrievalEvalConfig = evaluators_lib.RetrievalEvalConfig


def has_training_state(model_dir: str) -> bool:
  """Whether ``model_dir`` holds checkpoints or finished stages of some run."""
  import glob  # pylint: disable=import-outside-toplevel
  return bool(glob.glob(os.path.join(model_dir, "*", f"{model_dir_lib.STEP_PREFIX}_*"))
              or glob.glob(os.path.join(model_dir, "*", model_dir_lib.STAGE_SUMMARY)))


def check_model_dir_writable(model_dir: str) -> None:
  """Fails early, in one line, when ``model_dir`` cannot be written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"MODEL_DIR {model_dir!r} is not writable ({e.strerror}); "
                     "choose another --gin.MODEL_DIR or fix its permissions.") from None


def _stage_row(stage: Stage, model_config, seconds: float,
               eval_results: Mapping[str, float]) -> Dict[str, Any]:
  # GFLOPs/sample of the towers, as CLIPA's tables count them (no batch-dependent loss term).
  per_example = flops.per_example_flops(model_config, stage.image_size, stage.text_length,
                                        stage.mask_ratio)
  top1_keys = [k for k in eval_results if k.endswith("/top1")]
  top1 = [eval_results[k] for k in top1_keys]
  # Per-factor top-1 of the first zero-shot eval (ZeroShotEvalConfig.factors).
  prefix = top1_keys[0][:-len("top1")] if top1_keys else None
  factors = {k[len(prefix):-len("_top1")]: v for k, v in eval_results.items()
             if prefix and k.startswith(prefix) and k.endswith("_top1")}
  # Few-shot probes (mean over seeds) of the first few-shot eval: {shots: top-1}.
  fewshot_keys = [k for k in eval_results if re.fullmatch(r"[^/]+/\d+shot_top1", k)]
  fewshot_prefix = fewshot_keys[0].split("/")[0] if fewshot_keys else None
  fewshot = {int(k.split("/")[1][:-len("shot_top1")]): eval_results[k] for k in fewshot_keys
             if k.split("/")[0] == fewshot_prefix}
  return {
      "stage": stage.name,
      "image_tokens": flops.image_tokens(stage.image_size, model_config.image.patch_size,
                                         stage.mask_ratio),
      "text_tokens": stage.text_length,
      "gflops_per_sample": per_example["forward"] / 1e9,
      "train_gflops_per_sample": per_example["train"] / 1e9,
      "examples_seen": stage.train_steps * stage.batch_size,
      "seconds": seconds,
      "zeroshot_top1": top1[0] if top1 else None,
      "zeroshot_factor_top1": factors,
      "fewshot_top1": fewshot,
      "eval": dict(eval_results),
  }


def train_stage(stage: Stage, previous_dir: Optional[str], *, stage_dir: str, model_config,
                partitioner: partitioning.PjitPartitioner,
                checkpoint_config: checkpoints.SaveCheckpointConfig,
                evaluators: Sequence[Any], eval_period: int, log_every: int,
                random_seed: int, peak_flops_per_device: Optional[float] = None,
                nonfinite_policy: str = "stop") -> Dict[str, Any]:
  """Trains (or resumes) one stage; returns its summary row."""
  from clipa_t5x.data import dataset as dataset_lib  # TF: imported when training starts
  from clipa_t5x.data import bad_records
  from clipa_t5x.data import iterator_state
  from clipa_t5x.data import mixtures

  start_time = time.time()
  model = clip_lib.ClipaModel(model_config)
  tx, lr_fn = optimizers.make_optimizer(stage.optimizer, stage.batch_size, stage.train_steps)
  abstract, logical_specs, shardings = train_state_lib.abstract_train_state(
      model, tx, stage.image_size, stage.text_length, partitioner)
  checkpoints.check_free_space(stage_dir, abstract)
  checkpointer = checkpoints.Checkpointer(stage_dir, checkpoint_config)
  if jax.process_index() == 0:
    # Makes the stage directory self-describing (inference, export, eval).
    config_io.write_model_config(stage_dir, model_config, stage.image_size, stage.text_length,
                                 stage=stage.name)
  rng = jax.random.key(random_seed)
  init_rng, step_rng = jax.random.split(rng)

  meta: Dict[str, Any] = {}
  restored = checkpointer.restore_latest_good(abstract)
  if restored is not None:
    state, meta = restored
    logging.info("stage %s: resuming from step %d", stage.name, meta["step"])
    print(f"[{stage.name}] resuming from {stage_dir} step {meta['step']}", flush=True)
  else:
    state = train_state_lib.create_train_state(model, tx, init_rng, stage.image_size,
                                               stage.text_length, partitioner, shardings)
    restore = stage.init_from
    if restore is None and previous_dir is not None:
      restore = checkpoints.RestoreCheckpointConfig(path=previous_dir, mode="latest")
    if isinstance(restore, str):
      restore = None if restore == "scratch" else checkpoints.RestoreCheckpointConfig(restore)
    if restore is not None:
      params = model_refs.restore_params(restore, abstract.params, state.params, model_config)
      state = state.replace(params=params)
      print(f"[{stage.name}] initialised from {restore.path}", flush=True)
  start_step = int(meta.get("step", 0))

  layout = partitioner.get_data_layout(stage.batch_size)
  # The data position is saved with every checkpoint, so a resumed stage
  # continues the exact stream. Checkpoints written without one (older runs)
  # resume with the data order reseeded by the step instead of replaying it.
  exact_resume = start_step == 0 or iterator_state.has_state(stage_dir, start_step)
  data_cfg = dataset_lib.DatasetConfig(
      mixture_or_task_name=stage.mixture_or_task_name,
      task_feature_lengths=dict(stage.task_feature_lengths), split=stage.split,
      batch_size=stage.batch_size, shuffle=True,
      seed=random_seed if exact_resume else random_seed + 1000003 * start_step)
  batches = iterator_state.CheckpointableBatches(
      dataset_lib.get_dataset(data_cfg, layout.shard_id, layout.num_shards))
  if start_step and exact_resume:
    batches.restore(stage_dir, start_step)
  elif start_step:
    print(f"[{stage.name}] no saved data position at step {start_step}: the data order is "
          "reseeded instead of continued", flush=True)

  # The MFU counts the contrastive logits of this batch too.
  per_example = flops.per_example_flops(model_config, stage.image_size, stage.text_length,
                                        stage.mask_ratio, stage.batch_size)
  trainer = trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, stage.batch_size,
                                flops_per_example=per_example["train"],
                                peak_flops_per_device=peak_flops_per_device,
                                nonfinite_policy=nonfinite_policy,
                                num_microbatches=stage.num_microbatches,
                                mask_ratio=stage.mask_ratio, mask_type=stage.mask_type)
  logger = metrics_logging.MetricsLogger(
      os.path.join(stage_dir, model_dir_lib.TRAIN_EVENTS),
      os.path.join(stage_dir, model_dir_lib.TRAIN_METRICS))
  eval_logger = metrics_logging.MetricsLogger(
      os.path.join(stage_dir, model_dir_lib.EVAL_EVENTS),
      os.path.join(stage_dir, model_dir_lib.EVAL_METRICS))
  eval_size = stage.eval_image_size or stage.image_size
  eval_length = stage.eval_text_length or stage.text_length
  built_evaluators = evaluators_lib.build_evaluators(evaluators, eval_size, eval_length,
                                       stage.eval_text_reduction)
  encoders = evaluators_lib.Encoders(model, partitioner, shardings.params)

  def save(step, state):
    if checkpointer.has_step(step):
      return
    batches.save(stage_dir, step)  # first: a complete checkpoint implies its data position
    checkpointer.save(state, step, {"stage": stage.name,
                                    "examples_seen": step * stage.batch_size})
    iterator_state.remove_except(stage_dir, checkpointer.all_steps())

  def on_step_end(step, state):
    if checkpointer.should_save(step) or preemption.requested():
      save(step, state)
    if preemption.requested():
      logger.close()
      eval_logger.close()
      checkpointer.close()
      raise preemption.Preempted(stage.name, step)
    if eval_period and step % eval_period == 0 and step < stage.train_steps and built_evaluators:
      eval_logger.write(step, evaluators_lib.run_evaluators(built_evaluators, encoders,
                                                            state.params))

  remaining = stage.train_steps - start_step
  if remaining > 0:
    try:
      first_batch = next(batches)
    except StopIteration:
      raise ValueError(f"stage {stage.name!r}: task {stage.mixture_or_task_name!r} split "
                       f"{stage.split!r} gave no batch; check the data files.") from None
    seconds = trainer.compile(state, first_batch, step_rng)
    print(f"[{stage.name}] compiled the train step in {seconds:.1f}s", flush=True)
    model_info.write_model_info(os.path.join(stage_dir, model_dir_lib.MODEL_INFO), abstract,
                                logical_specs, shardings, trainer.activation_bytes(),
                                data=mixtures.format_data_record(
                                    mixtures.data_record(stage.mixture_or_task_name)))
    batches_with_first = itertools.chain([first_batch], batches)
    progress = metrics_logging.ProgressLine(stage.name, start_step, stage.train_steps)
    # Records skipped by the input pipeline (corrupt images, empty captions, ...)
    # since this process started, logged as bad_records/<kind>.
    state = trainer.train(
        state, batches_with_first, step_rng, remaining, logger, progress, log_every=log_every,
        on_step_end=on_step_end,
        host_metrics=lambda: {f"bad_records/{k}": v for k, v in bad_records.snapshot().items()})
  final_step = int(state.step)
  if final_step < stage.train_steps:
    raise RuntimeError(
        f"stage {stage.name!r}: the data ran out at step {final_step} of {stage.train_steps}; "
        "use a repeating dataset (num_epochs=None) or fewer train_steps.")
  save(final_step, state)

  results = (evaluators_lib.run_evaluators(built_evaluators, encoders, state.params)
             if built_evaluators else {})
  if results:
    eval_logger.write(final_step, results)
  logger.close()
  eval_logger.close()
  checkpointer.close()
  row = _stage_row(stage, model_config, time.time() - start_time, results)
  # Sampling rates and examples seen per source (counted per batch on the host).
  row["data"] = mixtures.data_record(stage.mixture_or_task_name,
                                     mixtures.global_counts(batches.host_values.get(mixtures.COUNTS)),
                                     final_step * stage.batch_size, stage.split)
  print(f"[{stage.name}] " + mixtures.format_data_record(row["data"]), end="", flush=True)
  model_info.append_model_info(os.path.join(stage_dir, model_dir_lib.MODEL_INFO),
                               "At the end of the stage:\n" + mixtures.format_data_record(row["data"]))
  row["bad_records"] = bad_records.snapshot()
  skipped = sum(row["bad_records"].values())
  if skipped:
    print(f"[{stage.name}] the input pipeline skipped {skipped} bad records so far: "
          + ", ".join(f"{k} {v}" for k, v in row["bad_records"].items() if v), flush=True)
  if jax.process_index() == 0:
    paths.write_json_atomic(os.path.join(stage_dir, model_dir_lib.STAGE_SUMMARY), row)
  return row


def format_summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """The end-of-run table: one row per stage."""
  factors = list(dict.fromkeys(f for row in rows for f in row.get("zeroshot_factor_top1") or {}))
  # JSON turns the shot counts into strings: compare them as ints.
  shots = sorted({int(k) for row in rows for k in row.get("fewshot_top1") or {}})
  header = ("stage", "image tokens", "text tokens", "GFLOPs/sample", "seconds",
            "zero-shot top-1") + tuple(f"{f} top-1" for f in factors) + tuple(
                f"{k}-shot top-1" for k in shots)
  pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
  lines = [header]
  for row in rows:
    own = row.get("zeroshot_factor_top1") or {}
    probes = {int(k): v for k, v in (row.get("fewshot_top1") or {}).items()}
    lines.append((row["stage"], str(row["image_tokens"]), str(row["text_tokens"]),
                  f"{row['gflops_per_sample']:.4f}", f"{row['seconds']:.1f}",
                  pct(row.get("zeroshot_top1"))) + tuple(pct(own.get(f)) for f in factors)
                 + tuple(pct(probes.get(k)) for k in shots))
  return text_table.format_table(lines)


def _run_or_skip_stage(stage: Stage, previous_dir: Optional[str], rows: List[Dict[str, Any]],
                       *, model_dir: str, **train_kwargs) -> str:
  """Trains ``stage`` (or loads its row if it finished before); returns its directory."""
  stage_dir = os.path.join(model_dir, stage.name)
  done_path = os.path.join(stage_dir, model_dir_lib.STAGE_SUMMARY)
  if os.path.exists(done_path):
    with open(done_path) as f:
      rows.append(json.load(f))
    print(f"[{stage.name}] already finished; skipping (delete {done_path} to redo it)",
          flush=True)
  else:
    rows.append(train_stage(stage, previous_dir, stage_dir=stage_dir, **train_kwargs))
  return stage_dir


def run(*,
        model_dir: str,
        stages: Sequence[Stage],
        model_config: Optional[model_configs.ClipaConfig] = None,
        partitioner: Optional[partitioning.PjitPartitioner] = None,
        checkpoint_config: checkpoints.SaveCheckpointConfig = checkpoints.SaveCheckpointConfig(),
        evaluators: Sequence[Any] = (),
        eval_period: int = 0,
        log_every: int = 10,
        random_seed: int = 0,
        peak_flops_per_device: Optional[float] = None,
        nonfinite_policy: str = "stop",
        after_run: Sequence[Callable[[str, List[Dict[str, Any]]], Any]] = (),
        check_only: bool = False,
        ) -> List[Dict[str, Any]]:
  """Trains every stage in order; returns (and writes) the summary rows.

  Args:
    model_dir: t5x's ``MODEL_DIR``; each stage trains in a subdirectory.
    stages: the recipe.
    model_config: the model (``configs.get_config('H/14')``); required.
    partitioner: defaults to a data-parallel ``PjitPartitioner``.
    checkpoint_config: save period and how many checkpoints to keep.
    evaluators: zero-shot evaluations run at the end of each stage and every
      ``eval_period`` steps (0 = only at the end).
    log_every: steps between metric logs.
    random_seed: seed of initialisation, masking and data order.
    peak_flops_per_device: peak FLOP/s of one accelerator, for the ``mfu``
      metric; None detects it from the device kind (``device_profiles``), and
      an unknown kind (CPU) logs achieved FLOP/s without MFU.
    nonfinite_policy: after a step with a NaN/Inf loss or gradient (which never
      changes the state): ``'stop'`` (the last checkpoint is the last good
      state) or ``'skip'`` (go on); ``nonfinite_steps`` is logged either way.
    after_run: callables ``(model_dir, rows)`` run on every process after
      ``summary.json`` is written, before the table is printed (not after a
      preemption), e.g.
      ``[@demo_picture.write_zeroshot_examples]`` for the demo's picture.
    check_only: run every preflight check of every stage (``preflight.check_run``),
      print the memory table and return ``[]`` without training
      (``python -m clipa_t5x.train --check``).
  """
  if model_config is None:
    raise ValueError("run: model_config is required; include a gin/models/*.gin file.")
  if not stages:
    raise ValueError("run: no stages given; set run.stages in the run's gin file.")
  names = [s.name for s in stages]
  if len(set(names)) != len(names):
    raise ValueError(f"run: stage names must be unique, got {names}.")
  partitioner = partitioner or partitioning.PjitPartitioner()
  if "://" not in model_dir:
    model_dir = os.path.abspath(model_dir)  # Orbax refuses relative checkpoint paths
  if not check_only:
    check_model_dir_writable(model_dir)
  # Every stage, before the first trains: settings, data, init_from, memory, sharding.
  reports = preflight.check_run(stages, model_config, partitioner, model_dir)
  if check_only:
    if jax.process_index() == 0:
      print(preflight.format_reports(reports, preflight.mesh_of(partitioner)), flush=True)
    return []

  rows: List[Dict[str, Any]] = []
  previous_dir = None
  with preemption.handle_signals():
    try:
      for stage in stages:
        previous_dir = _run_or_skip_stage(
            stage, previous_dir, rows, model_dir=model_dir, model_config=model_config,
            partitioner=partitioner, checkpoint_config=checkpoint_config,
            evaluators=evaluators, eval_period=eval_period, log_every=log_every,
            random_seed=random_seed, peak_flops_per_device=peak_flops_per_device,
            nonfinite_policy=nonfinite_policy)
    except preemption.Preempted as e:
      print(f"[{e.stage}] {e}", flush=True)
      return rows

  if jax.process_index() == 0:
    paths.write_json_atomic(os.path.join(model_dir, model_dir_lib.SUMMARY), rows)
  for hook in after_run:
    hook(model_dir, rows)
  if jax.process_index() == 0:  # the table last, where the user looks
    print("\n" + format_summary_table(rows), flush=True)
  return rows
