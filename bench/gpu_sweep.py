"""GPU step levers, each alone and combined, in one prepared run; and the largest batch per remat.

``bench/gpu_profile.py`` showed where a B/16 step's time goes on an H200 (half
of it not matrix work). This measures what each lever buys, on the real
``Trainer`` step (jitted, pinned shardings, donated state, bf16 compute):

* ``cudnn_ln``: ``--xla_gpu_enable_cudnn_layer_norm=true`` (XLA flag);
* ``gemm_fusion_1`` / ``_2`` / ``_3``: ``--xla_gpu_cudnn_gemm_fusion_level=N``;
* ``pallas_ln``: ``ClipaConfig.norm_impl='pallas'`` (fused residual-add +
  LayerNorm Pallas kernels, clipa_t5x/kernels/layer_norm.py);
* ``fused_gelu``: ``ClipaConfig.mlp_impl='fused_gelu'`` (GELU keeping only
  the bf16 pre-activation, one-pass backward);
* ``fused_adamw``: ``OptimizerConfig.fused=True`` (one AdamW pass over the
  flattened parameters instead of ~1,400 small kernels);

and, combined, the three code levers (``code``) and every lever that won
alone (``winners``, chosen while the sweep runs), on ``B/16 @ 224`` batch 256
and ``L/14 @ 224`` with 30% patch masking, batch 256.

XLA reads its flags once per process, so every flag set runs in its own
worker process; inside one, each (shape, lever) compiles its own step from the
same initial parameters (a cheap random fill, not the model's init, which
would cost a compile of its own) and records the losses of its first three
steps; the losses must match the baseline's to bf16 tolerance (``loss_ok``).
Jobs run in priority order within ``--budget_s`` (default 480 s = 8 min); what
does not fit is listed as skipped, with the command that runs it next.

At the end it prints the lever table and the lines to paste into
``clipa_t5x/xla_flags.py`` (``DEFAULT_FLAGS['gpu']`` and
``MODEL_DEFAULTS['gpu']``): the flag and model levers that won on every
measured shape, by more than ``--min_gain`` and with matching losses.

``--memory`` instead finds, for H/14 in CLIPA-v2's 70 px pre-training (8
tokens) and its 224 px fine-tune (32 tokens, 30% masking) and each remat
policy, the largest batch whose compiled step fits one 80 GB GPU (XLA's
compile-time memory analysis: two compiles give the per-sample slope, a third
checks the predicted batch), next to the preflight planner's estimate.

``--smoke`` runs everything on CPU with a tiny model (Pallas in interpret
mode); the test suite does this.

Usage::

  bash bench/gpu_sweep.sh [--budget_s 480] [--jobs b16_224:base,b16_224:pallas_ln]
      [--steps 5] [--json OUT] [--memory] [--smoke]
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _worker  # noqa: E402  (bench/_worker.py)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(1, REPO)  # the checkout itself, when clipa_t5x is not installed


@dataclasses.dataclass(frozen=True)
class Lever:
  """One change to the step: XLA flags, ClipaConfig fields, OptimizerConfig fields."""
  flags: Tuple[str, ...] = ()
  model: Tuple[Tuple[str, str], ...] = ()
  optimizer: Tuple[Tuple[str, Any], ...] = ()


LEVERS: Dict[str, Lever] = {
    "base": Lever(),
    "cudnn_ln": Lever(flags=("--xla_gpu_enable_cudnn_layer_norm=true",)),
    "gemm_fusion_1": Lever(flags=("--xla_gpu_cudnn_gemm_fusion_level=1",)),
    "gemm_fusion_2": Lever(flags=("--xla_gpu_cudnn_gemm_fusion_level=2",)),
    "gemm_fusion_3": Lever(flags=("--xla_gpu_cudnn_gemm_fusion_level=3",)),
    "pallas_ln": Lever(model=(("norm_impl", "pallas"),)),
    "fused_gelu": Lever(model=(("mlp_impl", "fused_gelu"),)),
    "fused_adamw": Lever(optimizer=(("fused", True),)),
}
CODE = ("pallas_ln", "fused_gelu", "fused_adamw")
# Levers that change the checkpoint layout are reported, never made a default.
NOT_DEFAULTABLE = ("fused_adamw",)


@dataclasses.dataclass(frozen=True)
class Shape:
  model: str
  image_size: int
  text_length: int
  mask_ratio: float
  batch: int

  @property
  def label(self) -> str:
    mask = f", mask {self.mask_ratio:g}" if self.mask_ratio else ""
    return f"{self.model} @ {self.image_size}, {self.text_length} tok{mask}, batch {self.batch}"


SHAPES = {"b16_224": Shape("B/16", 224, 32, 0.0, 256),
          "l14_224_m30": Shape("L/14", 224, 32, 0.3, 256)}
SMOKE_SHAPES = {"b16_224": Shape("Ti/8", 32, 8, 0.0, 8),
                "l14_224_m30": Shape("Ti/8", 32, 8, 0.3, 8)}

# Priority order: the cheap-to-group code levers on B/16 (one process), the
# L/14 baseline and code combination, each flag alone, then (adaptive) the
# winners combined, then the rest on L/14. 'code' stands for CODE together.
PLAN: Tuple[Tuple[str, str], ...] = (
    ("b16_224", "base"), ("b16_224", "pallas_ln"), ("b16_224", "fused_gelu"),
    ("b16_224", "fused_adamw"), ("b16_224", "code"),
    ("l14_224_m30", "base"), ("l14_224_m30", "code"),
    ("b16_224", "cudnn_ln"), ("l14_224_m30", "cudnn_ln"),
    ("b16_224", "gemm_fusion_1"), ("b16_224", "gemm_fusion_2"), ("b16_224", "gemm_fusion_3"),
    ("b16_224", "winners"), ("l14_224_m30", "winners"),
    ("l14_224_m30", "pallas_ln"), ("l14_224_m30", "fused_gelu"),
    ("l14_224_m30", "fused_adamw"), ("l14_224_m30", "gemm_fusion_1"),
    ("l14_224_m30", "gemm_fusion_2"), ("l14_224_m30", "gemm_fusion_3"),
)
SMOKE_PLAN = (("b16_224", "base"), ("b16_224", "pallas_ln"), ("b16_224", "fused_gelu"),
              ("b16_224", "fused_adamw"), ("b16_224", "code"), ("l14_224_m30", "base"),
              ("l14_224_m30", "code"), ("b16_224", "cudnn_ln"), ("b16_224", "winners"))

# Seconds: a worker's start (imports, backend, batch) and a job's compile
# before one has been measured; a job is not started with less than its
# estimate left.
START_S = {"gpu": 25.0, "smoke": 8.0}
FIRST_COMPILE_S = {"gpu": 45.0, "smoke": 10.0}
LOSS_ATOL, LOSS_RTOL = 0.02, 0.01    # bf16 step-to-step agreement of the first losses
LOSS_STEPS = 3
SMOKE_STEPS = 2
MEASURE_LR = 1e-3  # large enough that the 2nd and 3rd losses see the gradients


def lever_names(name: str) -> Tuple[str, ...]:
  """'code' -> CODE; 'a+b' -> ('a', 'b'); a single lever -> (name,)."""
  if name == "code":
    return CODE
  parts = tuple(p for p in name.split("+") if p)
  unknown = [p for p in parts if p not in LEVERS]
  if unknown:
    raise ValueError(f"unknown lever(s) {unknown}; choose from {sorted(LEVERS)} or 'code', "
                     "joined with '+'.")
  return parts


def combine(names: Sequence[str]) -> Lever:
  """The levers applied together (a later gemm fusion level replaces an earlier one)."""
  flags: Dict[str, str] = {}
  model: Dict[str, str] = {}
  optimizer: Dict[str, Any] = {}
  for n in names:
    lever = LEVERS[n]
    for f in lever.flags:
      flags[f.split("=")[0]] = f
    model.update(lever.model)
    optimizer.update(lever.optimizer)
  return Lever(tuple(flags.values()), tuple(sorted(model.items())),
               tuple(sorted(optimizer.items())))


# --------------------------------------------------------------- worker ---
def _log(text: str) -> None:
  print(f"[worker +{time.perf_counter() - _START:6.1f} s] {text}", file=sys.stderr, flush=True)


_START = time.perf_counter()


def quick_state(tx, abstract, shardings, seed: int = 0):
  """A train state filled cheaply: ones/zeros for LayerNorm, N(0, 0.02) for weights.

  The model's own init compiles a forward pass; this compiles a random fill.
  Every lever of a shape starts from the same values (same seed, same shapes).
  """
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from clipa_t5x import train_state
  from clipa_t5x.losses import INIT_LOG_TEMPERATURE

  def fill(key):
    paths, treedef = jax.tree_util.tree_flatten_with_path(abstract.params)
    keys = jax.random.split(key, len(paths))
    leaves = []
    for (path, leaf), k in zip(paths, keys):
      name = str(getattr(path[-1], "key", path[-1]))
      if name == "scale":
        leaves.append(jnp.ones(leaf.shape, leaf.dtype))
      elif name in ("bias", "cls"):
        leaves.append(jnp.zeros(leaf.shape, leaf.dtype))
      elif name == "log_temperature":
        leaves.append(jnp.full(leaf.shape, INIT_LOG_TEMPERATURE, leaf.dtype))
      else:
        leaves.append(0.02 * jax.random.normal(k, leaf.shape, leaf.dtype))
    params = jax.tree.unflatten(treedef, leaves)
    return train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=tx.init(params))

  return jax.jit(fill, out_shardings=shardings)(jax.random.key(seed))


@dataclasses.dataclass
class Prepared:
  """One (shape, lever) job: its model, optimizer and (once compiled) Trainer."""
  shape_name: str
  job: str
  shape: Shape
  lever: Lever
  tx: Any = None
  abstract: Any = None
  shardings: Any = None
  trainer: Any = None
  flops_per_sample: float = 0.0
  compile_s: float = 0.0


def prepare(shape_name: str, shape: Shape, job: str, partitioner) -> Prepared:
  """Builds one job's model, optimizer, abstract state and (uncompiled) Trainer."""
  # pylint: disable=import-outside-toplevel
  from clipa_t5x import flops, optimizers, train_state, trainer
  from clipa_t5x.models import clip, configs
  lever = combine(lever_names(job))
  config = configs.get_config(shape.model, dtype="bfloat16", **dict(lever.model))
  model = clip.ClipaModel(config)
  opt = dataclasses.replace(optimizers.OptimizerConfig(base_learning_rate=MEASURE_LR),
                            **dict(lever.optimizer))
  tx, lr_fn = optimizers.make_optimizer(opt, shape.batch, total_steps=1_000_000)
  abstract, _, shardings = train_state.abstract_train_state(
      model, tx, shape.image_size, shape.text_length, partitioner)
  per_sample = flops.per_example_flops(config, shape.image_size, shape.text_length,
                                       shape.mask_ratio)["train"]
  step = trainer.Trainer(model, tx, lr_fn, partitioner, shardings, shape.batch,
                         flops_per_example=per_sample, mask_ratio=shape.mask_ratio)
  return Prepared(shape_name, job, shape, lever, tx, abstract, shardings, step, per_sample)


def measure(job: Prepared, steps: int, partitioner, batch_np) -> Dict[str, Any]:
  """Runs a compiled job: the losses of its first steps, then ``steps`` timed steps."""
  import jax  # pylint: disable=import-outside-toplevel
  state = quick_state(job.tx, job.abstract, job.shardings)
  rng = jax.random.key(1)
  device_batch = partitioner.shard_batch(batch_np)
  losses = []
  for _ in range(LOSS_STEPS):  # also the warm-up
    state, metrics = job.trainer.step_on_device(state, device_batch, rng)
    losses.append(float(metrics["loss"]))
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = job.trainer.step_on_device(state, device_batch, rng)
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - start) / steps
  del state
  return {"compile_s": job.compile_s, "ms_per_step": 1e3 * seconds,
          "samples_per_s": job.shape.batch / seconds,
          "tflops": job.flops_per_sample * job.shape.batch / seconds / 1e12,
          "losses": losses, "steps": steps, "lever": dataclasses.asdict(job.lever)}


def worker_main(spec: Dict[str, Any]) -> None:
  """Runs one process's jobs (same XLA flags); prints one SWEEP_RESULT line per job.

  The jobs' steps compile concurrently (``spec['parallel']`` threads: XLA
  compiles outside the GIL, and a GPU machine has the cores), then run one
  after the other, so timings never overlap. Jobs whose compile would not end
  before the deadline are reported as skipped.
  """
  # pylint: disable=import-outside-toplevel
  from concurrent import futures
  from clipa_t5x import xla_flags
  xla_flags.apply_default_flags(log=_log)
  import jax
  import step_throughput
  from clipa_t5x import device_profiles, partitioning
  shapes = SMOKE_SHAPES if spec["smoke"] else SHAPES
  devices = jax.local_devices()[:1]
  kind = devices[0].device_kind
  peak = device_profiles.peak_flops_for_device_kind(kind)
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=devices)
  _log(f"jax {jax.__version__} on {kind}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  guess = dict(spec.get("compile_s", {}))
  parallel = max(1, int(spec.get("parallel", 1)))

  def emit(shape_name, job, **fields):
    record = {"shape": shape_name, "label": shapes[shape_name].label, "job": job,
              "device": kind, "jax": jax.__version__, **fields}
    print("SWEEP_RESULT " + json.dumps(record), flush=True)

  # What fits: compiles run `parallel` at a time; each costs about its shape's guess.
  todo, waves = [], 0.0
  for shape_name, job in spec["jobs"]:
    cost = guess.get(shape_name, spec["first_compile_s"]) * 1.2 + 5
    left = spec["deadline"] - time.time()
    if waves + cost / parallel + cost > left:
      emit(shape_name, job, error=f"skipped: {left:.0f} s left, compiling it needs ~{cost:.0f} s")
      continue
    waves += cost / parallel
    todo.append((shape_name, job))
  prepared: List[Prepared] = []
  for shape_name, job in todo:
    try:
      prepared.append(prepare(shape_name, shapes[shape_name], job, partitioner))
    except Exception as e:  # pylint: disable=broad-except  (reported in its row)
      emit(shape_name, job, error=f"{type(e).__name__}: {e}"[:600])
  batches = {name: step_throughput.random_batch(
      shapes[name].batch, step_throughput.Setting(shapes[name].image_size,
                                                  shapes[name].text_length), 32000)
             for name in {p.shape_name for p in prepared}}

  def compile_one(p: Prepared) -> Prepared:
    p.compile_s = p.trainer.compile(p.abstract, batches[p.shape_name], jax.random.key(1))
    return p

  _log(f"compiling {len(prepared)} steps, {parallel} at a time")
  with futures.ThreadPoolExecutor(parallel) as pool:
    done = {pool.submit(compile_one, p): p for p in prepared}
    compiled = []
    for fut in futures.as_completed(done):
      p = done[fut]
      try:
        compiled.append(fut.result())
        _log(f"{p.shape.label} / {p.job}: compiled in {p.compile_s:.1f} s")
      except Exception as e:  # pylint: disable=broad-except
        emit(p.shape_name, p.job, error=f"{type(e).__name__}: {e}"[:600])
  order = {id(p): i for i, p in enumerate(prepared)}
  for p in sorted(compiled, key=lambda p: order[id(p)]):
    try:
      result = measure(p, spec["steps"], partitioner, batches[p.shape_name])
      result["mfu"] = result["tflops"] * 1e12 / peak if peak else None
      _log(f"{p.shape.label} / {p.job}: {result['ms_per_step']:.2f} ms/step")
      emit(p.shape_name, p.job, **result)
    except Exception as e:  # pylint: disable=broad-except  (an OOM, a kernel that fails)
      emit(p.shape_name, p.job, error=f"{type(e).__name__}: {e}"[:600])
    p.trainer = None  # frees the executable before the next job runs


# -------------------------------------------------------------- memory ---
MEMORY_STAGES = {"h14_70_pre": Shape("H/14", 70, 8, 0.0, 0),
                 "h14_224_ft_m30": Shape("H/14", 224, 32, 0.3, 0)}
SMOKE_MEMORY_STAGES = {"h14_70_pre": Shape("Ti/8", 32, 8, 0.0, 0),
                       "h14_224_ft_m30": Shape("Ti/8", 64, 8, 0.3, 0)}
CAPACITY_GIB = 75.0  # one 80 GB GPU (79.6 GiB) with XLA_PYTHON_CLIENT_MEM_FRACTION=.95


def planner_estimate(config, shape: Shape, batch: int) -> Optional[int]:
  """Per-device bytes of a step by the preflight planner (``clipa_t5x.memory``), or None.

  The one place the sweep calls the planner: point it at the planner's API.
  """
  try:
    from clipa_t5x import memory  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  try:
    estimate = memory.estimate(config, image_size=shape.image_size,
                               text_length=shape.text_length, batch_size=batch,
                               mesh=memory.mesh_shape(1), mask_ratio=shape.mask_ratio)
    return int(estimate.total)
  except (AttributeError, TypeError):  # an API other than the one this adapter expects
    return None


def largest_fitting(fits, low: int = 1, high: int = 1 << 16) -> int:
  """The largest batch in [low, high] for which ``fits(batch)`` (monotone); 0 if none."""
  if not fits(low):
    return 0
  while low < high:
    mid = (low + high + 1) // 2
    low, high = (mid, high) if fits(mid) else (low, mid - 1)
  return low


def find_max_batch(bytes_at, capacity: int, first: int, max_bisect: int = 3,
                   deadline: Optional[float] = None) -> Tuple[int, Dict[int, int], float, float]:
  """The largest batch whose ``bytes_at(batch)`` fits ``capacity``, in few evaluations.

  ``bytes_at`` (a compile each) is taken at ``first`` and ``2 * first``; the
  straight line through them predicts the batch (rounded down to a multiple of
  8 from 64 up), which is checked, then narrowed between the largest batch
  known to fit and the smallest known not to (the line between them and
  their midpoint in turn), ``max_bisect`` times at most.

  Returns:
    ``(batch, {batch: bytes} measured, bytes per sample, fixed bytes)``;
    ``batch`` is the largest measured one that fits (the smallest measured
    when none does).
  """
  sizes = {b: bytes_at(b) for b in (first, 2 * first)}
  slope = (sizes[2 * first] - sizes[first]) / first
  fixed = sizes[first] - slope * first
  predicted = max(1, int((capacity - fixed) // max(slope, 1.0)))
  step = 8 if predicted >= 64 else 1
  guess = max(step, predicted // step * step)
  if guess not in sizes:
    sizes[guess] = bytes_at(guess)
  for i in range(max_bisect):
    fitting = [b for b, v in sizes.items() if v <= capacity]
    failing = [b for b, v in sizes.items() if v > capacity]
    if not failing or not fitting or min(failing) - max(fitting) <= step:
      break
    lo, hi = max(fitting), min(failing)
    # Where the line between the two brackets meets the capacity (the curve is
    # nearly straight), alternating with the midpoint: on a convex curve the
    # line alone keeps landing just above the lower bracket.
    mid = lo + int((capacity - sizes[lo]) * (hi - lo) / max(sizes[hi] - sizes[lo], 1))
    mid = mid // step * step
    if i % 2 or mid <= lo or mid >= hi:
      mid = (lo + hi) // 2 // step * step
    if mid in sizes or mid <= lo or (deadline is not None and time.time() > deadline):
      break
    sizes[mid] = bytes_at(mid)
  fitting = [b for b, v in sizes.items() if v <= capacity]
  return (max(fitting) if fitting else min(sizes)), sizes, slope, fixed


def compiled_bytes(config, shape: Shape, batch: int, partitioner) -> int:
  """Peak per-device bytes of the compiled train step by XLA's memory analysis."""
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  from clipa_t5x import optimizers, train_state, trainer
  from clipa_t5x.models import clip
  model = clip.ClipaModel(config)
  tx, lr_fn = optimizers.make_optimizer(optimizers.OptimizerConfig(), batch, 1_000_000)
  abstract, _, shardings = train_state.abstract_train_state(
      model, tx, shape.image_size, shape.text_length, partitioner)
  step = trainer.Trainer(model, tx, lr_fn, partitioner, shardings, batch,
                         mask_ratio=shape.mask_ratio)
  s = shape.image_size
  host = {"image": jax.ShapeDtypeStruct((batch, s, s, 3), np.uint8),
          "text": jax.ShapeDtypeStruct((batch, shape.text_length), np.int32)}
  step.compile(abstract, host, jax.random.key(0))
  m = step.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes + getattr(m, "generated_code_size_in_bytes", 0))


def memory_main(spec: Dict[str, Any]) -> None:
  """Largest batch per (stage, remat policy) by compile-time memory; prints MEMORY_RESULT lines."""
  # pylint: disable=import-outside-toplevel
  from clipa_t5x import xla_flags
  xla_flags.apply_default_flags(log=_log)
  import jax
  from clipa_t5x import partitioning
  from clipa_t5x.models import configs
  stages = SMOKE_MEMORY_STAGES if spec["smoke"] else MEMORY_STAGES
  capacity = int(spec["capacity_gib"] * 2**30)
  devices = jax.local_devices()[:1]
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=devices)
  first = spec["first_batch"]

  def one_case(stage_name: str, remat: str) -> Dict[str, Any]:
    shape = stages[stage_name]
    record = {"stage": stage_name, "label": shape.label.split(", batch")[0],
              "remat_policy": remat, "capacity_bytes": capacity,
              "device": devices[0].device_kind, "jax": jax.__version__}
    if time.time() > spec["deadline"]:
      return {**record, "error": "skipped: out of budget"}
    try:
      config = configs.get_config(shape.model, dtype="bfloat16", remat_policy=remat)
      start = time.perf_counter()
      batch, sizes, slope, fixed = find_max_batch(
          lambda b: compiled_bytes(config, shape, b, partitioner), capacity, first,
          spec.get("max_bisect", 5), deadline=spec["deadline"])
      fitting = [b for b, v in sizes.items() if v <= capacity]
      planned = planner_estimate(config, shape, batch)
      plan_max = (largest_fitting(lambda b: (planner_estimate(config, shape, b) or math.inf)
                                  <= capacity) if planned is not None else None)
      _log(f"{record['label']} / remat {remat}: max batch {batch if fitting else 0} "
           f"({len(sizes)} compiles, {time.perf_counter() - start:.0f} s)")
      return {**record, "max_batch": batch if fitting else 0, "bytes_at_max": sizes[batch],
              "bytes_per_sample": slope, "fixed_bytes": fixed, "compiles": len(sizes),
              "seconds": time.perf_counter() - start, "planner_bytes_at_max": planned,
              "planner_max_batch": plan_max,
              "measured": {str(b): v for b, v in sorted(sizes.items())}}
    except Exception as e:  # pylint: disable=broad-except  (reported in its row)
      return {**record, "error": f"{type(e).__name__}: {e}"[:600]}

  from concurrent import futures  # pylint: disable=import-outside-toplevel
  cases = [(s, r) for s in spec["stages"] for r in spec["remat"]]
  # Cases compile side by side (XLA compiles outside the GIL); rows print as they finish.
  with futures.ThreadPoolExecutor(max(1, int(spec.get("parallel", 1)))) as pool:
    for fut in futures.as_completed([pool.submit(one_case, *c) for c in cases]):
      print("MEMORY_RESULT " + json.dumps(fut.result()), flush=True)


# --------------------------------------------------------------- driver ---
def run_worker(spec: Dict[str, Any], flags: Sequence[str], timeout_s: float,
               tag: str = "SWEEP_RESULT ") -> Tuple[List[Dict[str, Any]], str]:
  """Runs one worker process with ``flags`` added to XLA_FLAGS; its result lines and problem."""
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env["XLA_FLAGS"] = " ".join(env.get("XLA_FLAGS", "").split() + list(flags))
  if spec.get("mode") == "memory":
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  stdout, stderr, problem = _worker.run(os.path.abspath(__file__), spec, env, timeout_s)
  results = [json.loads(line[len(tag):]) for line in stdout.splitlines() if line.startswith(tag)]
  if problem:
    tail = [l for l in stderr.strip().splitlines() if l.strip()][-4:]
    problem += ": " + " | ".join(tail)[-600:]
  return results, problem


def losses_match(a: Sequence[float], b: Sequence[float]) -> bool:
  """The first losses of two runs agree to bf16 tolerance."""
  return len(a) == len(b) and all(abs(x - y) <= LOSS_ATOL + LOSS_RTOL * abs(y)
                                  for x, y in zip(a, b))


def annotate(results: List[Dict[str, Any]]) -> None:
  """Adds ``speedup`` and ``loss_ok`` against the same shape's baseline, in place."""
  base = {r["shape"]: r for r in results if r["job"] == "base" and "error" not in r}
  for r in results:
    b = base.get(r["shape"])
    if "error" in r or b is None:
      continue
    r["speedup"] = b["ms_per_step"] / r["ms_per_step"]
    r["loss_ok"] = losses_match(r["losses"], b["losses"])


def single_lever_gains(results: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
  """lever -> {shape: speedup} for single-lever jobs whose losses matched."""
  gains: Dict[str, Dict[str, float]] = {}
  for r in results:
    if r.get("loss_ok") and r["job"] in LEVERS and r["job"] != "base":
      gains.setdefault(r["job"], {})[r["shape"]] = r["speedup"]
  return gains


def winners(results: Sequence[Dict[str, Any]], min_gain: float,
            shape: Optional[str] = None) -> List[str]:
  """Single levers faster than the baseline by ``min_gain`` on every measured shape
  (or on ``shape``), with matching losses; of the gemm fusion levels, the best only."""
  chosen = []
  for lever, by_shape in single_lever_gains(results).items():
    values = [by_shape[shape]] if shape else list(by_shape.values())
    if shape and shape not in by_shape:
      continue
    if values and min(values) >= 1.0 + min_gain:
      chosen.append(lever)
  gemm = [l for l in chosen if l.startswith("gemm_fusion_")]
  if len(gemm) > 1:
    gains = single_lever_gains(results)
    best = max(gemm, key=lambda l: min(gains[l].values()))
    chosen = [l for l in chosen if not l.startswith("gemm_fusion_") or l == best]
  return sorted(chosen)


def defaults_lines(results: Sequence[Dict[str, Any]], min_gain: float,
                   jaxlib: Tuple[int, int]) -> List[str]:
  """The xla_flags.py table entries the measured winners call for."""
  chosen = [l for l in winners(results, min_gain) if l not in NOT_DEFAULTABLE]
  lever = combine(chosen)
  flags = ", ".join(repr(f) for f in lever.flags)
  lines = [f'DEFAULT_FLAGS["gpu"] = ({jaxlib!r}, ({flags}{"," if len(lever.flags) == 1 else ""}))',
           f'MODEL_DEFAULTS["gpu"] = {dict(lever.model)!r}']
  if "fused_adamw" in winners(results, min_gain):
    lines.append("# fused_adamw won too: opt in per run with OptimizerConfig.fused = True "
                 "(its state layout differs; see docs/gpu.md)")
  return lines


def format_table(results: Sequence[Dict[str, Any]]) -> str:
  head = (f"{'shape':<38} {'job':<34} {'ms/step':>8} {'samples/s':>9} {'MFU':>6} "
          f"{'vs base':>7} {'loss':>5} {'compile s':>9}")
  lines = [head, "-" * len(head)]
  for r in results:
    if "error" in r:
      lines.append(f"{r['label']:<38} {r['job']:<34} {r['error'][:90]}")
      continue
    mfu = f"{100 * r['mfu']:5.1f}%" if r.get("mfu") else "     -"
    speed = f"{r['speedup']:6.3f}x" if "speedup" in r else "      -"
    ok = {True: "ok", False: "DIFF", None: "-"}[r.get("loss_ok")]
    lines.append(f"{r['label']:<38} {r['job']:<34} {r['ms_per_step']:>8.2f} "
                 f"{r['samples_per_s']:>9.1f} {mfu:>6} {speed:>7} {ok:>5} {r['compile_s']:>9.1f}")
  return "\n".join(lines)


def _jaxlib_version() -> Tuple[int, int]:
  from clipa_t5x import xla_flags  # pylint: disable=import-outside-toplevel
  return xla_flags._jaxlib_version()  # pylint: disable=protected-access


def sweep(jobs: Sequence[Tuple[str, str]], args, deadline: float, budget_s: float,
          kind: str) -> List[Dict[str, Any]]:
  """Runs the jobs, one process per consecutive run of equal flags; fills 'winners' jobs."""
  results: List[Dict[str, Any]] = []
  compile_s: Dict[str, float] = {}
  pending = list(jobs)
  while pending:
    # Expand the next 'winners' job now that the single levers are in.
    shape, job = pending[0]
    if job == "winners":
      annotate(results)
      chosen = winners(results, args.min_gain, shape)
      pending.pop(0)
      if len(chosen) < 2:
        print(f"  {shape} / winners: {len(chosen)} lever(s) won alone ({chosen}); no "
              "combination to measure", flush=True)
        continue
      pending.insert(0, (shape, "+".join(chosen)))
      continue
    flags = combine(lever_names(job)).flags
    group = []
    while pending and pending[0][1] != "winners" and combine(
        lever_names(pending[0][1])).flags == flags:
      group.append(pending.pop(0))
    left = deadline - time.time()
    if left < START_S[kind] + FIRST_COMPILE_S[kind] * 0.5:
      results += [{"shape": s, "label": _shapes(args)[s].label, "job": j,
                   "error": f"skipped: {left:.0f} s of the budget left"} for s, j in group]
      continue
    spec = {"jobs": group, "deadline": deadline, "steps": args.steps, "smoke": args.smoke,
            "first_compile_s": FIRST_COMPILE_S[kind], "compile_s": compile_s,
            "parallel": args.parallel}
    got, problem = run_worker(spec, flags, left + 5)
    done = {(r["shape"], r["job"]) for r in got}
    for r in got:
      if "error" not in r:
        compile_s[r["shape"]] = r["compile_s"]
    got += [{"shape": s, "label": _shapes(args)[s].label, "job": j,
             "error": problem or "no result"} for s, j in group if (s, j) not in done]
    results += got
    for r in got:
      status = r.get("error") or f"{r['ms_per_step']:.2f} ms/step"
      print(f"  [{budget_s - (deadline - time.time()):5.0f} s] {r['label']} / {r['job']}: "
            f"{status}", flush=True)
  annotate(results)
  return results


def next_jobs(skipped: Sequence[str]) -> List[str]:
  """The skipped jobs, each shape's baseline first (speedups need it in the same run)."""
  bases = [f"{s}:base" for s in dict.fromkeys(j.split(":")[0] for j in skipped)]
  return [b for b in bases if b not in skipped] + list(skipped)


def _shapes(args) -> Dict[str, Shape]:
  return SMOKE_SHAPES if args.smoke else SHAPES


def _parse_jobs(text: str, parser, shapes) -> List[Tuple[str, str]]:
  jobs = []
  for item in [i.strip() for i in text.split(",") if i.strip()]:
    shape, _, job = item.partition(":")
    if shape not in shapes or not job:
      parser.error(f"--jobs item {item!r}: write shape:lever with shape one of "
                   f"{sorted(shapes)}.")
    if job != "winners":
      try:
        lever_names(job)
      except ValueError as e:
        parser.error(str(e))
    jobs.append((shape, job))
  return jobs


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Command line entry point; prints the table and returns what it wrote."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--smoke", action="store_true",
                      help="tiny model on CPU, Pallas in interpret mode (CI)")
  parser.add_argument("--jobs", default=None,
                      help="comma list of shape:lever (lever: a LEVERS name, 'code', "
                      "'winners' or names joined by '+'); default: the priority plan")
  parser.add_argument("--steps", type=int, default=None, help="timed steps per job (default 10)")
  parser.add_argument("--budget_s", type=float, default=480.0,
                      help="wall-clock budget of the whole sweep (default 480)")
  parser.add_argument("--parallel", type=int, default=None,
                      help="steps compiled at once in a worker (default 4; smoke 2)")
  parser.add_argument("--min_gain", type=float, default=0.02,
                      help="a lever wins when this much faster on every shape (default 0.02)")
  parser.add_argument("--memory", action="store_true",
                      help="largest batch per remat policy for H/14 instead of the sweep")
  parser.add_argument("--stages", default=None,
                      help=f"--memory stages, comma list of {sorted(MEMORY_STAGES)}")
  parser.add_argument("--remat", default="none,dots_saveable,full",
                      help="--memory remat policies (default none,dots_saveable,full)")
  parser.add_argument("--capacity_gib", type=float, default=None,
                      help=f"--memory: per-device bytes to fit (default {CAPACITY_GIB} GiB; "
                      "smoke 0.05)")
  parser.add_argument("--json", default=None, help="write the results here (default $OUT/...)")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    spec = json.loads(args.worker)
    (memory_main if spec.get("mode") == "memory" else worker_main)(spec)
    return {}
  kind = "smoke" if args.smoke else "gpu"
  args.steps = args.steps or (SMOKE_STEPS if args.smoke else 10)
  memory_parallel = args.parallel or (2 if args.smoke else 6)
  args.parallel = args.parallel or (2 if args.smoke else 4)
  deadline = time.time() + args.budget_s
  out = args.json or (os.path.join(os.environ["OUT"], "gpu_memory.json" if args.memory
                                   else "gpu_sweep.json") if os.environ.get("OUT") else None)
  if args.memory:
    stages = SMOKE_MEMORY_STAGES if args.smoke else MEMORY_STAGES
    names = [s for s in (args.stages or ",".join(stages)).split(",") if s]
    remat = [r for r in args.remat.split(",") if r]
    from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
    bad = [s for s in names if s not in stages] + [r for r in remat
                                                   if r not in configs.REMAT_POLICIES]
    if bad:
      parser.error(f"unknown --stages/--remat {bad}; stages {sorted(stages)}, remat "
                   f"{configs.REMAT_POLICIES}.")
    spec = {"mode": "memory", "smoke": args.smoke, "stages": names, "remat": remat,
            "deadline": deadline - 10, "first_batch": 2 if args.smoke else 32,
            "parallel": memory_parallel,
            "capacity_gib": args.capacity_gib or (0.05 if args.smoke else CAPACITY_GIB)}
    # Autotuning picks kernels, not buffers: off, the compiles are much faster.
    flags = () if args.smoke else ("--xla_gpu_autotune_level=0",)
    rows, problem = run_worker(spec, flags, args.budget_s, tag="MEMORY_RESULT ")
    print(f"{'stage':<34} {'remat':<14} {'max batch':>9} {'GiB at max':>10} "
          f"{'planner max':>11} {'planner GiB':>11}")
    for r in rows:
      if "error" in r:
        print(f"{r['label']:<34} {r['remat_policy']:<14} {r['error'][:80]}")
        continue
      plan_gib = (f"{r['planner_bytes_at_max'] / 2**30:11.2f}"
                  if r.get("planner_bytes_at_max") else f"{'-':>11}")
      print(f"{r['label']:<34} {r['remat_policy']:<14} {r['max_batch']:>9} "
            f"{r['bytes_at_max'] / 2**30:>10.2f} {str(r['planner_max_batch'] or '-'):>11} "
            f"{plan_gib}")
    if problem:
      print(f"memory worker: {problem}")
    result = {"mode": "memory", "rows": rows, "problem": problem}
  else:
    jobs = (_parse_jobs(args.jobs, parser, _shapes(args)) if args.jobs
            else list(SMOKE_PLAN if args.smoke else PLAN))
    print(f"gpu_sweep: {len(jobs)} jobs, {args.steps} timed steps each, budget "
          f"{args.budget_s:.0f} s; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    results = sweep(jobs, args, deadline, args.budget_s, kind)
    print(format_table(results))
    lines = defaults_lines(results, args.min_gain, _jaxlib_version())
    print("\ndefaults to paste into clipa_t5x/xla_flags.py (winners by >= "
          f"{100 * args.min_gain:g}% on every measured shape, losses matching):")
    print("\n".join("  " + l for l in lines))
    skipped = [f"{r['shape']}:{r['job']}" for r in results
               if r.get("error", "").startswith(("skipped", "timed out"))]
    if skipped:
      print(f"\nnot measured in the budget; next window: bash bench/gpu_sweep.sh --jobs "
            f"{','.join(next_jobs(skipped))}")
    bad = [f"{r['shape']}:{r['job']}" for r in results if r.get("loss_ok") is False]
    if bad:
      print(f"losses differ from the baseline beyond bf16 tolerance: {bad}")
    result = {"mode": "sweep", "results": results, "defaults": lines, "skipped": skipped,
              "loss_mismatch": bad, "min_gain": args.min_gain}
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
    print(f"results written to {out}")
  return result


if __name__ == "__main__":
  main()
