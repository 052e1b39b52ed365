"""Per-op CPU profile of clipa_t5x's real train step, grouped by model part.

Builds the ``Trainer`` step of ``step_throughput.py`` (``vs_open_clip.py``'s
default model and shapes), warms it up, traces ``--steps`` steps with
``jax.profiler`` and sums the time of every XLA op (thunk) that ran on the
host threads, self time only (a ``while`` loop's own time excludes its body's
ops). Each op is put in a group by the JAX source of the HLO instruction
(its ``op_name`` metadata, read from the compiled module): image / text tower,
attention core, q/k/v and output projections, MLP, LayerNorm, patch
embedding, loss, optimizer update, ... Op times are summed over threads, so
the total is CPU time in XLA ops, not wall time.

Usage::

  python bench/step_profile.py [--model Mu/8] [--setting 112:32:0.75] [--batch 128]
      [--steps 2] [--top 25]
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# (group, regex on the op_name metadata); the first match wins.
GROUPS: Sequence[Tuple[str, str]] = (
    ("optimizer update", r"(adam|optax|scale_by|add_decayed|apply_updates|tree_map|"
                         r"clip_by|global_norm|learning_rate|schedule)"),
    ("loss / logits", r"(loss|logit|log_softmax|softmax_cross|contrastive)"),
    # The fused q/k/v matmul (one einsum over the concatenated kernels) and
    # the split of its result count as projections.
    ("q/k/v projections", r"attention/(query|key|value|qkv|blw,whd->blhd|concatenate|split)"),
    ("attention out proj", r"attention/out"),
    ("attention core", r"attention/"),
    ("LayerNorm", r"(norm_attn|norm_mlp|encoder_norm|final_norm|LayerNorm|layer_norm)"),
    ("MLP", r"mlp/"),
    ("patch embedding / masking", r"(embedding|patchify|take_along_axis|gather|argsort|"
                                  r"sort|posemb|random|mask)"),
    ("residual / other", r"."),
)


def hlo_op_names(hlo_text: str) -> Dict[str, str]:
  """Instruction name → op_name metadata, for every instruction of an HLO module text."""
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{([^}]*)\}",
                       hlo_text, re.M):
    op = re.search(r'op_name="([^"]*)"', m.group(2))
    if op:
      out[m.group(1)] = op.group(1)
  return out


def consumer_op_names(hlo_text: str) -> Dict[str, str]:
  """Instruction without metadata → the op_name of its first consumer that has one.

  XLA's own rewrites (e.g. a reduction split into reduce-window + reduce)
  leave the new instruction without metadata; its consumer tells what it is for.
  """
  named = hlo_op_names(hlo_text)
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=([^\n]*)$", hlo_text, re.M):
    name, rest = m.group(1), m.group(2)
    if name not in named:
      continue
    for operand in re.findall(r"%([\w.\-]+)", rest.split("metadata=")[0]):
      out.setdefault(operand, named[name])
  return {k: v for k, v in out.items() if k not in named}


def fusion_op_names(hlo_text: str) -> Dict[str, str]:
  """Fusion instruction → the op_names of its fused computation, joined.

  A fusion's own metadata names one op; its fused computation tells more
  (e.g. a LayerNorm fused into a residual add).
  """
  comps: Dict[str, List[str]] = {}
  current = None
  for line in hlo_text.splitlines():
    head = re.match(r"^%?([\w.\-]+)\s.*\{\s*$", line)
    if head and not line.startswith(" "):
      current = head.group(1)
      comps[current] = []
      continue
    if current:
      op = re.search(r'op_name="([^"]*)"', line)
      if op:
        comps[current].append(op.group(1))
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*\bfusion\(.*calls=%?([\w.\-]+)",
                       hlo_text, re.M):
    out[m.group(1)] = " ".join(comps.get(m.group(2), []))
  return out


def group_of(op_name: str) -> str:
  for group, pattern in GROUPS:
    if re.search(pattern, op_name):
      return group
  return "residual / other"


def tower_of(op_name: str) -> str:
  if "/img/" in op_name or "VisionTransformer" in op_name or "img" in op_name.split("/"):
    return "image"
  if "/txt/" in op_name or "TextTransformer" in op_name or "txt" in op_name.split("/"):
    return "text"
  return "-"


def self_times(trace_dir: str) -> Dict[str, float]:
  """hlo_op name → summed self time (ns) over all host threads."""
  import jax  # pylint: disable=import-outside-toplevel
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  data = jax.profiler.ProfileData.from_file(path)
  totals: Dict[str, float] = collections.defaultdict(float)
  for plane in data.planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      events = []
      for e in line.events:
        stats = dict(e.stats)
        if "hlo_op" in stats and stats.get("hlo_module", "").startswith("jit_train_step"):
          events.append((e.start_ns, e.end_ns, stats["hlo_op"]))
      events.sort(key=lambda t: (t[0], -t[1]))
      stack: List[List] = []  # [end, name, child time]
      for start, end, name in events:
        while stack and stack[-1][0] <= start:
          s_end, s_name, s_child, s_start = stack.pop()
          totals[s_name] += (s_end - s_start) - s_child
          if stack:
            stack[-1][2] += s_end - s_start
        stack.append([end, name, 0.0, start])
      while stack:
        s_end, s_name, s_child, s_start = stack.pop()
        totals[s_name] += (s_end - s_start) - s_child
        if stack:
          stack[-1][2] += s_end - s_start
  return totals


def main(argv: Optional[Sequence[str]] = None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="Mu/8")
  parser.add_argument("--setting", default="112:32:0.75")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--reanalyse", default=None,
                      help="the work folder of an earlier run: analyse its trace again")
  args = parser.parse_args(argv)
  if args.reanalyse:
    analyse(args.reanalyse, args)
    return
  work = tempfile.mkdtemp(prefix="step_profile_")
  print(f"trace and HLO dump in {work}")
  dump = os.path.join(work, "hlo")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_dump_to={dump} --xla_dump_hlo_as_text").strip()
  from clipa_t5x import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.apply_default_flags(log=print)
  import jax  # pylint: disable=import-outside-toplevel
  import step_throughput  # pylint: disable=import-outside-toplevel
  from clipa_t5x import partitioning  # pylint: disable=import-outside-toplevel
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=jax.local_devices())
  setting = step_throughput.parse_settings(args.setting)[0]
  runner = step_throughput.StepRunner(args.model, setting, args.batch, "float32", partitioner,
                                      seed=0, base_learning_rate=1e-4)
  runner.run(2)
  trace = os.path.join(work, "trace")
  jax.profiler.start_trace(trace)
  runner.run(args.steps)
  jax.profiler.stop_trace()
  analyse(work, args)


def op_kind(op: str) -> str:
  """'onednn matmul', 'reduce-window', 'fusion (loop)', 'copy', ... from a thunk name."""
  if "onednn$matmul" in op:
    return "oneDNN matmul"
  base = re.sub(r"\.\d+.*$", "", op)
  return base


def analyse(work: str, args) -> None:
  """Prints the grouped profile of the trace and HLO dump in ``work``."""
  dump, trace = os.path.join(work, "hlo"), os.path.join(work, "trace")
  texts = [open(p).read() for p in glob.glob(os.path.join(dump, "*train_step*after_optimizations.txt"))]
  names: Dict[str, str] = {}
  fused: Dict[str, str] = {}
  consumers: Dict[str, str] = {}
  for t in texts:
    names.update(hlo_op_names(t))
    fused.update(fusion_op_names(t))
    consumers.update(consumer_op_names(t))
  totals = self_times(trace)
  by_group: Dict[Tuple[str, str], float] = collections.defaultdict(float)
  rows = []
  by_kind: Dict[str, float] = collections.defaultdict(float)
  for op, ns in totals.items():
    by_kind[op_kind(op)] += ns
    hlo = op.split("__", 1)[0]
    meta = names.get(hlo, "") or fused.get(hlo, "") or consumers.get(hlo, "")
    key = (tower_of(meta + " " + fused.get(op, "")), group_of(meta))
    by_group[key] += ns
    rows.append((ns, op, key, meta))
  total = sum(totals.values())
  per_step = 1e-6 / args.steps
  print(f"{args.model} {args.setting} batch {args.batch}: XLA op time per step "
        f"{total * per_step:.1f} ms (CPU time summed over threads), load {os.getloadavg()}")
  print(f"{'tower':6} {'group':28} {'ms/step':>9} {'share':>6}")
  for (tower, group), ns in sorted(by_group.items(), key=lambda kv: -kv[1]):
    print(f"{tower:6} {group:28} {ns * per_step:9.1f} {ns / total:6.1%}")
  print("by op kind:")
  for kind, ns in sorted(by_kind.items(), key=lambda kv: -kv[1])[:15]:
    print(f"  {kind:40} {ns * per_step:9.1f} {ns / total:6.1%}")
  print(f"top {args.top} ops:")
  for ns, op, key, meta in sorted(rows, reverse=True)[:args.top]:
    print(f"  {ns * per_step:8.1f} ms  {op:40.40} {key[0]:5} {key[1]:22.22} {meta[-90:]}")


if __name__ == "__main__":
  main()
