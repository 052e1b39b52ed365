r"""The inverse-scaling study's report from run.py's rows: its numbers, tables and figures.

Writes ``results.json`` (settings, command, rows), ``results.md`` (the points, figure links
and the tests as tables; every ``±`` a 95% interval: Student-t from the seed SD pooled over
the points, Welch from each point's own) and two PNGs; the study's README says what they
mean. Redraw from a study's results.json: ``plot.py --out runs/inverse_scaling``.
"""

import argparse
import json
import math
import os
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from scipy import stats

Row = Dict[str, Any]
_METRICS = ("top1", "top5", "pretrain_top1", "pretrain_top5", "wall_seconds", "cpu_seconds")
_PER_RUN = ("seed", "run_id", "pretrain_seconds", "finetune_seconds")  # differ between seeds
# Per setting (run.py's ``axis``, in table order): its name in the tables, marker, legend entry.
_AXES = {"full": ("full tokens", "o", "full tokens + fine-tune"),
         "image": ("resize", "^", "fewer image tokens (resize) + fine-tune"),
         "mask": ("random mask", "s", "random masking + fine-tune"),
         "text": ("syntax text", "D", "syntax-masked text + fine-tune"),
         "both": ("CLIPA schedule", "*", "CLIPA schedule (fewest tokens + fine-tune)"),
         "fullres": ("full res, same FLOPs", "P", "full resolution only, same FLOPs as CLIPA")}
# Verdict words when the interval excludes zero above / below, or includes it.
_SIZE, _WIN_LOSS = ("shrinks", "grows", "no difference"), ("win", "loss", "tie")
_MASKING = ("masking", "resizing", "tie")
_READINGS = {"top1": "after the fine-tune", "pretrain_top1": "pre-training only"}
_HEADLINE_HEADER = ("seeds", "CLIPA schedule top-1 %", "full resolution top-1 %",
                    "schedule minus full resolution", "outcome",
                    "Welch (each arm's own seed variance)", "rank test: seed pairs won, p")


# ------------------------------------------------------------ the numbers
def factor_names(rows: Sequence[Row]) -> List[str]:
  """The label factors the rows report (``factor_<name>``), in first-seen order."""
  return list(dict.fromkeys(k[len("factor_"):] for row in rows for k in row
                            if k.startswith("factor_")))


def aggregate(rows: Sequence[Row]) -> List[Row]:
  """One row per point: per metric the mean over seeds, ``_n``, ``_min``, ``_max``, ``_sd``."""
  metrics = _METRICS + tuple(p + name for p in ("factor_", "pretrain_factor_")
                             for name in factor_names(rows))
  groups: Dict[str, List[Row]] = {}
  for row in rows:
    groups.setdefault(row["point_id"], []).append(row)
  out = []
  for group in groups.values():
    point = {k: v for k, v in group[0].items() if k not in metrics and k not in _PER_RUN}
    point.update(seeds=sorted(r["seed"] for r in group), n=len(group))
    for metric in metrics:
      values = [r[metric] for r in group if r.get(metric) is not None]
      point[metric] = statistics.fmean(values) if values else None
      point[f"{metric}_n"] = len(values)
      if values:
        point[f"{metric}_min"], point[f"{metric}_max"] = min(values), max(values)
      if len(values) > 1:
        point[f"{metric}_sd"] = statistics.stdev(values)
        point[f"{metric}_spread"] = max(values) - min(values)
    out.append(point)
  return sorted(out, key=lambda r: (r["width"], list(_AXES).index(r["axis"]), -r["image_tokens"],
                                    -r["text_tokens"]))


def pooled_sd(rows: Sequence[Row], metric: str = "top1") -> Tuple[Optional[float], int]:
  """Seed SD of ``metric`` pooled over the points with two or more seeds, and its dof."""
  points = [p for p in aggregate(rows) if f"{metric}_sd" in p]
  squares = sum((p[f"{metric}_n"] - 1) * p[f"{metric}_sd"] ** 2 for p in points)
  dof = sum(p[f"{metric}_n"] - 1 for p in points)
  return (math.sqrt(squares / dof), dof) if dof else (None, 0)


def t_quantile(dof: float, level: float = 0.95) -> float:
  """Two-sided Student-t quantile."""
  return float(stats.t.ppf(0.5 + level / 2, dof))


class Noise:
  """95% intervals of differences of means, from the pooled seed SD."""

  def __init__(self, rows: Sequence[Row], metric: str = "top1"):
    self.sd, self.dof = pooled_sd(rows, metric)
    self.t = t_quantile(self.dof) if self.dof else None

  def half_width(self, *counts: int) -> Optional[float]:
    """Half-width for a sum/difference of means over ``counts`` seeds each (None: unknown)."""
    if self.sd is None or not all(counts):
      return None
    return self.t * self.sd * math.sqrt(sum(1.0 / n for n in counts))


def welch_interval(terms: Sequence[Tuple[float, int]]) -> Optional[Tuple[float, float]]:
  """95% half-width and Welch dof of a sum of means, each term (variance, seed dof)."""
  variance = sum(v for v, _ in terms)
  if variance <= 0:
    return None
  dof = variance ** 2 / sum(v ** 2 / d for v, d in terms)
  return t_quantile(dof) * math.sqrt(variance), dof


def _welch_terms(points: Sequence[Row], metric: str) -> Optional[List[Tuple[float, int]]]:
  if any(f"{metric}_sd" not in p for p in points):
    return None  # a point with one seed has no variance of its own
  return [(p[f"{metric}_sd"] ** 2 / p[f"{metric}_n"], p[f"{metric}_n"] - 1) for p in points]


def _verdict(difference: float, ci: Optional[float], words: Sequence[str]) -> Optional[str]:
  if ci is None:
    return None
  return words[0] if difference > ci else words[1] if difference < -ci else words[2]


def _welch(terms: Optional[Sequence[Tuple[float, int]]], difference: float,
           words: Sequence[str]) -> Optional[Row]:
  interval = welch_interval(terms) if terms else None
  return None if interval is None else {"ci": interval[0], "dof": interval[1],
                                        "verdict": _verdict(difference, interval[0], words)}


def _difference(a: Row, b: Row, noise: Noise, words: Sequence[str]) -> Row:
  """Top-1 of point ``a`` minus ``b``: 'difference', 'ci' (pooled), 'verdict', 'welch'."""
  diff, ci = a["top1"] - b["top1"], noise.half_width(a["top1_n"], b["top1_n"])
  return {"difference": diff, "ci": ci, "verdict": _verdict(diff, ci, words),
          "welch": _welch(_welch_terms((a, b), "top1"), diff, words)}


def rank_test(a: Sequence[float], b: Sequence[float]) -> Optional[Row]:
  """Two-sided Mann-Whitney test of two arms' seeds: ``{'p', 'wins', 'pairs'}`` or None."""
  if len(a) < 2 or len(b) < 2:
    return None
  result = stats.mannwhitneyu(a, b, alternative="two-sided")
  return {"p": float(result.pvalue), "wins": float(result.statistic), "pairs": len(a) * len(b)}


def drops(rows: Sequence[Row], metric: str = "top1") -> List[Row]:
  """Per reduced setting, ``'drop'``: its width's full-token mean minus its own, ``'ci'``."""
  agg, noise = aggregate(rows), Noise(rows, metric)
  full = {r["width"]: r for r in agg if r["axis"] == "full" and r[metric] is not None}
  out = []
  for r in agg:
    base = full.get(r["width"])
    if r["axis"] in ("full", "fullres") or base is None or r[metric] is None:
      continue
    n = (base[f"{metric}_n"], r[f"{metric}_n"])
    out.append({"width": r["width"], "axis": r["axis"], "image_tokens": r["image_tokens"],
                "text_tokens": r["text_tokens"], "drop": base[metric] - r[metric],
                "ci": noise.half_width(*n), "n": n,
                "welch_terms": _welch_terms((base, r), metric),
                "compute_ratio": r["total_flops"] / base["total_flops"]})
  return out


def trend(by_width: Dict[int, Row], noise: Noise) -> Row:
  """Does one setting's drop (width -> ``drops`` row) shrink from smallest to largest width?
  'shrinks' / 'grows' / 'no difference', 'no cost' (no width loses beyond noise), 'unknown'."""
  widths = sorted(by_width)
  if len(widths) < 2:
    return {"verdict": "unknown", "difference": None, "ci": None, "monotone": False,
            "costs": False, "welch": None}
  small, large = by_width[widths[0]], by_width[widths[-1]]
  difference = small["drop"] - large["drop"]
  ci = noise.half_width(*small["n"], *large["n"])
  values = [by_width[w]["drop"] for w in widths]
  costs = any(d["ci"] is None or d["drop"] > d["ci"] for d in by_width.values())
  verdict = "unknown" if ci is None else _verdict(difference, ci, _SIZE) if costs else "no cost"
  terms = (small["welch_terms"] + large["welch_terms"]
           if small.get("welch_terms") and large.get("welch_terms") else None)
  return {"verdict": verdict, "difference": difference, "ci": ci, "costs": costs,
          "monotone": all(b < a for a, b in zip(values, values[1:])),
          "welch": _welch(terms, difference, _SIZE)}


def size_trends(rows: Sequence[Row], metric: str = "top1") -> List[Row]:
  """``trend`` of resizing per image-token count: smallest width vs largest, then each step."""
  noise = Noise(rows, metric)
  image = [d for d in drops(rows, metric) if d["axis"] == "image"]
  out = []
  for tokens in sorted({d["image_tokens"] for d in image}, reverse=True):
    by_width = {d["width"]: d for d in image if d["image_tokens"] == tokens}
    widths = sorted(by_width)
    pairs = [(widths[0], widths[-1])] + (list(zip(widths, widths[1:])) if len(widths) > 2 else [])
    for a, b in pairs:
      part = {w: by_width[w] for w in widths if a <= w <= b}
      out.append({**trend(part, noise), "image_tokens": tokens, "widths": (a, b)})
  return out


def _pair_up(rows: Sequence[Row], axis: str, others: Sequence[str], pick) -> List[Tuple[Row, Row]]:
  """(point of ``axis``, ``pick(point, its width's points of ``others``)``), top-1 known."""
  agg = [r for r in aggregate(rows) if r["top1"] is not None]
  return [(p, q) for p in agg if p["axis"] == axis for q in [
      pick(p, [r for r in agg if r["width"] == p["width"] and r["axis"] in others])] if q]


def masking_pairs(rows: Sequence[Row]) -> List[Row]:
  """Random masking against resizing at the same tokens, per width (``_difference``)."""
  noise, tokens = Noise(rows), lambda r: (r["image_tokens"], r["text_tokens"])
  same = lambda m, found: next((r for r in found if tokens(r) == tokens(m)), None)
  return [{"width": m["width"], "masked": m, "resized": r, **_difference(m, r, noise, _MASKING)}
          for m, r in _pair_up(rows, "mask", ("image", "full"), same)]


def headline_pairs(rows: Sequence[Row]) -> List[Row]:
  """Per width, the CLIPA schedule against its compute-matched full-resolution run."""
  noise = Noise(rows)
  # The schedule is the fewest-token run; prefer CLIPA's own recipe (both reduced).
  fewest = lambda _, found: min(found, key=lambda r: (r["axis"] != "both", r["total_flops"]),
                                default=None)
  seeds = lambda p: [r["top1"] for r in rows if r["point_id"] == p["point_id"]
                     and r.get("top1") is not None]
  return [{"width": base["width"], "schedule": sched, "fullres": base, "rank": rank_test(
      seeds(sched), seeds(base)), **_difference(sched, base, noise, _WIN_LOSS)}
          for base, sched in _pair_up(rows, "fullres", ("both", "image"), fewest)]


def compute_matched_wins(rows: Sequence[Row]) -> List[Tuple[Row, Row]]:
  """(wider token-reduced, narrower full-token) points: higher top-1 for less compute."""
  agg = aggregate(rows)
  wins = [(r, small) for small in agg if small["axis"] == "full" and small["top1"] is not None
          for r in agg if r["width"] > small["width"] and r["axis"] not in ("full", "fullres")
          and r["total_flops"] < small["total_flops"] and r["top1"] is not None
          and r["top1"] > small["top1"]]
  return sorted(wins, key=lambda w: w[1]["top1"] - w[0]["top1"])


def noise_summary(rows: Sequence[Row], metric: str = "top1") -> Row:
  """Pooled SD, largest seed spread, eval images and binomial sampling error at the mean."""
  agg = aggregate(rows)
  sd, dof = pooled_sd(rows, metric)
  spreads = [r[f"{metric}_spread"] for r in agg if f"{metric}_spread" in r]
  examples = min((r["eval_examples"] for r in agg if r.get("eval_examples")), default=None)
  values = [r[metric] for r in agg if r[metric] is not None]
  mean = statistics.fmean(values) if values else None
  return {"sd": sd, "dof": dof, "largest_spread": max(spreads, default=None),
          "eval_images": examples, "sampling_error": None if examples is None or mean is None
          else math.sqrt(mean * (1 - mean) / examples)}


# ------------------------------------------------------------ tables
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
  """The lines of a Markdown table (cells through ``str``)."""
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
      "| " + " | ".join(map(str, row)) + " |" for row in rows]


def _pct(value: Optional[float]) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def _interval(change: Optional[float], ci: Optional[float]) -> str:
  """'+1.2 ± 0.8' in points ('-' when unknown; never '-0.0')."""
  if change is None:
    return "-"
  points = 0.0 if abs(100 * change) < 0.05 else 100 * change
  return f"{points:+.1f}" + ("" if ci is None else f" ± {100 * ci:.1f}")


def _with_range(r: Row, metric: str) -> str:
  """Mean of the seeds, '(min–max)' after it with two or more."""
  if r.get(f"{metric}_n", 0) > 1:
    return f"{_pct(r[metric])} ({_pct(r[f'{metric}_min'])}–{_pct(r[f'{metric}_max'])})"
  return _pct(r.get(metric))


def _welch_cell(welch: Optional[Row]) -> str:
  return "-" if not welch else (
      f"± {100 * welch['ci']:.1f} ({welch['dof']:.1f} dof): {welch['verdict']}")


def _headline_cells(pair: Row) -> List[str]:
  """``_HEADLINE_HEADER``'s cells of one ``headline_pairs`` pair."""
  rank = pair["rank"]
  return [",".join(map(str, pair["schedule"]["seeds"])), _with_range(pair["schedule"], "top1"),
          _with_range(pair["fullres"], "top1"), _interval(pair["difference"], pair["ci"]),
          pair["verdict"] or "unknown", _welch_cell(pair["welch"]),
          "-" if not rank else f"{rank['wins']:g} of {rank['pairs']}, p = {rank['p']:.3g}"]


def format_table(rows: Sequence[Row]) -> str:
  """Markdown table of the points (``aggregate``): mean (min–max over seeds)."""
  factors = factor_names(rows)
  header = ("width", "params (M)", "setting", "pre-train px", "image tokens", "text tokens",
            "compute (TFLOPs)", "seeds", "pre-train top-1 %", "top-1 %", "top-5 %",
            *(f"{name} %" for name in factors), "minutes")
  cells = []
  for r in aggregate(rows):
    px = f"{r['image_size']}" + (
        f" (only, {r['pretrain_samples']:,} samples)" if r["axis"] == "fullres" else
        f" ({100 * r['mask_ratio']:g}% masked)" if r.get("mask_ratio") else "")
    cells.append([
        r["width"], "-" if r.get("num_params") is None else f"{r['num_params'] / 1e6:.2f}",
        _AXES[r["axis"]][0], px, r["image_tokens"],
        f"{r['text_tokens']}{' (syntax)' if r['axis'] in ('text', 'both') else ''}",
        f"{r['total_flops'] / 1e12:.3g}", ",".join(map(str, r["seeds"])),
        _with_range(r, "pretrain_top1"), _with_range(r, "top1"), _pct(r["top5"]),
        *(_pct(r.get(f"factor_{name}")) for name in factors),
        "-" if r.get("wall_seconds") is None else f"{r['wall_seconds'] / 60:.1f}"])
  return "\n".join(markdown_table(header, cells))


def analysis(rows: Sequence[Row]) -> str:
  """The tests of ``results.md``, one Markdown table each (a test without rows left out)."""
  metrics = ["top1"] + (["pretrain_top1"] if any(r.get("pretrain_top1") is not None
                                                 for r in rows) else [])
  changes = {m: {(d["width"], d["axis"], d["image_tokens"], d["text_tokens"]): d
                 for d in drops(rows, m)} for m in metrics}
  full = {r["width"]: r for r in aggregate(rows)
          if r["axis"] == "full" and r["top1"] is not None}
  sections = (  # (title, header, rows)
      ("Change against each width's full-token run",
       ("width", "setting", "image tokens", "text tokens", "compute vs full",
        *(f"change {_READINGS[m]}" for m in metrics)),
       [[k[0], _AXES[k[1]][0], k[2], k[3], f"{d['compute_ratio']:.2f}",
         *(_interval(-changes[m][k]["drop"], changes[m][k]["ci"]) if k in changes[m] else "-"
           for m in metrics)] for k, d in changes["top1"].items()]),
      ("Does the loss shrink with model size?",
       ("top-1", "image tokens", "widths", "difference (pooled 95%)", "verdict",
        "every step smaller", "Welch (each point's own seed variance)"),
       [[_READINGS[m], t["image_tokens"], f"{t['widths'][0]} vs {t['widths'][1]}",
         _interval(t["difference"], t["ci"]), t["verdict"], "yes" if t["monotone"] else "no",
         _welch_cell(t["welch"])] for m in metrics for t in size_trends(rows, m)]),
      ("Random masking against resizing, same tokens",
       ("width", "image tokens", "masked top-1 %", "resized top-1 %", "masked minus resized",
        "better beyond the noise"),
       [[p["width"], m["image_tokens"],
         f"{_pct(m['top1'])} ({100 * m['mask_ratio']:g}% of {m['image_size']} px)",
         f"{_pct(p['resized']['top1'])} ({p['resized']['image_size']} px)",
         _interval(p["difference"], p["ci"]), p["verdict"] or "unknown"]
        for p in masking_pairs(rows) for m in [p["masked"]]]),
      ("Headline: the CLIPA schedule against full resolution, same FLOPs",
       ("width", "schedule tokens (image / text)", "compute (TFLOPs)",
        "samples: schedule / full res", *_HEADLINE_HEADER, "full tokens top-1 % (compute x)"),
       [[p["width"], f"{s['image_tokens']} / {s['text_tokens']}",
         f"{f['total_flops'] / 1e12:.3g}",
         f"{s['pretrain_samples'] + s['finetune_samples']:,} / {f['pretrain_samples']:,}",
         *_headline_cells(p), "-" if (ref := full.get(p["width"])) is None else
         f"{_pct(ref['top1'])} ({ref['total_flops'] / s['total_flops']:.1f}x)"]
        for p in headline_pairs(rows) for s, f in [(p["schedule"], p["fullres"])]]),
      ("Noise",
       ("pooled seed SD (points)", "degrees of freedom", "largest seed spread (points)",
        "eval images", "sampling error at the mean top-1 (points)"),
       [[_pct(n["sd"]), n["dof"], _pct(n["largest_spread"]), n["eval_images"] or "-",
         _pct(n["sampling_error"])] for n in [noise_summary(rows)]]),
      ("Wider and token-reduced against narrower at full tokens, less compute",  # top 3
       ("wider run", "top-1 %", "narrower full-token run", "top-1 %", "compute saved"),
       [[f"width {r['width']}, {r['image_tokens']} / {r['text_tokens']} tokens",
         _pct(r["top1"]), f"width {small['width']}", _pct(small["top1"]),
         f"{small['total_flops'] / r['total_flops']:.1f}x"]
        for r, small in compute_matched_wins(rows)[:3]]
       or [["none", "-", "-", "-", "-"]]))
  return "\n".join(line for title, header, cells in sections if cells
                   for line in (f"## {title}", "", *markdown_table(header, cells), ""))


def markdown_report(rows: Sequence[Row], settings: Optional[Row] = None,
                    command: str = "") -> str:
  """``results.md``: command, settings, the table of points, figure links and ``analysis``."""
  return "\n".join([
      "# Inverse-scaling study: results", "", *([f"Command: `{command}`", ""] if command else []),
      *(["Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())), ""]
        if settings else []), format_table(rows), "",
      "Figures: [accuracy vs image tokens](accuracy_vs_tokens.png), "
      "[accuracy vs training FLOPs](accuracy_vs_flops.png)", "", analysis(rows)])


def _write(out_dir: str, name: str, text: str) -> str:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, name), "w") as f:
    f.write(text)
  return os.path.join(out_dir, name)


def budget_report(records: Sequence[Row], out_dir: str) -> Dict[str, str]:
  """The headline pair of studies (results.json records) at other budgets, side by side."""
  budgets = []
  for record in records:
    pairs = headline_pairs(record["runs"])
    if not pairs:
      raise ValueError(f"no headline pair in the study run by {record.get('command')!r}; "
                       "run it with its CLIPA schedule and full-resolution points.")
    settings = record.get("settings") or {}
    budgets += [{**pair, "steps": (settings.get("pretrain_steps"), settings.get("finetune_steps")),
                 "command": record.get("command", "")} for pair in pairs]
  budgets.sort(key=lambda b: (b["width"], b["fullres"]["total_flops"], b["steps"][0] or 0))
  table = markdown_table(
      ("width", "pre-train + fine-tune steps", "compute (TFLOPs)", *_HEADLINE_HEADER),
      [[b["width"], "?" if None in b["steps"] else f"{b['steps'][0]} + {b['steps'][1]}",
        f"{b['schedule']['total_flops'] / 1e12:.3g}", *_headline_cells(b)] for b in budgets])
  return {"markdown": _write(out_dir, "headline_vs_budget.md", "\n".join([
      "# The headline at several budgets", "", *table, "",
      "Figure: [the headline at several budgets](headline_vs_budget.png)", "",
      "Commands:", "", *(f"    {b['command']}" for b in budgets), ""])),
          "png": plot_budgets(budgets, os.path.join(out_dir, "headline_vs_budget.png"))}


# ------------------------------------------------------------ figures
def _figure(points: Sequence[Row], **subplots):
  """``(figure, axes, {width: colour})`` for a figure of aggregated ``points``."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  widths = sorted({p["width"] for p in points})
  colours = dict(zip(widths, plt.get_cmap("viridis")(
      [0.1 + 0.75 * i / max(1, len(widths) - 1) for i in range(len(widths))])))
  return (*plt.subplots(**subplots), colours)


def _errorbar(ax, points: Sequence[Row], x, metric: str, **style):
  """Means of ``metric`` (%) at ``x(point)``, the bars spanning the seeds."""
  ax.errorbar([x(p) for p in points], [100 * p[metric] for p in points], capsize=3,
              yerr=[[100 * (p[metric] - p[f"{metric}_min"]) for p in points],
                    [100 * (p[f"{metric}_max"] - p[metric]) for p in points]], **style)


def _save(fig, path: str, command: str = "", rect=(0, 0, 1, 1)) -> str:
  """Prints ``command`` along the bottom, lays ``fig`` out in ``rect`` and writes ``path``."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  if command:
    fig.text(0.5, 0.01, command, ha="center", va="bottom", fontsize=8, family="monospace")
  fig.tight_layout(rect=rect)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _flops_axis(ax, ticks: Sequence[float] = ()) -> None:
  """A log x axis of training TFLOPs: plain numbers (1, 2, 5, ...), or exactly ``ticks``."""
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
      lambda v, _: f"{v:g}" if f"{v:g}"[0] in "2345" else ""))
  ax.set_xlabel("training compute, all stages (TFLOPs, analytic)")
  ax.grid(True, which="both", alpha=0.3)
  if ticks:
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([], minor=True)


def plot_tokens(rows: Sequence[Row], path: str, command: str = "") -> str:
  """Accuracy vs pre-training image tokens, after the fine-tune and before, per width."""
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  agg = aggregate(rows)
  fig, axes, colours = _figure(agg, ncols=2, figsize=(12, 4.8))
  full_text = max(r["text_tokens"] for r in agg)
  for ax, (metric, title) in zip(axes, (("top1", "after the full-resolution fine-tune"), (
      "pretrain_top1", "pre-training only (evaluated at its own tokens)"))):
    for i, (width, colour) in enumerate(colours.items()):
      mine = [r for r in agg if r["width"] == width and r[metric] is not None]
      line = sorted((r for r in mine if r["axis"] in ("full", "image")
                     and r["text_tokens"] == full_text), key=lambda r: r["image_tokens"])
      offset = 1 + 0.02 * (i - (len(colours) - 1) / 2)  # keep error bars apart
      if line:
        params = "" if line[0].get("num_params") is None else (
            f" ({line[0]['num_params'] / 1e6:.1f} M params)")
        _errorbar(ax, line, lambda r: r["image_tokens"] * offset, metric, fmt="-o",
                  color=colour, markersize=7, markeredgecolor="black",
                  label=f"width {width}{params}")
      masked = [r for r in mine if r["axis"] == "mask"]
      if masked:  # (an empty errorbar would still move the y limits)
        _errorbar(ax, masked, lambda r: r["image_tokens"] * offset * 1.04, metric, fmt="s",
                  color=colour, markerfacecolor="white", markersize=8, markeredgewidth=2)
    ticks = sorted({r["image_tokens"] for r in agg})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="image tokens in pre-training (patches after resizing / masking)",
           ylabel="zero-shot top-1, held-out demo split (%)", title=title)
    ax.grid(True, alpha=0.3)
  handles = axes[0].get_legend_handles_labels()[0] + ([
      Line2D([], [], ls="", marker="s", markerfacecolor="white", color="grey", markeredgewidth=2,
             label="random masking at full resolution")] if any(r["axis"] == "mask" for r in agg)
      else [])
  lift = 0.04 if command else 0.0
  if handles:
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
               bbox_to_anchor=(0.5, lift))
  else:  # e.g. an --only subset of the headline pair: no resized or masked run to draw
    fig.text(0.5, 0.5, "no full-token, resized or masked runs among these results",
             ha="center", va="center", fontsize=12)
  fig.suptitle("Accuracy vs image tokens, one line per model size (mean of seeds; bars: "
               "min–max over seeds)")
  return _save(fig, path, command, rect=(0, 0.1 + lift, 1, 0.95))


def plot_flops(rows: Sequence[Row], path: str, command: str = "") -> str:
  """Accuracy vs training FLOPs: a colour per width, a marker per setting."""
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  agg = [r for r in aggregate(rows) if r["top1"] is not None]
  fig, ax, colours = _figure(agg, figsize=(9, 5.6))
  tflops = lambda r: r["total_flops"] / 1e12
  for width, colour in colours.items():
    mine = [r for r in agg if r["width"] == width]
    line = sorted((r for r in mine if r["axis"] in ("full", "image")), key=tflops)
    if len(line) > 1:
      ax.plot([tflops(r) for r in line], [100 * r["top1"] for r in line], "-", color=colour,
              alpha=0.6)
    for r in mine:
      _errorbar(ax, [r], tflops, "top1", fmt=_AXES[r["axis"]][1], color=colour,
                markersize=12 if r["axis"] == "both" else 8, markeredgecolor="black")
    pair = [next((r for r in mine if r["axis"] == axis), None) for axis in ("fullres", "both")]
    if None not in pair:
      ax.plot([tflops(r) for r in pair], [100 * r["top1"] for r in pair], "-", color="crimson",
              lw=2.5, alpha=0.8, zorder=0)
  _flops_axis(ax)
  ax.set_ylabel("zero-shot top-1 after training (%)")
  present = {r["axis"] for r in agg}
  handles = [Line2D([], [], color=c, lw=2, label=f"width {w}") for w, c in colours.items()] + [
      Line2D([], [], ls="", marker=marker, color="grey", markersize=10 if axis == "both" else 7,
             label=label) for axis, (_, marker, label) in _AXES.items() if axis in present]
  if "fullres" in present:
    handles.append(Line2D([], [], color="crimson", lw=2.5, label="headline pair (same FLOPs)"))
  ax.legend(handles=handles, loc="best", fontsize=8)
  ax.set_title("Accuracy vs training FLOPs (mean of seeds; bars: min–max over seeds)")
  return _save(fig, path, command, rect=(0, 0.04 if command else 0, 1, 1))


def plot_budgets(budgets: Sequence[Row], path: str) -> str:
  """Top-1 against training FLOPs of ``budget_report``'s pairs: both arms' lines per width."""
  fig, ax, _ = _figure([b["fullres"] for b in budgets], figsize=(7.5, 5))
  widths = sorted({b["width"] for b in budgets})
  for key, label, colour, marker in (
      ("schedule", "CLIPA schedule (fewest tokens + fine-tune)", "tab:blue", "*"),
      ("fullres", "full resolution only, same FLOPs", "crimson", "o")):
    for width, style in zip(widths, ("-", "--", ":", "-.") * len(widths)):
      _errorbar(ax, [b[key] for b in budgets if b["width"] == width],
                lambda r: r["total_flops"] / 1e12, "top1", fmt=marker, ls=style, color=colour,
                markersize=11 if marker == "*" else 7, label=f"{label}, width {width}",
                markerfacecolor=colour if width == widths[0] else "white")
  _flops_axis(ax, sorted({round(b["fullres"]["total_flops"] / 1e12, 2) for b in budgets}))
  ax.set_ylabel("zero-shot top-1 (%)")
  ax.legend(loc="best", fontsize=8)
  ax.set_title("The headline at several budgets (mean of seeds; bars: min–max)")
  return _save(fig, path)


# ------------------------------------------------------------ entry points
def write_report(rows: Sequence[Row], out_dir: str, settings: Optional[Row] = None,
                 command: str = "") -> Dict[str, str]:
  """Writes results.json, results.md and both figures of ``rows``; returns their paths."""
  if not rows:
    raise ValueError("no result rows; run the study (run.py) before writing the report.")
  record = {"settings": settings, "command": command, "runs": list(rows)}
  png = lambda name: os.path.join(out_dir, f"accuracy_vs_{name}.png")
  return {"json": _write(out_dir, "results.json", json.dumps(record, indent=1, sort_keys=True)),
          "markdown": _write(out_dir, "results.md", markdown_report(rows, settings, command)),
          "tokens_png": plot_tokens(rows, png("tokens"), command),
          "flops_png": plot_flops(rows, png("flops"), command)}


def _load(folder: str) -> Row:
  path = os.path.join(folder, "results.json")
  if not os.path.exists(path):
    raise ValueError(f"{path} does not exist; run experiments/inverse_scaling/run.py first.")
  with open(path) as f:
    return json.load(f)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Redraws a study's report from its results.json (or, --budgets, the headline per budget)."""
  p = argparse.ArgumentParser(description="Rewrite results.md and the PNGs from results.json.")
  p.add_argument("--out", default="runs/inverse_scaling", help="the study's output folder")
  p.add_argument("--budgets", nargs="+", metavar="DIR", help="instead: the headline pair of "
                 "these studies (one per budget) into OUT/headline_vs_budget.{md,png}")
  args = p.parse_args(argv)
  try:
    if args.budgets:
      paths = budget_report([_load(folder) for folder in args.budgets], args.out)
    else:
      record = _load(args.out)
      paths = write_report(record["runs"], args.out, record.get("settings"),
                           record.get("command", ""))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n".join(paths.values()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
