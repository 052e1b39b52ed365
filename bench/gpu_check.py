"""GPU check: clipa_t5x's real train step next to open_clip's, in bf16, on one GPU.

For each CLIPA shape below, both frameworks train the same architecture on one
fixed random batch and report samples/s and MFU (analytic training FLOPs from
``clipa_t5x.flops`` over the device's dense bf16 peak from
``clipa_t5x.device_profiles``; the same FLOPs for both sides, since both run
the same model):

* ``B/16 @ 224``, 32 tokens, batch 256: the usual CLIP baseline shape;
* ``L/14 @ 84``, 8 tokens, batch 1024: CLIPA-v2's pre-training shape
  (36 patches, syntax-reduced text);
* ``L/14 @ 224``, 32 tokens, 30% random patch masking, batch 256: CLIPA-v2's
  full-resolution fine-tuning shape;
* ``B/16 @ 224`` again with ``attention_impl='xla'`` (plain einsums), so the
  default attention is checked against the alternative on this device.

clipa_t5x runs ``Trainer.step`` (jitted, pinned shardings, state donated;
bf16 compute, float32 parameters and AdamW state) exactly as
``bench/step_throughput.py`` does. open_clip runs ``open_clip.CLIP`` built from
``clipa_t5x.interop.open_clip_config`` (patch masking as ``patch_dropout``)
with ``torch.autocast(bfloat16)``, PyTorch's scaled-dot-product attention
(flash / memory-efficient kernels) inside ``nn.MultiheadAttention``,
open_clip's ``ClipLoss`` and fused AdamW; eager mode (no ``torch.compile``).
Both copy the uint8 batch from host memory each step and normalise on the GPU.

Every (shape, framework) pair runs in its own subprocess with its own time
limit, so the frameworks never share the GPU's memory and one failure (an
out-of-memory, a missing package) is reported in its row while the rest go on.
The whole check keeps to ``--budget_s`` (default 8 minutes): rows that would
not fit are reported as skipped.

Needs on the GPU machine: jax with CUDA, flax, optax, numpy (the JAX core
imports no TensorFlow, seqio, gin or clu) and, for the open_clip side, torch
and open_clip_torch (``bench/gpu_check.sh`` installs carried wheels first; see
``bench/README.md``). ``--smoke`` runs the same code on CPU with a tiny model
and tiny batch in seconds (the test suite does this).

Usage::

  python bench/gpu_check.py [--smoke] [--rows b16_224,l14_84_t8,...]
      [--steps 10] [--budget_s 480] [--json OUT]
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _worker  # noqa: E402  (bench/_worker.py)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(1, REPO)  # the checkout itself, when clipa_t5x is not installed

FRAMEWORKS = ("clipa_t5x", "open_clip")


@dataclasses.dataclass(frozen=True)
class Row:
  """One shape to measure."""
  name: str
  model: str
  image_size: int
  text_length: int
  mask_ratio: float
  batch: int
  attention_impl: str = "auto"
  frameworks: Sequence[str] = FRAMEWORKS

  @property
  def label(self) -> str:
    mask = f", mask {self.mask_ratio:g}" if self.mask_ratio else ""
    attn = "" if self.attention_impl == "auto" else f", attention {self.attention_impl}"
    return (f"{self.model} @ {self.image_size}, {self.text_length} tok{mask}, "
            f"batch {self.batch}{attn}")


ROWS = (
    Row("b16_224", "B/16", 224, 32, 0.0, 256),
    Row("l14_84_t8", "L/14", 84, 8, 0.0, 1024),
    Row("l14_224_m30", "L/14", 224, 32, 0.3, 256),
    Row("b16_224_xla", "B/16", 224, 32, 0.0, 256, attention_impl="xla",
        frameworks=("clipa_t5x",)),
)
SMOKE_ROWS = (
    Row("ti8_32", "Ti/8", 32, 8, 0.0, 8),
    Row("ti8_32_m30", "Ti/8", 32, 8, 0.3, 8),
    Row("ti8_32_xla", "Ti/8", 32, 8, 0.0, 8, attention_impl="xla",
        frameworks=("clipa_t5x",)),
)
SMOKE_STEPS = 2
# Seconds a worker needs beyond its timed steps (imports, init, compile); a
# row whose share of the budget is below this is skipped rather than started.
MIN_WORKER_S = {"clipa_t5x": 60.0, "open_clip": 40.0}
SMOKE_MIN_WORKER_S = 5.0
# Relative time a worker needs (XLA compiles the step; torch runs eagerly).
JOB_WEIGHT = {"clipa_t5x": 3.0, "open_clip": 1.0}


# --------------------------------------------------------------- workers ---
def _train_flops(row: Row) -> float:
  from clipa_t5x import flops  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  config = configs.get_config(row.model)
  return flops.per_example_flops(config, row.image_size, row.text_length,
                                 row.mask_ratio)["train"]


def _timed_steps(run_steps, steps: int, max_s: float) -> Dict[str, float]:
  """Times ``run_steps(n)`` (which must block until done) for ``steps`` steps.

  One step is timed first; if ``steps`` of them would overrun ``max_s`` the
  count is cut to what fits (at least 2). Returns seconds and steps timed.
  """
  start = time.perf_counter()
  run_steps(1)
  one = time.perf_counter() - start
  steps = max(2, min(steps, int(max_s / max(one, 1e-6))))
  start = time.perf_counter()
  run_steps(steps)
  return {"seconds": time.perf_counter() - start, "steps": steps}


_WORKER_START = time.perf_counter()


def _phase(text: str) -> None:
  """A timestamped progress line on stderr: shows where a slow or killed worker was."""
  print(f"[worker +{time.perf_counter() - _WORKER_START:6.1f} s] {text}", file=sys.stderr,
        flush=True)


def clipa_worker(row: Row, dtype: str, steps: int, max_step_s: float) -> Dict[str, Any]:
  """clipa_t5x's side: ``Trainer.step`` through ``step_throughput.StepRunner``."""
  # pylint: disable=import-outside-toplevel
  from clipa_t5x import xla_flags
  xla_flags.apply_default_flags(log=_phase)  # as the trainer does, before jax starts
  import jax
  import step_throughput
  from clipa_t5x import partitioning
  from clipa_t5x.models import layers
  devices = jax.local_devices()[:1]
  _phase(f"jax {jax.__version__} on {devices[0].device_kind}; building state and compiling")
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=devices)
  setting = step_throughput.Setting(row.image_size, row.text_length, row.mask_ratio)
  start = time.perf_counter()
  runner = step_throughput.StepRunner(row.model, setting, row.batch, dtype, partitioner,
                                      attention_impl=row.attention_impl)
  setup_s = time.perf_counter() - start
  _phase(f"state + step ready in {setup_s:.1f} s (step compile {runner.compile_s:.1f} s)")
  runner.run(2)  # warm-up
  _phase("warm-up steps done")
  timing = _timed_steps(runner.run, steps, max_step_s)
  _phase(f"timed {timing['steps']} steps in {timing['seconds']:.2f} s")
  resolve = getattr(layers, "resolve_attention_impl", None)
  impl = resolve(row.attention_impl) if resolve else row.attention_impl
  return {"framework": "clipa_t5x", "version": f"jax {jax.__version__}",
          "device": devices[0].device_kind, "platform": devices[0].platform,
          "attention": impl, "compile_s": runner.compile_s, "setup_s": setup_s,
          "loss": runner.loss, **timing}


def open_clip_worker(row: Row, dtype: str, steps: int, max_step_s: float) -> Dict[str, Any]:
  """open_clip's side: ``open_clip_step.OpenClipStep`` under autocast."""
  # pylint: disable=import-outside-toplevel
  import open_clip
  import open_clip_step
  import step_throughput
  import torch
  from clipa_t5x import optimizers
  from clipa_t5x.interop import open_clip_config
  from clipa_t5x.models import configs
  from clipa_t5x.models import vit
  cuda = torch.cuda.is_available()
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  torch.manual_seed(0)
  config = configs.get_config(row.model)
  cfg = open_clip_config.open_clip_model_config(config, row.image_size, row.text_length)
  cfg["vision_cfg"]["patch_dropout"] = row.mask_ratio
  opt = optimizers.OptimizerConfig()
  start = time.perf_counter()
  batch = step_throughput.random_batch(
      row.batch, step_throughput.Setting(row.image_size, row.text_length),
      config.text.vocab_size)
  trainer = open_clip_step.OpenClipStep(
      cfg, batch, lr=1e-4, weight_decay=opt.weight_decay, betas=(opt.b1, opt.b2), eps=opt.eps,
      mean=vit.IMAGENET_MEAN, std=vit.IMAGENET_STD, device="cuda" if cuda else "cpu",
      autocast_dtype=dtype)
  setup_s = time.perf_counter() - start
  _phase(f"torch {torch.__version__}: model and optimizer ready in {setup_s:.1f} s")
  trainer.run(3)  # warm-up: cuDNN/cuBLAS autotuning, allocator growth
  timing = _timed_steps(trainer.run, steps, max_step_s)
  flash = cuda and torch.backends.cuda.flash_sdp_enabled()
  return {"framework": "open_clip",
          "version": f"torch {torch.__version__}, open_clip {open_clip.__version__}",
          "device": torch.cuda.get_device_name() if cuda else "cpu",
          "platform": "gpu" if cuda else "cpu",
          "attention": "torch SDPA" + (" (flash enabled)" if flash else ""),
          "compile_s": 0.0, "setup_s": setup_s, "loss": trainer.loss, **timing}


def worker_main(spec_json: str) -> None:
  """A worker process: measures one (row, framework) and prints one JSON line."""
  spec = json.loads(spec_json)
  row = Row(**spec["row"])
  fn = clipa_worker if spec["framework"] == "clipa_t5x" else open_clip_worker
  try:
    result = fn(row, spec["dtype"], spec["steps"], spec["max_step_s"])
  except Exception as e:  # pylint: disable=broad-except  (reported in the row)
    result = {"framework": spec["framework"], "error": f"{type(e).__name__}: {e}"[:600]}
  print("GPU_CHECK_RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver ---
def run_worker(row: Row, framework: str, dtype: str, steps: int, timeout_s: float
               ) -> Dict[str, Any]:
  """Runs one worker subprocess within ``timeout_s``; its result or an error record."""
  spec = {"row": dataclasses.asdict(row), "framework": framework, "dtype": dtype,
          "steps": steps, "max_step_s": max(2.0, timeout_s / 6)}
  spec["row"]["frameworks"] = list(row.frameworks)
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if framework == "open_clip":
    env["JAX_PLATFORMS"] = "cpu"  # its config helpers import jax: keep it off the GPU
  stdout, stderr, problem = _worker.run(os.path.abspath(__file__), spec, env, timeout_s)
  problem = problem or "worker exited with code 0"
  for line in stdout.splitlines():
    if line.startswith("GPU_CHECK_RESULT "):
      return json.loads(line[len("GPU_CHECK_RESULT "):])
  # The worker's own progress lines say where it was (importing, compiling, ...).
  phases = [l for l in stderr.splitlines() if l.startswith("[worker ")]
  tail = phases[-2:] + [l for l in stderr.strip().splitlines()[-4:] if l not in phases]
  return {"framework": framework, "error": f"{problem}: " + " | ".join(tail)[-700:]}


def add_rates(row: Row, result: Dict[str, Any], peak: Optional[float]) -> Dict[str, Any]:
  """Adds samples/s, TFLOP/s and MFU to a worker's result."""
  if "error" in result:
    return result
  rate = result["steps"] * row.batch / result["seconds"]
  achieved = rate * _train_flops(row)
  return {**result, "samples_per_s": rate, "tflops": achieved / 1e12,
          "mfu": achieved / peak if peak else None}


def peak_flops(device_kind: str) -> Optional[float]:
  from clipa_t5x import device_profiles  # pylint: disable=import-outside-toplevel
  return device_profiles.peak_flops_for_device_kind(device_kind)


def format_table(results: Sequence[Dict[str, Any]]) -> str:
  """One line per (row, framework), then clipa_t5x / open_clip per row."""
  head = (f"{'shape':<44} {'framework':<10} {'samples/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'compile s':>9}  attention")
  lines = [head, "-" * len(head)]
  by_row: Dict[str, Dict[str, Dict[str, Any]]] = {}
  for r in results:
    by_row.setdefault(r["label"], {})[r["framework"]] = r
    if "error" in r:
      lines.append(f"{r['label']:<44} {r['framework']:<10} {r['error']}")
      continue
    mfu = f"{100 * r['mfu']:5.1f}%" if r.get("mfu") is not None else "     -"
    lines.append(f"{r['label']:<44} {r['framework']:<10} {r['samples_per_s']:>10.1f} "
                 f"{r['tflops']:>8.1f} {mfu:>6} {r['compile_s']:>9.1f}  {r['attention']}")
  ratios = []
  for label, pair in by_row.items():
    a, b = pair.get("clipa_t5x", {}), pair.get("open_clip", {})
    if "samples_per_s" in a and "samples_per_s" in b:
      ratios.append(f"  {label}: clipa_t5x / open_clip = "
                    f"{a['samples_per_s'] / b['samples_per_s']:.2f}x")
  if ratios:
    lines += ["samples/s ratio, same shape, same GPU:"] + ratios
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
  """Command line entry point; prints the table and returns the results."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--smoke", action="store_true",
                      help="tiny model and batch on whatever device there is (CI, CPU)")
  parser.add_argument("--rows", default=None,
                      help="comma-separated row names (default: all of "
                      f"{[r.name for r in ROWS]}; smoke: {[r.name for r in SMOKE_ROWS]})")
  parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                      help="comma-separated subset of clipa_t5x,open_clip")
  parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10)")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
  parser.add_argument("--budget_s", type=float, default=480.0,
                      help="wall-clock budget for the whole check (default 480 = 8 min)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker_main(args.worker)
    return []
  rows = SMOKE_ROWS if args.smoke else ROWS
  if args.rows:
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    known = {r.name: r for r in rows}
    unknown = [n for n in names if n not in known]
    if unknown:
      parser.error(f"unknown --rows {unknown}; choose from {sorted(known)}.")
    rows = [known[n] for n in names]
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  if set(frameworks) - set(FRAMEWORKS):
    parser.error(f"--frameworks must be a subset of {FRAMEWORKS}, got {frameworks}.")
  steps = args.steps or (SMOKE_STEPS if args.smoke else 10)
  min_worker_s = ({f: SMOKE_MIN_WORKER_S for f in FRAMEWORKS} if args.smoke
                  else MIN_WORKER_S)
  deadline = time.time() + args.budget_s

  # This driver imports neither jax nor torch, so it holds no GPU memory.
  jobs = [(row, f) for row in rows for f in row.frameworks if f in frameworks]
  print(f"gpu_check: {len(jobs)} measurements, {args.dtype}, {steps} timed steps each, "
        f"budget {args.budget_s:.0f} s; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        flush=True)
  results: List[Dict[str, Any]] = []
  i = -1
  while i + 1 < len(jobs):
    i += 1
    row, framework = jobs[i]
    left = deadline - time.time()
    # A weighted share of what is left (a JAX worker compiles; a torch one does
    # not); a job may use up to 1.5x its share, and the last one all of it.
    weights = [JOB_WEIGHT[f] for _, f in jobs[i:]]
    share = left * weights[0] / sum(weights)
    timeout = left if i == len(jobs) - 1 else min(left, 1.5 * share)
    if timeout < min_worker_s[framework]:
      result = {"framework": framework,
                "error": f"skipped: {left:.0f} s of the budget left"}
    else:
      result = run_worker(row, framework, args.dtype, steps, timeout)
      result = add_rates(row, result, peak_flops(result.get("device", "")))
    result = {"row": row.name, "label": row.label, **result}
    results.append(result)
    if (framework == "clipa_t5x" and row.attention_impl == "auto" and "error" in result
        and not result["error"].startswith(("skipped", "timed out"))):
      # The platform's default attention failed to build (e.g. a cuDNN that
      # refuses the shape): measure the plain form instead, as a row of its own.
      fallback = dataclasses.replace(row, name=row.name + "_xla", attention_impl="xla")
      jobs.insert(i + 1, (fallback, framework))
    status = (result["error"] if "error" in result else
              f"{result['samples_per_s']:.1f} samples/s"
              + (f", MFU {100 * result['mfu']:.1f}%" if result.get("mfu") else "")
              + f" ({result['device']}, {result['attention']})")
    print(f"  [{time.time() - deadline + args.budget_s:5.0f} s] {row.label} / {framework}: "
          f"{status}", flush=True)
  print(format_table(results))
  out = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json")
                      if os.environ.get("OUT") else None)
  if out:
    with open(out, "w") as f:
      json.dump({"dtype": args.dtype, "steps": steps, "results": results}, f, indent=1)
    print(f"results written to {out}")
  return results


if __name__ == "__main__":
  main()
