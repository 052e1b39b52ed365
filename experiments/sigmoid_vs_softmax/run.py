"""Softmax vs sigmoid contrastive loss at three batch sizes, under the CLIPA schedule.

Every run pre-trains on few tokens (16 px images, 8 syntax-masked tokens) and
fine-tunes briefly at full resolution (32 px, 16 tokens), on the glyph scene of
``experiments/inverse_scaling`` (textures of capitals whose pairs differ in one
stroke; 10 classes, zero-shot on 1,000 held-out images). Each batch size sees
the same number of samples (fewer steps at larger batches); the learning rate
follows CLIPA's rule (base x batch / 256). The only difference between a
softmax and a sigmoid run is ``ClipaConfig.loss``.

    python experiments/sigmoid_vs_softmax/run.py            # 18 runs
    python experiments/sigmoid_vs_softmax/run.py --list     # the runs
    python experiments/sigmoid_vs_softmax/run.py --report   # table + figure from finished runs

Results: OUT/results.json (one row per run), OUT/results.md (table),
OUT/sigmoid_vs_softmax.png. Rerunning skips finished runs.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
LOSSES = ("softmax", "sigmoid")


def _inverse_scaling():
  """The inverse-scaling study's runner: its glyph settings, stages and model config.

  Loaded under the key its own ``_sibling`` uses, so ``_inverse_scaling()._sibling("plot")``
  gives that study's plotting module.
  """
  key = "inverse_scaling_run"
  if key not in sys.modules:
    path = os.path.join(os.path.dirname(_HERE), "inverse_scaling", "run.py")
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
  return sys.modules[key]


@dataclasses.dataclass(frozen=True)
class Comparison:
  """The study's settings (every run shares them but loss, batch and seed).

  Attributes:
    batch_sizes: global batches compared.
    seeds: seeds of every (loss, batch) point.
    width: both towers' width (2 blocks, head width 32, as the inverse-scaling study).
    pretrain_samples / finetune_samples: samples of each stage, the same at every batch.
    warmup_fraction: warmup steps as a fraction of each stage's steps.
    pretrain_lr / finetune_lr: base learning rates per 256 samples.
    data_dir: the glyph data folder (None: the inverse-scaling study's default).
  """
  batch_sizes: Sequence[int] = (32, 128, 512)
  seeds: Sequence[int] = (0, 1, 2)
  width: int = 64
  pretrain_samples: int = 32768
  finetune_samples: int = 8192
  warmup_fraction: float = 0.1
  pretrain_lr: float = 2e-3
  finetune_lr: float = 1e-3
  data_dir: Optional[str] = None

  def runs(self) -> List[Dict[str, Any]]:
    # Seed by seed, so that a study cut short still covers every (loss, batch) point.
    return [{"loss": loss, "batch_size": b, "seed": s, "run_id": f"{loss}_b{b}_s{s}"}
            for s in self.seeds for b in self.batch_sizes for loss in LOSSES]


def _settings(isr, comparison: Comparison, batch_size: int):
  pre_steps = comparison.pretrain_samples // batch_size
  fine_steps = comparison.finetune_samples // batch_size
  return dataclasses.replace(
      isr.DEFAULT, widths=(comparison.width,), headline_widths=(comparison.width,),
      batch_size=batch_size, pretrain_steps=pre_steps, finetune_steps=fine_steps,
      pretrain_warmup=max(1, round(comparison.warmup_fraction * pre_steps)),
      finetune_warmup=max(1, round(comparison.warmup_fraction * fine_steps)),
      pretrain_lr=comparison.pretrain_lr, finetune_lr=comparison.finetune_lr, seeds=(0,),
      data=(("data_dir", comparison.data_dir),) if comparison.data_dir else ())


def check_reusable(row: Dict[str, Any], run: Dict[str, Any], settings) -> None:
  """Refuses a finished run's row trained under other settings than this study's."""
  want = {**{k: run[k] for k in ("loss", "batch_size", "seed")},
          "pretrain_steps": settings.pretrain_steps, "finetune_steps": settings.finetune_steps}
  got = {k: row.get(k) for k in want}
  if got != want:
    raise ValueError(f"{run['run_id']}: the finished run in its folder was trained with {got}, "
                     f"this study asks for {want}; pass another --out or remove that run.")


def run_one(isr, comparison: Comparison, run: Dict[str, Any], out: str) -> Dict[str, Any]:
  """Trains one run (or loads its finished row)."""
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  model_dir = os.path.abspath(os.path.join(out, "runs", run["run_id"]))
  result_path = os.path.join(model_dir, "result.json")
  settings = _settings(isr, comparison, run["batch_size"])
  if os.path.exists(result_path):
    with open(result_path) as f:
      row = json.load(f)
    check_reusable(row, run, settings)
    return row
  spec = isr.schedule_spec(comparison.width, run["seed"], settings)
  config = dataclasses.replace(isr.model_config(comparison.width, settings), loss=run["loss"])
  data = settings.demo_data()
  evaluator = runner.ZeroShotEvalConfig(
      name=data.name, task=f"{data.name}_eval", split="eval", class_names=data.class_names,
      templates=list(isr.EVAL_TEMPLATES), batch_size=settings.eval_batch_size,
      factors=data.class_factors)
  print(f"\n=== {run['run_id']} ===", flush=True)
  start = time.time()
  rows = runner.run(model_dir=model_dir, stages=isr.make_stages(spec, settings),
                    model_config=config,
                    checkpoint_config=checkpoints.SaveCheckpointConfig(period=100000, keep=1),
                    evaluators=[evaluator], log_every=50, random_seed=run["seed"])
  pre, fine = rows[0], rows[-1]
  row = {**run, "pretrain_steps": settings.pretrain_steps,
         "finetune_steps": settings.finetune_steps,
         "pretrain_top1": pre["zeroshot_top1"], "top1": fine["zeroshot_top1"],
         **{f"factor_{k}": v for k, v in (fine.get("zeroshot_factor_top1") or {}).items()},
         "seconds": time.time() - start}
  with open(result_path, "w") as f:
    json.dump(row, f, indent=1)
  print(f"[{run['run_id']}] zero-shot top-1 {100 * row['top1']:.1f}% "
        f"(pre-train {100 * row['pretrain_top1']:.1f}%), {row['seconds']:.0f}s", flush=True)
  return row


def interval95(values: Sequence[float]) -> Optional[Tuple[float, float]]:
  """The 95% t interval of the mean of ``values`` (None with fewer than two)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  v = np.asarray(values, dtype=float)
  if len(v) < 2:
    return None
  t95 = _inverse_scaling()._sibling("plot").t_quantile(len(v) - 1)
  half = t95 * v.std(ddof=1) / np.sqrt(len(v))
  return float(v.mean() - half), float(v.mean() + half)


def _pct(values: Sequence[float]) -> str:
  return " / ".join(f"{100 * x:.1f}" for x in values)


def _mean_sd(values: Sequence[float]) -> str:
  import numpy as np  # pylint: disable=import-outside-toplevel
  v = 100 * np.asarray(values, dtype=float)
  return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def _interval(values: Sequence[float]) -> str:
  got = interval95(values)
  return "-" if got is None else f"[{100 * got[0]:+.1f}, {100 * got[1]:+.1f}]"


def paired_differences(rows: Sequence[Dict[str, Any]], batch_size: int,
                       key: str = "top1") -> Tuple[List[int], List[float]]:
  """Seeds run with both losses at ``batch_size`` and sigmoid minus softmax ``key`` per seed."""
  by = {(r["loss"], r["seed"]): r[key] for r in rows if r["batch_size"] == batch_size}
  seeds = sorted(s for (loss, s) in by if loss == "sigmoid" and ("softmax", s) in by)
  return seeds, [by[("sigmoid", s)] - by[("softmax", s)] for s in seeds]


def tables(rows: Sequence[Dict[str, Any]], comparison: Comparison) -> str:
  """results.md's tables: every (batch, loss) point per seed, and the paired differences."""
  markdown_table = _inverse_scaling()._sibling("plot").markdown_table
  points = []
  for b in comparison.batch_sizes:
    for loss in LOSSES:
      got = sorted((r for r in rows if r["loss"] == loss and r["batch_size"] == b),
                   key=lambda r: r["seed"])
      if got:
        points.append([
            b, loss, f"{got[0]['pretrain_steps']} + {got[0]['finetune_steps']}",
            ",".join(str(r["seed"]) for r in got), _pct([r["top1"] for r in got]),
            _mean_sd([r["top1"] for r in got]), _mean_sd([r["pretrain_top1"] for r in got]),
            _mean_sd([r.get("factor_pair", float("nan")) for r in got])])
  differences = []
  for b in comparison.batch_sizes:
    seeds, diffs = paired_differences(rows, b)
    if seeds:
      differences.append([b, ",".join(map(str, seeds)),
                          " / ".join(f"{100 * d:+.1f}" for d in diffs),
                          f"{100 * sum(diffs) / len(diffs):+.1f}", _interval(diffs)])
  lines = markdown_table(
      ["batch", "loss", "steps (pre-train + fine-tune)", "seeds", "top-1 % per seed",
       "top-1 % mean ± sd", "pre-train top-1 % mean ± sd", "pair factor top-1 % mean ± sd"],
      points)
  lines += ["", "Sigmoid minus softmax, paired by seed (points of top-1; 95% t interval "
            "of the mean over seeds):", ""]
  lines += markdown_table(["batch", "seeds", "difference per seed", "mean", "95% interval"],
                          differences)
  return "\n".join(lines)


def report(rows: Sequence[Dict[str, Any]], comparison: Comparison, out: str,
           command: str) -> str:
  """Writes results.json, results.md (tables) and the figure; returns the tables."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"settings": dataclasses.asdict(comparison), "command": command,
               "rows": list(rows)}, f, indent=1)
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for i, loss in enumerate(LOSSES):
    xs, means = [], []
    for b in comparison.batch_sizes:
      top1 = [r["top1"] for r in rows if r["loss"] == loss and r["batch_size"] == b]
      if not top1:
        continue
      x = b * (0.93 if i == 0 else 1.07)  # side by side, so the seeds' dots do not overlap
      ax.scatter([x] * len(top1), 100 * np.asarray(top1), s=14, alpha=0.5, color=f"C{i}")
      xs.append(x)
      means.append(100 * np.mean(top1))
    ax.plot(xs, means, "-o", color=f"C{i}", label=f"{loss} (mean; dots: seeds)")
  ax.axhline(10, color="grey", lw=0.8, ls=":", label="chance")
  ax.set_xscale("log", base=2)
  ax.set_xticks(list(comparison.batch_sizes), [str(b) for b in comparison.batch_sizes])
  ax.set_xlabel(f"batch size (each sees {comparison.pretrain_samples:,} + "
                f"{comparison.finetune_samples:,} samples)")
  ax.set_ylabel("zero-shot top-1 % (glyphs, 10 classes)")
  ax.set_title("softmax vs sigmoid loss, CLIPA schedule")
  ax.legend(fontsize=8)
  fig.text(0.01, 0.005, command, fontsize=5)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "sigmoid_vs_softmax.png"), dpi=130)
  table = tables(rows, comparison)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"Command: `{command}`\n\n{table}\n")
  return table


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.path.join("runs", "sigmoid_vs_softmax"))
  p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  p.add_argument("--batch_sizes", default="32,128,512")
  p.add_argument("--width", type=int, default=Comparison.width)
  p.add_argument("--pretrain_samples", type=int, default=Comparison.pretrain_samples)
  p.add_argument("--finetune_samples", type=int, default=Comparison.finetune_samples)
  p.add_argument("--data_dir", default=None, help="glyph data folder (default: "
                 "$CLIPA_DEMO_GLYPHS_DATA or ~/.cache/clipa_t5x/demo_glyphs)")
  p.add_argument("--list", action="store_true", help="print the runs, train nothing")
  p.add_argument("--report", action="store_true", help="report the finished runs, train nothing")
  args = p.parse_args(argv)
  comparison = Comparison(batch_sizes=tuple(int(x) for x in args.batch_sizes.split(",")),
                          seeds=tuple(int(x) for x in args.seeds.split(",")), width=args.width,
                          pretrain_samples=args.pretrain_samples,
                          finetune_samples=args.finetune_samples, data_dir=args.data_dir)
  runs = comparison.runs()
  if args.list:
    for r in runs:
      print(r["run_id"], comparison.pretrain_samples // r["batch_size"], "+",
            comparison.finetune_samples // r["batch_size"], "steps")
    return 0
  os.makedirs(args.out, exist_ok=True)
  isr = _inverse_scaling()
  if not args.report:
    # The seeds of a (loss, batch) point share every compiled program.
    isr.enable_compilation_cache(os.path.abspath(os.path.join(args.out, "jax_cache")))
    from clipa_t5x.tasks import demo  # pylint: disable=import-outside-toplevel
    # The glyph Tasks over this study's data location (every batch size shares them).
    demo.register(_settings(isr, comparison, comparison.batch_sizes[0]).demo_data())
  command = "python experiments/sigmoid_vs_softmax/run.py " + " ".join(
      shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
  rows = []
  for run in runs:
    path = os.path.join(args.out, "runs", run["run_id"], "result.json")
    if args.report:
      if os.path.exists(path):
        with open(path) as f:
          row = json.load(f)
        check_reusable(row, run, _settings(isr, comparison, run["batch_size"]))
        rows.append(row)
      continue
    rows.append(run_one(isr, comparison, run, args.out))
    report(rows, comparison, args.out, command)
  print(report(rows, comparison, args.out, command.strip()))
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
