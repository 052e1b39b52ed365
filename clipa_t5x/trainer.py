"""The partitioned train step and the loop that feeds it.

``make_train_step`` is a pure function of (state, batch, rng); ``Trainer``
jits it once with the state's shardings pinned on both sides and the state
donated, then runs it over a host iterator, logging every ``log_every`` steps.
Metrics are fetched from the device only at log steps, so the host never
waits on the accelerator in between.
"""

import logging
import time
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clipa_t5x import device_profiles
from clipa_t5x import grad_accumulation
from clipa_t5x import metrics_logging
from clipa_t5x import partitioning
from clipa_t5x.models import vit
from clipa_t5x.train_state import TrainState

Batch = Mapping[str, np.ndarray]
NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteError(ValueError):
  """Raised under ``nonfinite_policy='stop'`` when a step's loss or gradients were NaN/Inf."""


def make_train_step(model, tx: optax.GradientTransformation,
                    learning_rate_fn: Callable[[jax.Array], jax.Array],
                    num_microbatches: int = 1, mask_ratio: float = 0.0,
                    mask_type: str = "random"
                    ) -> Callable[[TrainState, Batch, jax.Array], Tuple[TrainState, Dict]]:
  """Returns ``step(state, batch, rng) -> (new_state, metrics)``.

  Images are patch-masked by ``mask_ratio`` / ``mask_type`` (the stage's
  training setting; 0 = none). The step's randomness (patch masking) is
  ``fold_in(rng, state.step)``, so a resumed run draws exactly the masks an
  uninterrupted one would. With ``num_microbatches > 1`` the batch is encoded
  in pieces and the gradient of the full-batch contrastive loss is
  accumulated exactly (``grad_accumulation``).
  """
  vit.check_masking(mask_ratio, mask_type)
  mask = {"mask_ratio": mask_ratio, "mask_type": mask_type}

  def train_step(state: TrainState, batch: Batch, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    if num_microbatches > 1:
      (_, metrics), grads = grad_accumulation.microbatched_loss_and_grads(
          model, state.params, batch, step_rng, num_microbatches, **mask)
    else:
      grad_fn = jax.value_and_grad(model.loss_fn, has_aux=True)
      (_, metrics), grads = grad_fn(state.params, batch, step_rng, **mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.global_norm(grads)
    # A NaN/Inf loss or gradient never reaches the state: the step is a no-op
    # (the step counter and the data still move on) and is counted.
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    keep_if_finite = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep_if_finite, params, state.params)
    opt_state = jax.tree.map(keep_if_finite, opt_state, state.opt_state)
    metrics["nonfinite"] = 1 - finite.astype(jnp.int32)
    metrics["param_norm"] = optax.global_norm(params)
    metrics["learning_rate"] = learning_rate_fn(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step


class Trainer:
  """Runs the jitted, partitioned train step and reports its metrics.

  Args:
    model: a ``ClipaModel`` (``loss_fn(params, batch, rng, mask_ratio, mask_type)``).
    tx: the optax transformation.
    learning_rate_fn: step -> learning rate (logged).
    partitioner: the ``PjitPartitioner``.
    state_shardings: ``TrainState`` of ``NamedSharding`` (from ``abstract_train_state``).
    global_batch_size: examples per step over all hosts.
    flops_per_example: training FLOPs of one example (forward + backward), for
      achieved FLOP/s in the logs; 0 to skip.
    peak_flops_per_device: peak FLOP/s of one device, for ``mfu`` in the logs
      (achieved FLOP/s / (peak x device count)). None looks the device up by
      ``jax.devices()[0].device_kind`` in ``device_profiles``; an unknown kind
      (e.g. CPU) logs achieved FLOP/s only.
    nonfinite_policy: what to do after a step whose loss or gradients were
      NaN/Inf (such a step never changes the state): ``'stop'`` raises
      ``NonFiniteError`` at the next log step (the last checkpoint is the last
      good state), ``'skip'`` goes on. Either way ``nonfinite_steps`` (the
      running count) is logged.
    num_microbatches: encode the batch in this many pieces, accumulating the
      exact full-batch gradient (less activation memory, same result).
    mask_ratio: fraction of image patches dropped in training (0 = none).
    mask_type: 'random', 'grid' or 'block' (``vit.check_masking``).
  """

  def __init__(self, model, tx, learning_rate_fn, partitioner: partitioning.PjitPartitioner,
               state_shardings: TrainState, global_batch_size: int,
               flops_per_example: float = 0.0,
               peak_flops_per_device: Optional[float] = None,
               nonfinite_policy: str = "stop", num_microbatches: int = 1,
               mask_ratio: float = 0.0, mask_type: str = "random"):
    if nonfinite_policy not in NONFINITE_POLICIES:
      raise ValueError(f"nonfinite_policy must be one of {NONFINITE_POLICIES}, got "
                       f"{nonfinite_policy!r}.")
    self._nonfinite_policy = nonfinite_policy
    self._nonfinite_total = None  # device-side running count: no host sync per step
    self._partitioner = partitioner
    self._batch_size = global_batch_size
    self._flops_per_example = flops_per_example
    if peak_flops_per_device is None:
      peak_flops_per_device = device_profiles.peak_flops_for_device_kind(
          jax.devices()[0].device_kind)
    elif not peak_flops_per_device > 0:
      raise ValueError(f"peak_flops_per_device must be positive (FLOP/s of one device, "
                       f"e.g. 312e12 for an A100), got {peak_flops_per_device}.")
    # MFU compares against every device the step runs on, over all hosts.
    self._peak_flops = (peak_flops_per_device * jax.device_count()
                        if peak_flops_per_device else None)
    if num_microbatches < 1 or global_batch_size % (num_microbatches * partitioner.data_parallel_size):
      raise ValueError(
          f"batch size {global_batch_size} must divide into num_microbatches={num_microbatches} "
          f"pieces each divisible by the data-parallel size {partitioner.data_parallel_size}.")
    step_fn = make_train_step(model, tx, learning_rate_fn, num_microbatches, mask_ratio,
                              mask_type)
    self._compiled = None
    self._step = partitioner.partition(
        step_fn,
        in_axis_resources=(state_shardings, partitioner.data_sharding, partitioner.replicated),
        out_axis_resources=(state_shardings, partitioner.replicated),
        donate_argnums=(0,))

  def compile(self, state: TrainState, batch: Batch, rng: jax.Array) -> float:
    """Compiles the step ahead of time for ``batch``'s shapes; returns seconds taken.

    ``batch`` is a host-local batch (only shapes and dtypes are used). Later
    steps run the compiled executable, so shape drift fails loudly instead of
    silently recompiling.
    """
    start = time.time()
    local_rows = self._batch_size // jax.process_count()
    global_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((self._batch_size,) + tuple(x.shape[1:]), x.dtype,
                                       sharding=self._partitioner.data_sharding), batch)
    for name, x in batch.items():
      if x.shape[0] != local_rows:
        raise ValueError(f"host batch {name!r} has {x.shape[0]} rows, expected "
                         f"{local_rows} (global batch {self._batch_size} / "
                         f"{jax.process_count()} hosts).")
    self._compiled = self._step.lower(state, global_batch, rng).compile()
    return time.time() - start

  def activation_bytes(self) -> Optional[int]:
    """Per-device temporaries of the compiled step (XLA's estimate), if compiled."""
    if self._compiled is None:
      return None
    try:
      return int(self._compiled.memory_analysis().temp_size_in_bytes)
    except (AttributeError, NotImplementedError):  # not every backend reports it
      return None

  def memory_analysis(self):
    """XLA's compile-time memory analysis of the compiled step (None before ``compile``)."""
    return self._compiled.memory_analysis() if self._compiled is not None else None

  def compiled_text(self) -> Optional[str]:
    """The compiled step's optimised HLO (what the profiler's kernel names refer to)."""
    return self._compiled.as_text() if self._compiled is not None else None

  def step(self, state: TrainState, host_batch: Batch, rng: jax.Array):
    """One step on this host's slice of the batch."""
    return self.step_on_device(state, self._partitioner.shard_batch(host_batch), rng)

  def step_on_device(self, state: TrainState, global_batch: Batch, rng: jax.Array):
    """One step on a batch already sharded over the devices (``shard_batch``'s output)."""
    step_fn = self._compiled if self._compiled is not None else self._step
    return step_fn(state, global_batch, rng)

  def train(self, state: TrainState, batches: Iterator[Batch], rng: jax.Array,
            num_steps: int, logger: metrics_logging.MetricsLogger,
            progress: Optional[metrics_logging.ProgressLine] = None,
            log_every: int = 10,
            on_step_end: Optional[Callable[[int, TrainState], None]] = None,
            host_metrics: Optional[Callable[[], Mapping[str, float]]] = None) -> TrainState:
    """Runs up to ``num_steps`` steps (fewer if ``batches`` runs out).

    ``on_step_end(step, state)`` runs on every host after each step
    (checkpointing, evaluation) with the new step number and state.
    ``host_metrics()`` adds host-side values (e.g. bad-record counts) to each log. Returns the final state.
    """
    last_log_time = time.time()
    step = last_log_step = int(state.step)
    pending = None
    for _ in range(num_steps):
      try:
        host_batch = next(batches)
      except StopIteration:
        break
      state, metrics = self.step(state, host_batch, rng)
      self._nonfinite_total = (metrics["nonfinite"] if self._nonfinite_total is None
                               else self._nonfinite_total + metrics["nonfinite"])
      pending = metrics
      step += 1  # counted on the host: reading state.step would wait for the device
      if step % log_every == 0:
        self._log(step, pending, logger, progress, last_log_time, last_log_step, host_metrics)
        last_log_time, last_log_step, pending = time.time(), step, None
      if on_step_end is not None:
        on_step_end(step, state)
    if pending is not None:
      self._log(step, pending, logger, progress, last_log_time, last_log_step, host_metrics)
    return state

  def _log(self, step, metrics, logger, progress, since_time, since_step, host_metrics=None):
    values = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()
              if k != "nonfinite"}
    nonfinite = int(jax.device_get(self._nonfinite_total)) if self._nonfinite_total is not None else 0
    values["nonfinite_steps"] = nonfinite
    if host_metrics is not None:
      values.update(host_metrics())
    elapsed = max(time.time() - since_time, 1e-9)
    steps = max(step - since_step, 1)
    values["step_time"] = elapsed / steps
    values["samples_per_second"] = steps * self._batch_size / elapsed
    values["examples_seen"] = step * self._batch_size
    if self._flops_per_example:
      achieved = values["samples_per_second"] * self._flops_per_example
      values["achieved_tflops_per_second"] = achieved / 1e12
      if self._peak_flops:
        values["mfu"] = achieved / self._peak_flops
    logger.write(step, values)
    if progress is not None:
      progress.report(step, values["loss"], values["samples_per_second"])
    if nonfinite:
      message = (f"{nonfinite} step(s) up to step {step} had a NaN/Inf loss or gradient and "
                 "were skipped (the state was left unchanged)")
      if self._nonfinite_policy == "stop":
        raise NonFiniteError(
            f"{message}; stopping with the last good checkpoint kept. Lower the learning "
            "rate, or set nonfinite_policy='skip' to go on.")
      logging.warning(message)
