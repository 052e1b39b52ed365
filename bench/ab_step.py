"""A/B of clipa_t5x's train step between source trees, side by side on CPU.

Each ``--tree`` (a directory holding a ``clipa_t5x`` package, e.g. an
export of the last commit: ``git archive HEAD | tar -x -C /tmp/base``) gets
its own worker process, the clipa_t5x worker of ``vs_open_clip.py`` with that
tree first on ``PYTHONPATH``: the same real ``Trainer`` step, model, batch,
settings and XLA defaults as ``vs_open_clip.py`` (each tree's own
``clipa_t5x.xla_flags``). After every worker has warmed up, the driver
alternates timed rounds between them (A, B, A, B, ...) so that load from other
processes hits every tree alike, and reports the median samples/s per tree and
its ratio to the first tree, with the losses as a check that both train alike.

Usage::

  python bench/ab_step.py --tree /tmp/base --tree . [--settings 112:32:0,112:32:0.75]
      [--model Mu/8] [--batch 128] [--steps 2] [--rounds 3] [--json OUT]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402  (bench/_timing.py)
import step_throughput  # noqa: E402  (bench/step_throughput.py)
import vs_open_clip  # noqa: E402  (bench/vs_open_clip.py)


class TreeWorker(vs_open_clip.Worker):
  """A clipa_t5x worker that imports ``clipa_t5x`` from ``tree``."""

  def __init__(self, tree: str, spec: Dict[str, Any], timeout_s: float,  # pylint: disable=super-init-not-called
               xla_flags: str = ""):
    self.framework = f"clipa_t5x@{tree}"
    self._log = tempfile.TemporaryFile(mode="w+")
    env = dict(os.environ)
    if xla_flags:
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.abspath(tree)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    self._proc = subprocess.Popen(
        [sys.executable, os.path.abspath(vs_open_clip.__file__), "--worker", "clipa_t5x",
         "--spec", json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        bufsize=1, env=env)
    self._timeout_s = timeout_s
    self.ready = None


def run(trees: Sequence[str], model_name: str, settings: Sequence[step_throughput.Setting],
        batch_size: int, steps: int, rounds: int, warmup_steps: int = 1,
        flags: Optional[Dict[int, str]] = None, log=lambda s: None) -> Dict[str, Any]:
  """Warms up one worker per tree, alternates timed rounds; returns the results."""
  spec = vs_open_clip.make_spec(model_name, settings, batch_size,
                                vs_open_clip.DEFAULT_BASE_LR, warmup_steps)
  workers: List[TreeWorker] = []
  results = []
  with tempfile.TemporaryDirectory(prefix="ab_step_") as init_root:
    try:
      for k, tree in enumerate(trees):
        start = time.perf_counter()
        tree_spec = dict(spec, init_dir=tempfile.mkdtemp(dir=init_root))
        workers.append(TreeWorker(tree, tree_spec, 1800.0, (flags or {}).get(k, "")))
        info = workers[-1].wait_ready()["info"]
        log(f"  [{k}] {tree} ready after {time.perf_counter() - start:.1f} s: "
            f"compile_s {info['compile_s']}, params {info['params']}, "
            f"XLA_FLAGS {info['xla_flags']!r}")
      runners = []
      for i in range(len(settings)):
        for w in workers:
          def runner(w=w, i=i):
            reply = w.run(i, steps)
            return (_timing.Timing(reply["samples"], reply["wall_s"], reply["cpu_s"]),
                    reply["loss"])
          runners.append(runner)
      results = _timing.alternate(runners, rounds)
    finally:
      for w in workers:
        w.close()
  out = {"trees": [t + (f" +XLA_FLAGS {flags[k]!r}" if flags and k in flags else "")
                    for k, t in enumerate(trees)],
         "settings": [], "load": os.getloadavg()}
  for i, s in enumerate(settings):
    row = {"setting": f"{s.image_size}:{s.text_length}:{s.mask_ratio:g}", "trees": []}
    for k, _ in enumerate(trees):
      rounds_of = results[i * len(trees) + k]
      row["trees"].append({
          "samples_per_s": [t.samples_per_s for t, _ in rounds_of],
          "median": statistics.median(t.samples_per_s for t, _ in rounds_of),
          "median_per_cpu_s": statistics.median(t.samples_per_cpu_s for t, _ in rounds_of),
          "loss": [workers[k].ready["warmup_loss"][i], rounds_of[-1][1]]})
    out["settings"].append(row)
  return out


def report(result: Dict[str, Any]) -> str:
  """One line per setting and tree: median samples/s, ratio to tree 0, rounds, losses."""
  lines = []
  for row in result["settings"]:
    base = row["trees"][0]["median"]
    for k, t in enumerate(row["trees"]):
      lines.append(
          f"{row['setting']:>12} [{k}] {t['median']:8.2f}/s {t['median'] / base:5.2f}x "
          f"(per CPU-s {t['median_per_cpu_s']:.2f}) rounds "
          + ", ".join(f"{v:.1f}" for v in t["samples_per_s"])
          + f" | loss {t['loss'][0]:.4f}->{t['loss'][1]:.4f}")
  lines.append("trees: " + ", ".join(f"[{k}] {t}" for k, t in enumerate(result["trees"])))
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tree", action="append", required=True,
                      help="a directory holding a clipa_t5x package (repeat; the first is "
                      "the baseline)")
  parser.add_argument("--xla_flags", action="append", default=[],
                      help="K=FLAGS: extra XLA_FLAGS for the K-th --tree (0-based; repeat; "
                      "the same tree may be given twice with different flags)")
  parser.add_argument("--model", default=vs_open_clip.DEFAULT_MODEL)
  parser.add_argument("--settings", default=vs_open_clip.DEFAULT_SETTINGS)
  parser.add_argument("--batch", type=int, default=vs_open_clip.DEFAULT_BATCH)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  settings = step_throughput.parse_settings(args.settings)
  print(f"load {os.getloadavg()}", flush=True)
  flags = {int(k): v for k, v in (f.split("=", 1) for f in args.xla_flags)}
  result = run(args.tree, args.model, settings, args.batch, args.steps, args.rounds,
               flags=flags, log=lambda s: print(s, flush=True))
  print(report(result))
  print(f"load {os.getloadavg()}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
