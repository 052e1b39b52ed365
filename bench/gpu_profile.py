"""Where a GPU train step's time goes: variants side by side and a kernel breakdown.

``bench/gpu_check.py`` says how fast ``Trainer.step`` is; this says why. For one
shape (default B/16 @ 224, 32 tokens, batch 256, bf16) it compiles the real
step (``step_throughput.StepRunner``: jitted, pinned shardings, donated state)
and times, in one process:

* ``host``: the step fed a host (numpy) batch, as the trainer and the GPU
  check run it: the uint8 images are copied to the device every step;
* ``resident``: the same compiled step on a batch already on the device, so
  ``host - resident`` is what the per-step copy costs;
* further variants (``--variants``): ``xla`` (``attention_impl='xla'``),
  ``b512`` (twice the batch), ``dots`` (``remat_policy='dots_saveable'``),
  ``pallas_ln`` / ``fused_gelu`` (the opt-in kernels; ``bench/gpu_sweep.py``
  measures every lever, this shows where a variant's time goes when traced
  first, e.g. ``--variants pallas_ln,resident``).

Then it records a ``jax.profiler`` trace of a few resident steps and sums the
device's kernel time by kind (matrix multiplies, attention, fused
element-wise/reduction kernels, copies) plus the gaps in which the device had
nothing to run; the top kernels are listed by total time. The Perfetto trace is
kept (``--trace_dir``) for a closer look in ui.perfetto.dev.

Compiler flags to compare are a separate run each (``XLA_FLAGS=... python
bench/gpu_profile.py --variants host``), since XLA reads them once per process.
``--smoke`` runs a tiny model on CPU in seconds (the test suite does this).

Usage::

  python bench/gpu_profile.py [--model B/16 --image_size 224 --text_length 32
      --batch 256 --variants host,resident,xla,b512 --trace_dir DIR] [--smoke]
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(1, REPO)  # the checkout itself, when clipa_t5x is not installed

# name -> (batch multiplier, ClipaConfig overrides, feed the batch from the host?)
VARIANTS = {
    "host": (1, {}, True),
    "resident": (1, {}, False),
    "xla": (1, {"attention_impl": "xla"}, False),
    "b512": (2, {}, False),
    "dots": (1, {"remat_policy": "dots_saveable"}, False),
    "pallas_ln": (1, {"norm_impl": "pallas"}, False),
    "fused_gelu": (1, {"mlp_impl": "fused_gelu"}, False),
}

# Kernel-name patterns, first match wins. cuBLAS / CUTLASS / nvjet kernels and
# XLA's Triton GEMM fusions are matrix multiplies; cuDNN's fused attention
# kernels are attention.
KERNEL_KINDS = (
    ("attention", re.compile(r"cudnn|flash|fmha|sdpa|attention", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|cublas|xmma|wgmma|sm\d+_|dot", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy", re.I)),
    ("reduction", re.compile(r"reduce|reduction|scatter|sort", re.I)),
    ("element-wise fusion", re.compile(r"fusion|loop_|input_|triton|convert|transpose", re.I)),
)


def kernel_kind(name: str) -> str:
  """The kind a device kernel's name belongs to (``other`` when none matches)."""
  for kind, pattern in KERNEL_KINDS:
    if pattern.search(name):
      return kind
  return "other"


def load_trace(trace_dir: str) -> Dict[str, Any]:
  """The newest Perfetto JSON trace ``jax.profiler.trace`` wrote under ``trace_dir``."""
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
  with gzip.open(paths[-1], "rt") as f:
    return json.load(f)


def _events_and_names(trace: Any) -> Tuple[List[Dict[str, Any]], Dict[Any, str],
                                            Dict[Tuple[Any, Any], str]]:
  """(events, process name by pid, thread name by (pid, tid)) of a Perfetto JSON trace."""
  events = trace.get("traceEvents", []) if isinstance(trace, dict) else list(trace)
  meta = [e for e in events if e.get("ph") == "M"]
  processes = {e.get("pid"): e.get("args", {}).get("name", "") for e in meta
               if e.get("name") == "process_name"}
  threads = {(e.get("pid"), e.get("tid")): e.get("args", {}).get("name", "") for e in meta
             if e.get("name") == "thread_name"}
  return events, processes, threads


def device_events(trace: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Complete ('X') events on the device's streams.

  Device streams are the processes whose name mentions a GPU and, inside them,
  the threads named ``Stream ...`` where there are any (the profiler also puts
  per-op and per-module summary lines there, which would count kernels twice).
  A trace without a GPU (CPU) falls back to every complete event, so the
  summary still runs.
  """
  events, processes, threads = _events_and_names(trace)
  gpu_pids = {pid for pid, name in processes.items() if re.search(r"gpu|cuda", name, re.I)}
  complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
  if gpu_pids:
    complete = [e for e in complete if e.get("pid") in gpu_pids]
    streams = {key for key, name in threads.items()
               if key[0] in gpu_pids and re.match(r"stream", name, re.I)}
    if streams:
      complete = [e for e in complete if (e.get("pid"), e.get("tid")) in streams]
  return complete


def track_counts(trace: Dict[str, Any]) -> List[Tuple[str, str, int]]:
  """(process name, thread name, complete events) per track, most events first."""
  events, processes, threads = _events_and_names(trace)
  counts = collections.Counter((e.get("pid"), e.get("tid")) for e in events if e.get("ph") == "X")
  return [(processes.get(pid, str(pid)), threads.get((pid, tid), str(tid)), n)
          for (pid, tid), n in counts.most_common()]


_LAUNCH = re.compile(r"grid:(\d+),(\d+),(\d+) block:(\d+),(\d+),(\d+)")
# Launch-size classes (threads per kernel) that separate, for a ViT step, the
# passes over the largest activations, the mid-sized ones and per-parameter work.
LAUNCH_CLASSES = ((20e6, ">= 20M threads"), (2e6, "2M-20M threads"), (0, "< 2M threads"))


def launch_class(event: Dict[str, Any]) -> str:
  """The launch-size class of a kernel event (from its ``kernel_details``), or 'unknown'."""
  match = _LAUNCH.search(str(event.get("args", {}).get("kernel_details", "")))
  if not match:
    return "unknown"
  threads = 1
  for value in match.groups():
    threads *= int(value)
  return next(name for floor, name in LAUNCH_CLASSES if threads >= floor)


def busy_time(events: Iterable[Dict[str, Any]]) -> Tuple[float, float]:
  """(µs in which some kernel ran, µs from the first start to the last end)."""
  spans = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events)
  if not spans:
    return 0.0, 0.0
  busy, (cur_start, cur_end) = 0.0, spans[0]
  for start, end in spans[1:]:
    if start > cur_end:
      busy += cur_end - cur_start
      cur_start, cur_end = start, end
    else:
      cur_end = max(cur_end, end)
  busy += cur_end - cur_start
  return busy, spans[-1][1] - spans[0][0]


def summarize(events: Sequence[Dict[str, Any]], steps: int, top: int = 20) -> str:
  """A per-step table of kernel time by kind, the idle gaps, and the top kernels."""
  if not events:
    return "no device events in the trace"
  by_kind: Dict[str, float] = collections.defaultdict(float)
  by_name: Dict[str, float] = collections.defaultdict(float)
  counts: Dict[str, int] = collections.Counter()
  by_launch: Dict[Tuple[str, str], List[float]] = collections.defaultdict(lambda: [0.0, 0])
  for e in events:
    kind, dur = kernel_kind(e["name"]), float(e["dur"])
    by_kind[kind] += dur
    by_name[e["name"]] += dur
    counts[e["name"]] += 1
    if kind in ("element-wise fusion", "reduction"):
      entry = by_launch[(kind, launch_class(e))]
      entry[0] += dur
      entry[1] += 1
  busy, span = busy_time(events)
  total = sum(by_kind.values())
  lines = [f"per step ({steps} steps traced): span {span / steps / 1e3:.2f} ms, device busy "
           f"{busy / steps / 1e3:.2f} ms ({100 * busy / max(span, 1e-9):.1f}%), idle "
           f"{(span - busy) / steps / 1e3:.2f} ms; kernel time {total / steps / 1e3:.2f} ms "
           f"in {len(events) / steps:.0f} kernels",
           "", f"{'kind':<22}{'ms/step':>10}{'share':>8}"]
  for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
    lines.append(f"{kind:<22}{us / steps / 1e3:>10.2f}{100 * us / total:>7.1f}%")
  if by_launch:
    lines += ["", f"{'element-wise / reduction by launch size':<48}{'ms/step':>9}{'kernels/step':>14}"]
    for (kind, size), (us, n) in sorted(by_launch.items(), key=lambda kv: -kv[1][0]):
      lines.append(f"  {kind + ', ' + size:<46}{us / steps / 1e3:>9.2f}{n / steps:>14.1f}")
  lines += ["", f"top {top} kernels: {'ms/step':>8} {'calls/step':>10}  kind  name"]
  for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]:
    lines.append(f"  {us / steps / 1e3:>8.3f} {counts[name] / steps:>10.1f}  "
                 f"{kernel_kind(name)}  {name[:110]}")
  return "\n".join(lines)


def _time(run, steps: int) -> float:
  """Seconds per step of ``run(steps)`` (which blocks), after one warm-up call."""
  run(2)
  start = time.perf_counter()
  run(steps)
  return (time.perf_counter() - start) / steps


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="B/16")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--text_length", type=int, default=32)
  parser.add_argument("--mask_ratio", type=float, default=0.0)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
  parser.add_argument("--variants", default="host,resident,xla,b512",
                      help=f"comma list of {sorted(VARIANTS)}; the first resident one is traced")
  parser.add_argument("--trace_steps", type=int, default=3, help="0: no trace")
  parser.add_argument("--trace_dir", default=None, help="default: a temporary folder")
  parser.add_argument("--json", default=None, help="also write the results here")
  parser.add_argument("--hlo", default=None,
                      help="write the traced variant's optimised HLO here (kernel names are "
                           "its fusion names)")
  parser.add_argument("--smoke", action="store_true", help="Ti/8 @ 32, batch 8, on CPU")
  args = parser.parse_args(argv)
  if args.smoke:
    args.model, args.image_size, args.text_length, args.batch = "Ti/8", 32, 8, 8
    args.steps, args.trace_steps = 2, 2
  names = [v for v in args.variants.split(",") if v]
  unknown = [v for v in names if v not in VARIANTS]
  if unknown:
    parser.error(f"--variants {unknown} unknown; choose from {sorted(VARIANTS)}")

  # pylint: disable=import-outside-toplevel
  from clipa_t5x import xla_flags
  xla_flags.apply_default_flags(log=print)
  import tempfile
  import jax
  import step_throughput
  from clipa_t5x import device_profiles, partitioning
  devices = jax.local_devices()[:1]
  peak = device_profiles.peak_flops_for_device_kind(devices[0].device_kind)
  print(f"jax {jax.__version__} on {devices[0].device_kind}; XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=devices)
  setting = step_throughput.Setting(args.image_size, args.text_length, args.mask_ratio)
  results: Dict[str, Any] = {"device": devices[0].device_kind, "model": args.model,
                             "setting": setting.label, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                             "variants": {}}
  runners: Dict[Tuple[int, str], Any] = {}
  traced = False
  for name in names:
    mult, overrides, from_host = VARIANTS[name]
    batch = args.batch * mult
    key = (batch, json.dumps(overrides, sort_keys=True))
    if key not in runners:
      runner = None
      runners.clear()  # frees the previous variant's device memory first
      runners[key] = step_throughput.StepRunner(args.model, setting, batch, args.dtype,
                                                partitioner, **overrides)
    runner = runners[key]
    run = runner.run if from_host else runner.run_resident
    seconds = _time(run, args.steps)
    flops = step_throughput.train_flops(runner.config, setting) * batch / seconds
    row = {"batch": batch, "overrides": overrides, "from_host": from_host,
           "ms_per_step": 1e3 * seconds, "samples_per_s": batch / seconds,
           "tflops": flops / 1e12, "mfu": flops / peak if peak else None,
           "compile_s": runner.compile_s}
    results["variants"][name] = row
    mfu = f", MFU {100 * row['mfu']:.1f}%" if peak else ""
    print(f"{name:<9} batch {batch:>4}: {row['ms_per_step']:8.2f} ms/step, "
          f"{row['samples_per_s']:8.0f} samples/s, {row['tflops']:6.1f} TFLOP/s{mfu} "
          f"(compile {runner.compile_s:.0f} s)", flush=True)
    if not traced and not from_host and args.trace_steps > 0:
      traced = True
      trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="clipa_gpu_trace_")
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        run(args.trace_steps)
      trace = load_trace(trace_dir)
      tracks = "; ".join(f"{p} / {t}: {n}" for p, t, n in track_counts(trace)[:12])
      summary = (f"tracks (events): {tracks}\n"
                 + summarize(device_events(trace), args.trace_steps))
      results["trace"] = {"variant": name, "dir": trace_dir, "summary": summary}
      if args.hlo:
        with open(args.hlo, "w") as f:
          f.write(runner.compiled_text() or "")
      print(f"\n--- kernel time, variant {name} (trace in {trace_dir}) ---\n{summary}\n",
            flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
