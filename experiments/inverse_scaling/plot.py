r"""Tables, intervals and figures of the inverse-scaling study (run.py's rows).

Writes, into the study's output folder:

* ``results.json``: the settings and one row per run (as run.py made it);
* ``results.md``: the points (seeds' mean and range), then the tests as
  tables: each token reduction's change against full tokens, whether that
  change shrinks with model size, masking against resizing, the headline
  pair, the noise, compute-matched wins. Every ``±`` is a 95% interval. The
  interpretation is written by hand in the study's README, next to these
  numbers;
* ``accuracy_vs_tokens.png`` and ``accuracy_vs_flops.png``.

Noise: the seed standard deviation is pooled over all points with two or
more seeds (``pooled_sd``) and gives a difference of two means a Student-t
interval. Seeds of a small model can spread far more than a large one's, so
each comparison is also given a Welch interval (each point's own seed
variance), and the headline a rank test (seeds that stall or learn form two
clusters, which a standard deviation describes badly).

Regenerate everything from an existing ``results.json``::

  .venv/bin/python experiments/inverse_scaling/plot.py --out runs/inverse_scaling
"""

import argparse
import json
import math
import os
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

_METRICS = ("top1", "top5", "pretrain_top1", "pretrain_top5", "wall_seconds", "cpu_seconds")
# Per-factor top-1 (how often the predicted class has the right colour, shape,
# letter pair, ...): ``factor_<name>`` after the last stage, ``pretrain_factor_<name>``.
_FACTOR_PREFIXES = ("factor_", "pretrain_factor_")
# Rows written before factors were generic (demo_shapes only).
_LEGACY_KEYS = {"colour_acc": "factor_colour", "shape_acc": "factor_shape",
                "pretrain_colour_acc": "pretrain_factor_colour",
                "pretrain_shape_acc": "pretrain_factor_shape"}
# Per-run fields that differ between the seeds of one point.
_PER_RUN = ("seed", "run_id", "breakdown_top1", "pretrain_seconds", "finetune_seconds")


def _point_id(row: Dict[str, Any]) -> str:
  """The row's point (run id without the seed); rows made before point ids existed too."""
  if row.get("point_id"):
    return row["point_id"]
  return row["run_id"].rsplit("_s", 1)[0]


def _normalise(row: Dict[str, Any]) -> Dict[str, Any]:
  """The row with legacy colour/shape keys under their ``factor_`` names."""
  return {_LEGACY_KEYS.get(k, k): v for k, v in row.items()}


def factor_names(rows: Sequence[Dict[str, Any]]) -> List[str]:
  """The label factors the rows report (``factor_<name>``), in first-seen order."""
  names = (k[len("factor_"):] for row in rows for k in _normalise(row)
           if k.startswith("factor_"))
  return list(dict.fromkeys(names))


def aggregate(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One row per point (width x token setting) of run.py's rows: metrics over the seeds.

  Sorted by width, then setting and descending tokens; with ``point_id``,
  ``seeds``, ``n`` and per metric its mean (``<metric>``), ``_n``, ``_min``,
  ``_max`` and, with two or more seeds, ``_sd`` and ``_spread`` (max - min).
  """
  rows = [_normalise(row) for row in rows]
  metrics = _METRICS + tuple(prefix + name for prefix in _FACTOR_PREFIXES
                             for name in factor_names(rows))
  groups: Dict[str, List[Dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault(_point_id(row), []).append(row)
  out = []
  for key, group in groups.items():
    merged = {k: v for k, v in group[0].items() if k not in metrics and k not in _PER_RUN}
    merged["point_id"] = key
    merged["seeds"] = sorted(r["seed"] for r in group)
    merged["n"] = len(group)
    for metric in metrics:
      values = [r[metric] for r in group if r.get(metric) is not None]
      merged[metric] = statistics.fmean(values) if values else None
      merged[f"{metric}_n"] = len(values)
      if values:
        merged[f"{metric}_min"], merged[f"{metric}_max"] = min(values), max(values)
      if len(values) > 1:
        merged[f"{metric}_sd"] = statistics.stdev(values)
        merged[f"{metric}_spread"] = max(values) - min(values)
    out.append(merged)
  order = {axis: i for i, axis in enumerate(("full", "image", "mask", "text", "both",
                                             "fullres"))}
  out.sort(key=lambda r: (r["width"], order.get(r["axis"], 9), -r["image_tokens"],
                          -r["text_tokens"]))
  return out


def pooled_sd(rows: Sequence[Dict[str, Any]], metric: str = "top1"
              ) -> Tuple[Optional[float], int]:
  """Seed standard deviation of ``metric`` pooled over points, and its degrees of freedom.

  Every point with two or more seeds contributes its squared deviations from
  its own mean; None (0 dof) when no point has two seeds.
  """
  groups: Dict[str, List[float]] = {}
  for row in rows:
    if row.get(metric) is not None:
      groups.setdefault(_point_id(row), []).append(row[metric])
  squares = sum(sum((v - statistics.fmean(vs)) ** 2 for v in vs) for vs in groups.values())
  dof = sum(len(vs) - 1 for vs in groups.values())
  return (math.sqrt(squares / dof), dof) if dof else (None, 0)


def t_quantile(dof: int, level: float = 0.95) -> float:
  """Two-sided Student-t quantile (scipy when present, else a close approximation)."""
  try:
    from scipy import stats  # pylint: disable=import-outside-toplevel
    return float(stats.t.ppf(0.5 + level / 2, dof))
  except ImportError:  # Cornish-Fisher expansion around the normal quantile
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    return z + (z ** 3 + z) / (4 * dof) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * dof ** 2)


class Noise:
  """95% intervals of means and differences of means, from the pooled seed SD."""

  def __init__(self, rows: Sequence[Dict[str, Any]], metric: str = "top1"):
    self.sd, self.dof = pooled_sd(rows, metric)
    self.t = t_quantile(self.dof) if self.dof else None

  @property
  def known(self) -> bool:
    return self.sd is not None

  def half_width(self, *counts: int) -> Optional[float]:
    """Half-width of the interval of a sum/difference of means over ``counts`` seeds each."""
    if not self.known or not all(counts):
      return None
    return self.t * self.sd * math.sqrt(sum(1.0 / n for n in counts))


def _pct(value: Optional[float]) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def _interval(change: Optional[float], ci: Optional[float]) -> str:
  """'+1.2 ± 0.8' in points ('-' when unknown; never '-0.0')."""
  if change is None:
    return "-"
  points = 0.0 if abs(100 * change) < 0.05 else 100 * change
  return f"{points:+.1f}" + ("" if ci is None else f" ± {100 * ci:.1f}")


def _welch_cell(welch: Optional[Dict[str, Any]]) -> str:
  return "-" if not welch else f"± {100 * welch['ci']:.1f} ({welch['dof']:.1f} dof): {welch['verdict']}"


def _rank_cell(rank: Optional[Dict[str, Any]]) -> str:
  return "-" if not rank else f"{rank['wins']:g} of {rank['pairs']}, p = {rank['p']:.3g}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _with_range(r: Dict[str, Any], metric: str) -> str:
  if r.get(metric) is None:
    return "-"
  if r.get(f"{metric}_n", 0) > 1:
    return f"{_pct(r[metric])} ({_pct(r[f'{metric}_min'])}–{_pct(r[f'{metric}_max'])})"
  return _pct(r[metric])


_AXIS_LABELS = {"full": "full tokens", "image": "resize", "mask": "random mask",
                "text": "syntax text", "both": "CLIPA schedule", "fullres": "full res, same FLOPs"}


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
  """Markdown table of the points (``aggregate``): mean (min–max over seeds)."""
  header = ("width", "params (M)", "setting", "pre-train px", "image tokens", "text tokens",
            "compute (TFLOPs)", "seeds", "pre-train top-1 %", "top-1 %", "top-5 %")
  factors = factor_names(rows)
  header += tuple(f"{name} %" for name in factors) + ("minutes",)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in aggregate(rows):
    params = r.get("num_params")
    if r["axis"] == "fullres":
      px = f"{r['image_size']} (only, {r['pretrain_samples']:,} samples)"
    else:
      px = str(r["image_size"]) + (f" ({100 * r['mask_ratio']:g}% masked)"
                                   if r.get("mask_ratio") else "")
    lines.append("| " + " | ".join([
        str(r["width"]), "-" if params is None else f"{params / 1e6:.2f}",
        _AXIS_LABELS.get(r["axis"], r["axis"]), px, str(r["image_tokens"]),
        f"{r['text_tokens']}{' (syntax)' if r['axis'] in ('text', 'both') else ''}",
        f"{r['total_flops'] / 1e12:.3g}", ",".join(map(str, r["seeds"])),
        _with_range(r, "pretrain_top1"), _with_range(r, "top1"), _pct(r["top5"]),
        *(_pct(r.get(f"factor_{name}")) for name in factors),
        "-" if r.get("wall_seconds") is None else f"{r['wall_seconds'] / 60:.1f}"]) + " |")
  return "\n".join(lines)


def drops(rows: Sequence[Dict[str, Any]], metric: str = "top1") -> List[Dict[str, Any]]:
  """Accuracy lost against each width's full-token run, per reduced setting.

  Rows ``{'width', 'axis', 'image_tokens', 'text_tokens', 'drop' (full-token
  minus this setting's mean), 'ci' (95%, None without seed repeats), 'n',
  'welch', 'compute_ratio'}``; the full-resolution baseline is left out.
  """
  agg = aggregate(rows)
  noise = Noise(rows, metric)
  full = {r["width"]: r for r in agg if r["axis"] == "full"}
  out = []
  for r in agg:
    base = full.get(r["width"])
    if (r["axis"] in ("full", "fullres") or base is None or r[metric] is None
        or base[metric] is None):
      continue
    out.append({"width": r["width"], "axis": r["axis"], "image_tokens": r["image_tokens"],
                "text_tokens": r["text_tokens"], "drop": base[metric] - r[metric],
                "ci": noise.half_width(base[f"{metric}_n"], r[f"{metric}_n"]),
                "n": (base[f"{metric}_n"], r[f"{metric}_n"]),
                "welch": _welch_terms(base, r, metric=metric),
                "compute_ratio": r["total_flops"] / base["total_flops"]})
  return out


def _welch_terms(*points: Dict[str, Any], metric: str) -> Optional[List[Tuple[float, int]]]:
  """(variance of the mean, dof) of each point from its own seeds; None if one has < 2."""
  if any(f"{metric}_sd" not in p for p in points):
    return None
  return [(p[f"{metric}_sd"] ** 2 / p[f"{metric}_n"], p[f"{metric}_n"] - 1) for p in points]


def welch_interval(terms: Sequence[Tuple[float, int]]) -> Optional[Tuple[float, float]]:
  """95% half-width and Welch-Satterthwaite dof of a sum/difference of independent means.

  Args:
    terms: per mean, (its variance = seed variance / seeds, its seed dof).

  Returns:
    ``(half_width, dof)``, or None when every seed variance is zero (no
    spread to judge by).
  """
  variance = sum(v for v, _ in terms)
  if variance <= 0:
    return None
  dof = variance ** 2 / sum(v ** 2 / d for v, d in terms)
  return t_quantile(dof) * math.sqrt(variance), dof


def noise_level(rows: Sequence[Dict[str, Any]], metric: str = "top1") -> Optional[float]:
  """Largest seed-to-seed difference of ``metric`` over points (None: no repeats)."""
  spreads = [r[f"{metric}_spread"] for r in aggregate(rows) if f"{metric}_spread" in r]
  return max(spreads) if spreads else None


def trend(by_width: Dict[int, Dict[str, Any]], noise: Noise) -> Dict[str, Any]:
  """Does the drop (one reduced setting; width -> ``drops`` row) shrink with width?

  Returns ``{'verdict', 'difference', 'ci', 'monotone', 'costs', 'welch'}``,
  smallest against largest width: 'shrinks' / 'grows' (beyond the 95%
  interval), 'no difference', 'no cost' (no width loses beyond its interval:
  nothing to shrink) or 'unknown' (one width, no seed repeats). ``monotone``:
  every wider model's drop is below the next narrower one's; ``welch``: the
  same with each point's own seed variance (``{'ci', 'dof', 'verdict'}``).
  """
  widths = sorted(by_width)
  if len(widths) < 2:
    return {"verdict": "unknown", "difference": None, "ci": None, "monotone": False,
            "costs": False}
  small, large = by_width[widths[0]], by_width[widths[-1]]
  difference = small["drop"] - large["drop"]
  ci = noise.half_width(*small["n"], *large["n"])
  values = [by_width[w]["drop"] for w in widths]
  monotone = all(b < a for a, b in zip(values, values[1:]))
  costs = any(d["ci"] is None or d["drop"] > d["ci"] for d in by_width.values())
  welch = None
  if small.get("welch") and large.get("welch"):
    interval = welch_interval(small["welch"] + large["welch"])
    if interval:
      welch = {"ci": interval[0], "dof": interval[1],
               "verdict": _direction(difference, interval[0])}
  if ci is None:
    verdict = "unknown"
  elif not costs:
    verdict = "no cost"
  else:
    verdict = _direction(difference, ci)
  return {"verdict": verdict, "difference": difference, "ci": ci, "monotone": monotone,
          "costs": costs, "welch": welch}


def _direction(difference: float, ci: float) -> str:
  """'shrinks' / 'grows' when the interval excludes zero, else 'no difference'."""
  return "shrinks" if difference > ci else "grows" if difference < -ci else "no difference"


def _win_loss(difference: float, ci: float) -> str:
  """The schedule's 'win' / 'loss' / 'tie' against full resolution (``_direction``'s test)."""
  return {"shrinks": "win", "grows": "loss"}.get(_direction(difference, ci), "tie")


def headline_pairs(rows, noise: Noise) -> List[Dict[str, Any]]:
  """Per headline width: the CLIPA schedule and its compute-matched full-resolution run.

  ``{'width', 'schedule', 'fullres'`` (``aggregate`` rows), ``'difference'``
  (schedule minus full-resolution top-1), ``'ci'`` (pooled 95%), ``'verdict'``
  ('win' / 'loss' / 'tie'; None: unknown noise), ``'welch'`` and ``'rank'``
  (None with fewer than 2 seeds an arm)``}``.
  """
  agg = aggregate(rows)
  pairs = []
  for base in (r for r in agg if r["axis"] == "fullres" and r["top1"] is not None):
    schedule = [r for r in agg if r["width"] == base["width"] and r["axis"] in ("both", "image")
                and r["top1"] is not None]
    if not schedule:
      continue
    # The schedule is the fewest-token run; prefer CLIPA's own recipe (both reduced).
    sched = min(schedule, key=lambda r: (r["axis"] != "both", r["total_flops"]))
    diff = sched["top1"] - base["top1"]
    ci = noise.half_width(sched["top1_n"], base["top1_n"])
    verdict = None if ci is None else _win_loss(diff, ci)
    terms = _welch_terms(sched, base, metric="top1")
    interval = welch_interval(terms) if terms else None
    welch = None if interval is None else {
        "ci": interval[0], "dof": interval[1], "verdict": _win_loss(diff, interval[0])}
    rank = rank_test(_seed_values(rows, sched["point_id"]), _seed_values(rows, base["point_id"]))
    pairs.append({"width": base["width"], "schedule": sched, "fullres": base,
                  "difference": diff, "ci": ci, "verdict": verdict, "welch": welch,
                  "rank": rank})
  return pairs


def _seed_values(rows, point_id: str, metric: str = "top1") -> List[float]:
  """The per-seed values of one point."""
  return [r[metric] for r in rows if _point_id(r) == point_id and r.get(metric) is not None]


def rank_test(a: Sequence[float], b: Sequence[float]) -> Optional[Dict[str, Any]]:
  """Two-sided Mann-Whitney test of ``a`` against ``b`` (seeds of two arms).

  When some seeds of an arm stall and others learn, it asks how often a seed
  of one arm beats a seed of the other. Returns ``{'p', 'wins', 'pairs'}``
  (p exact without ties; a tie counts half a win), or None with < 2 seeds an arm.
  """
  if len(a) < 2 or len(b) < 2:
    return None
  from scipy import stats  # pylint: disable=import-outside-toplevel
  result = stats.mannwhitneyu(a, b, alternative="two-sided")
  return {"p": float(result.pvalue), "wins": float(result.statistic), "pairs": len(a) * len(b)}


def size_trends(rows: Sequence[Dict[str, Any]], metric: str = "top1"
                ) -> List[Dict[str, Any]]:
  """Does the loss from fewer image tokens (resizing) shrink with model size?

  For every reduced image-token count: the smallest width against the largest
  (``trend``), then, with three or more widths, each size step.

  Returns:
    ``trend`` results with ``'image_tokens'`` and ``'widths'`` (the pair compared) added.
  """
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


def masking_pairs(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Random masking against resizing at the same image and text tokens, per width.

  Returns:
    ``{'width', 'masked', 'resized', 'difference' (masked - resized top-1), 'ci',
    'verdict'}`` ('masking' / 'resizing' wins beyond the noise, 'tie' or None).
  """
  agg, noise = aggregate(rows), Noise(rows)
  out = []
  for m in (r for r in agg if r["axis"] == "mask" and r["top1"] is not None):
    resized = [r for r in agg if r["width"] == m["width"] and r["axis"] in ("image", "full")
               and r["image_tokens"] == m["image_tokens"] and r["text_tokens"] == m["text_tokens"]
               and r["top1"] is not None]
    if resized:
      diff, ci = m["top1"] - resized[0]["top1"], noise.half_width(m["top1_n"], resized[0]["top1_n"])
      verdict = None if ci is None else {"shrinks": "masking", "grows": "resizing"}.get(
          _direction(diff, ci), "tie")
      out.append({"width": m["width"], "masked": m, "resized": resized[0], "difference": diff,
                  "ci": ci, "verdict": verdict})
  return out


def compute_matched_wins(rows: Sequence[Dict[str, Any]]) -> List[Tuple[Dict, Dict]]:
  """``(wider token-reduced point, narrower full-token point)`` pairs where the wider
  one reaches a higher top-1 with less compute, the largest gain first."""
  agg = aggregate(rows)
  wins = [(r, small) for small in agg if small["axis"] == "full" and small["top1"] is not None
          for r in agg if r["width"] > small["width"] and r["axis"] not in ("full", "fullres")
          and r["total_flops"] < small["total_flops"] and r["top1"] is not None
          and r["top1"] > small["top1"]]
  return sorted(wins, key=lambda w: w[1]["top1"] - w[0]["top1"])


# ------------------------------------------------------------------ report
def _headline_rows(pairs: Sequence[Dict[str, Any]]) -> List[List[Any]]:
  """Table cells of ``headline_pairs``: seeds, both arms, difference, Welch and rank test."""
  return [[",".join(map(str, p["schedule"]["seeds"])), _with_range(p["schedule"], "top1"),
           _with_range(p["fullres"], "top1"), _interval(p["difference"], p["ci"]),
           p["verdict"] or "unknown", _welch_cell(p["welch"]), _rank_cell(p["rank"])]
          for p in pairs]


_HEADLINE_HEADER = ("seeds", "CLIPA schedule top-1 %", "full resolution top-1 %",
                    "schedule minus full resolution", "outcome",
                    "Welch (each arm's own seed variance)", "rank test: seed pairs won, p")
_METRIC_NAMES = {"top1": "after the fine-tune", "pretrain_top1": "pre-training only"}


def analysis(rows: Sequence[Dict[str, Any]]) -> str:
  """The tests of ``results.md`` as Markdown tables (numbers only)."""
  agg, noise = aggregate(rows), Noise(rows)
  out: List[str] = []
  metrics = ["top1"] + (["pretrain_top1"] if any(r.get("pretrain_top1") is not None
                                                 for r in agg) else [])
  changes = {m: {(d["width"], d["axis"], d["image_tokens"], d["text_tokens"]): d
                 for d in drops(rows, m)} for m in metrics}
  if changes["top1"]:
    out += ["## Change against each width's full-token run", "",
            "Top-1 points, reduced setting minus full tokens (± 95%, pooled seed SD).", ""]
    out += _markdown_table(
        ("width", "setting", "image tokens", "text tokens", "compute vs full")
        + tuple(f"change {_METRIC_NAMES[m]}" for m in metrics),
        [[k[0], _AXIS_LABELS.get(k[1], k[1]), k[2], k[3], f"{d['compute_ratio']:.2f}"]
         + [_interval(-changes[m][k]["drop"], changes[m][k]["ci"]) if k in changes[m] else "-"
            for m in metrics] for k, d in changes["top1"].items()]) + [""]
  trends = [(m, t) for m in metrics for t in size_trends(rows, m)]
  if trends:
    out += ["## Does the loss shrink with model size?", "",
            "Drop at the smaller width minus drop at the larger (points): positive = the larger "
            "model loses less. Verdict: shrinks / grows beyond the interval, no difference, no "
            "cost (no width loses beyond the noise), unknown (no seed repeats).", ""]
    out += _markdown_table(
        ("top-1", "image tokens", "widths", "difference (pooled 95%)", "verdict",
         "every step smaller", "Welch (each point's own seed variance)"),
        [[_METRIC_NAMES[m], t["image_tokens"], f"{t['widths'][0]} vs {t['widths'][1]}",
          _interval(t["difference"], t["ci"]), t["verdict"], "yes" if t["monotone"] else "no",
          _welch_cell(t["welch"])] for m, t in trends]) + [""]
  masking = masking_pairs(rows)
  if masking:
    out += ["## Random masking against resizing, same tokens", ""]
    out += _markdown_table(
        ("width", "image tokens", "masked top-1 %", "resized top-1 %",
         "masked minus resized", "better beyond the noise"),
        [[p["width"], p["masked"]["image_tokens"],
          f"{_pct(p['masked']['top1'])} ({100 * p['masked']['mask_ratio']:g}% of "
          f"{p['masked']['image_size']} px)", f"{_pct(p['resized']['top1'])} "
          f"({p['resized']['image_size']} px)", _interval(p["difference"], p["ci"]),
          p["verdict"] or "unknown"] for p in masking]) + [""]
  pairs = headline_pairs(rows, noise)
  if pairs:
    out += ["## Headline: the CLIPA schedule against full resolution, same FLOPs", ""]
    full = {r["width"]: r for r in agg if r["axis"] == "full" and r["top1"] is not None}
    out += _markdown_table(
        ("width", "schedule tokens (image / text)", "compute (TFLOPs)",
         "samples: schedule / full res") + _HEADLINE_HEADER + ("full tokens top-1 % (compute x)",),
        [[p["width"], f"{p['schedule']['image_tokens']} / {p['schedule']['text_tokens']}",
          f"{p['fullres']['total_flops'] / 1e12:.3g}",
          f"{p['schedule']['pretrain_samples'] + p['schedule']['finetune_samples']:,} / "
          f"{p['fullres']['pretrain_samples']:,}", *cells,
          "-" if p["width"] not in full else f"{_pct(full[p['width']]['top1'])} "
          f"({full[p['width']]['total_flops'] / p['schedule']['total_flops']:.1f}x)"]
         for p, cells in zip(pairs, _headline_rows(pairs))]) + [""]
  examples = [r["eval_examples"] for r in agg if r.get("eval_examples")]
  top1 = [r["top1"] for r in agg if r["top1"] is not None]
  sampling = (None if not examples or not top1 else
              (statistics.fmean(top1) * (1 - statistics.fmean(top1)) / min(examples)) ** 0.5)
  out += ["## Noise", ""] + _markdown_table(
      ("pooled seed SD (points)", "degrees of freedom", "largest seed spread (points)",
       "eval images", "sampling error at the mean top-1 (points)"),
      [[_pct(noise.sd), noise.dof, _pct(noise_level(rows)), min(examples) if examples else "-",
        _pct(sampling)]]) + [""]
  wins = compute_matched_wins(rows)
  out += ["## Wider and token-reduced against narrower at full tokens, less compute", ""]
  out += _markdown_table(
      ("wider run", "top-1 %", "narrower full-token run", "top-1 %", "compute saved"),
      [[f"width {r['width']}, {r['image_tokens']} / {r['text_tokens']} tokens", _pct(r["top1"]),
        f"width {small['width']}", _pct(small["top1"]),
        f"{small['total_flops'] / r['total_flops']:.1f}x"] for r, small in wins[:3]]
      or [["none"] + ["-"] * 4]) + [""]
  return "\n".join(out)


def markdown_report(rows: Sequence[Dict[str, Any]], settings: Optional[Dict[str, Any]] = None,
                    command: str = "") -> str:
  """``results.md``: command, settings line, the table of points and ``analysis``."""
  lines = ["# Inverse-scaling study: results", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  if settings:
    lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())), ""]
  lines += [format_table(rows), "",
            "Accuracies are the mean over the seeds, (min–max) in brackets. Compute is all "
            "stages' training FLOPs (clipa_t5x.flops: 3x the forward matmul FLOPs, per sample x "
            "samples). The per-factor columns (e.g. pair %): how often the predicted class has "
            "the right factor of the label (demo_glyphs: pair = the one-stroke pair E/F, O/Q, "
            "P/R, C/G, U/V; demo_shapes: colour, shape). Figures: `accuracy_vs_tokens.png`, "
            "`accuracy_vs_flops.png`.", "", analysis(rows)]
  return "\n".join(lines)


def budget_report(records: Sequence[Dict[str, Any]], out_dir: str) -> Dict[str, str]:
  """The headline pair at several budgets: ``OUT/headline_vs_budget.{md,png}``.

  ``records``: ``results.json`` contents of studies that differ in their budget,
  each with a headline pair. Returns ``{'markdown', 'png'}`` paths; ValueError
  when a record has no headline pair.
  """
  budgets = []
  for record in records:
    rows = record["runs"]
    pairs = headline_pairs(rows, Noise(rows))
    if not pairs:
      raise ValueError(f"no headline pair in the study run by {record.get('command')!r}; "
                       "run it with its CLIPA schedule and full-resolution points.")
    settings = record.get("settings") or {}
    budgets += [{**pair, "steps": (settings.get("pretrain_steps"), settings.get("finetune_steps")),
                 "command": record.get("command", "")} for pair in pairs]
  budgets.sort(key=lambda b: (b["width"], b["fullres"]["total_flops"], b["steps"][0] or 0))
  lines = ["# The headline at several budgets", "",
           "The CLIPA schedule (fewest tokens, then the full-resolution fine-tune) against "
           "training at full resolution only for the same FLOPs; mean over the seeds "
           "(min–max), 95% intervals from each budget's pooled seed SD.", ""]
  lines += _markdown_table(
      ("width", "pre-train + fine-tune steps", "compute (TFLOPs)") + _HEADLINE_HEADER,
      [[b["width"], "?" if None in b["steps"] else f"{b['steps'][0]} + {b['steps'][1]}",
        f"{b['schedule']['total_flops'] / 1e12:.3g}", *cells]
       for b, cells in zip(budgets, _headline_rows(budgets))])
  lines += ["", "Commands:", ""] + [f"    {b['command']}" for b in budgets] + [""]
  paths = {"markdown": os.path.join(out_dir, "headline_vs_budget.md"),
           "png": os.path.join(out_dir, "headline_vs_budget.png")}
  os.makedirs(out_dir, exist_ok=True)
  with open(paths["markdown"], "w") as f:
    f.write("\n".join(lines))
  _plot_budgets(budgets, paths["png"])
  return paths


# ------------------------------------------------------------------ plots
def _plot_setup(rows: Sequence[Dict[str, Any]]):
  """``(pyplot, aggregated rows, widths, {width: colour})`` for a figure of ``rows``.

  Raises:
    ValueError: when there are no rows.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  agg = aggregate(rows)
  if not agg:
    raise ValueError("no result rows to plot; run the study first.")
  widths = sorted({r["width"] for r in agg})
  colours = dict(zip(widths, plt.get_cmap("viridis")(
      [0.1 + 0.75 * i / max(1, len(widths) - 1) for i in range(len(widths))])))
  return plt, agg, widths, colours


def _yerr(r: Dict[str, Any], metric: str):
  """Asymmetric error bar spanning the seeds (points), or None for one seed."""
  if r.get(f"{metric}_n", 0) < 2:
    return None
  return [[100 * (r[metric] - r[f"{metric}_min"])], [100 * (r[f"{metric}_max"] - r[metric])]]


def _label_params(r: Dict[str, Any]) -> str:
  params = r.get("num_params")
  return f"width {r['width']}" + ("" if params is None else f" ({params / 1e6:.1f} M params)")


def plot_tokens(rows: Sequence[Dict[str, Any]], path: str, command: str = "") -> str:
  """Accuracy vs pre-training image tokens, one line per model size; returns ``path``.

  Left: after the full-resolution fine-tune; right: pre-training only (at its
  own resolution). Lines join the resized runs at full text length (filled
  markers); random masking at full resolution is a hollow square at its kept
  token count. Error bars span the seeds.
  """
  plt, agg, widths, colours = _plot_setup(rows)
  full_text = max(r["text_tokens"] for r in agg)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
  panels = (("top1", "after the full-resolution fine-tune"),
            ("pretrain_top1", "pre-training only (evaluated at its own tokens)"))
  for ax, (metric, title) in zip(axes, panels):
    for i, width in enumerate(widths):
      mine = [r for r in agg if r["width"] == width and r[metric] is not None]
      line = sorted((r for r in mine if r["axis"] in ("full", "image")
                     and r["text_tokens"] == full_text), key=lambda r: r["image_tokens"])
      offset = 1 + 0.02 * (i - (len(widths) - 1) / 2)  # keep error bars apart
      if line:
        ax.errorbar([r["image_tokens"] * offset for r in line], [100 * r[metric] for r in line],
                    yerr=None if any(_yerr(r, metric) is None for r in line) else [
                        [_yerr(r, metric)[0][0] for r in line],
                        [_yerr(r, metric)[1][0] for r in line]],
                    fmt="-o", color=colours[width], capsize=3, markersize=7,
                    markeredgecolor="black", label=_label_params(line[0]))
      for r in mine:
        if r["axis"] == "mask":
          ax.errorbar(r["image_tokens"] * offset * 1.04, 100 * r[metric], yerr=_yerr(r, metric),
                      fmt="s", color=colours[width], markerfacecolor="white", markersize=8,
                      capsize=3, markeredgewidth=2)
    ax.set_xscale("log", base=2)
    ticks = sorted({r["image_tokens"] for r in agg})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("image tokens in pre-training (patches after resizing / masking)")
    ax.set_ylabel("zero-shot top-1, held-out demo split (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  if any(r["axis"] == "mask" for r in agg):
    handles.append(Line2D([], [], ls="", marker="s", markerfacecolor="white", color="grey",
                          markeredgewidth=2, label="random masking at full resolution"))
    labels.append(handles[-1].get_label())
  lift = 0.04 if command else 0.0
  if handles:
    fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 4), frameon=False,
               bbox_to_anchor=(0.5, lift))
  else:  # e.g. an --only subset of the headline pair: no resized or masked run to draw
    fig.text(0.5, 0.5, "no full-token, resized or masked runs among these results",
             ha="center", va="center", fontsize=12)
  fig.suptitle("Accuracy vs image tokens, one line per model size (mean of seeds; bars: "
               "min–max over seeds)")
  if command:
    fig.text(0.5, 0.01, command, ha="center", va="bottom", fontsize=8, family="monospace")
  fig.tight_layout(rect=(0, 0.1 + lift, 1, 0.95))
  return _save(fig, path)


_AXIS_MARKERS = {"full": "o", "image": "^", "mask": "s", "text": "D", "both": "*",
                 "fullres": "P"}


def plot_flops(rows: Sequence[Dict[str, Any]], path: str, command: str = "") -> str:
  """Accuracy (after the last stage) vs analytic training FLOPs; returns ``path``.

  One colour per model size, one marker per setting; the headline pair (CLIPA
  schedule vs full resolution for the same FLOPs) joined by a thick line.
  """
  plt, agg, widths, colours = _plot_setup(rows)
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(9, 5.6))
  for width in widths:
    mine = [r for r in agg if r["width"] == width and r["top1"] is not None]
    line = sorted((r for r in mine if r["axis"] in ("full", "image")),
                  key=lambda r: r["total_flops"])
    if len(line) > 1:
      ax.plot([r["total_flops"] / 1e12 for r in line], [100 * r["top1"] for r in line], "-",
              color=colours[width], alpha=0.6)
    for r in mine:
      ax.errorbar(r["total_flops"] / 1e12, 100 * r["top1"], yerr=_yerr(r, "top1"),
                  fmt=_AXIS_MARKERS.get(r["axis"], "o"), color=colours[width],
                  markersize=12 if r["axis"] == "both" else 8, capsize=3,
                  markeredgecolor="black")
    base = next((r for r in mine if r["axis"] == "fullres"), None)
    sched = [r for r in mine if r["axis"] == "both"]
    if base is not None and sched:
      ax.plot([base["total_flops"] / 1e12, sched[0]["total_flops"] / 1e12],
              [100 * base["top1"], 100 * sched[0]["top1"]], "-", color="crimson", lw=2.5,
              alpha=0.8, zorder=0)
  _log_flops_axis(ax)
  ax.set_ylabel("zero-shot top-1 after training (%)")
  ax.grid(True, which="both", alpha=0.3)
  handles = [Line2D([], [], color=colours[w], lw=2, label=f"width {w}") for w in widths]
  present = {r["axis"] for r in agg}
  for axis in _AXIS_MARKERS:
    if axis in present:
      handles.append(Line2D([], [], ls="", marker=_AXIS_MARKERS[axis], color="grey",
                            markersize=10 if axis == "both" else 7,
                            label={"full": "full tokens + fine-tune",
                                   "image": "fewer image tokens (resize) + fine-tune",
                                   "mask": "random masking + fine-tune",
                                   "text": "syntax-masked text + fine-tune",
                                   "both": "CLIPA schedule (fewest tokens + fine-tune)",
                                   "fullres": "full resolution only, same FLOPs as CLIPA"}[axis]))
  if "fullres" in present:
    handles.append(Line2D([], [], color="crimson", lw=2.5, label="headline pair (same FLOPs)"))
  ax.legend(handles=handles, loc="best", fontsize=8)
  ax.set_title("Accuracy vs training FLOPs (mean of seeds; bars: min–max over seeds)")
  if command:
    fig.text(0.5, 0.01, command, ha="center", va="bottom", fontsize=8, family="monospace")
  fig.tight_layout(rect=(0, 0.04 if command else 0, 1, 1))
  return _save(fig, path)


def _log_flops_axis(ax) -> None:
  """A log x axis of training TFLOPs with plain numbers (1, 2, 5, ...) as ticks."""
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
      lambda v, _: f"{v:g}" if f"{v:g}"[0] in "2345" else ""))
  ax.set_xlabel("training compute, all stages (TFLOPs, analytic)")


def _save(fig, path: str) -> str:
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _plot_budgets(budgets: Sequence[Dict[str, Any]], path: str) -> str:
  """Top-1 against training FLOPs: the schedule's line and full resolution's."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7.5, 5))
  widths = sorted({b["width"] for b in budgets})
  styles = dict(zip(widths, ("-", "--", ":", "-.") * len(widths)))
  for key, label, colour, marker in (("schedule", "CLIPA schedule (fewest tokens + fine-tune)",
                                      "tab:blue", "*"),
                                     ("fullres", "full resolution only, same FLOPs", "crimson",
                                      "o")):
    for width in widths:
      mine = [b[key] for b in budgets if b["width"] == width]
      x = [r["total_flops"] / 1e12 for r in mine]
      bars = [_yerr(r, "top1") or [[0.0], [0.0]] for r in mine]
      ax.errorbar(x, [100 * r["top1"] for r in mine],
                  yerr=[[b[0][0] for b in bars], [b[1][0] for b in bars]],
                  fmt=marker, ls=styles[width], color=colour,
                  markersize=11 if marker == "*" else 7, capsize=3,
                  markerfacecolor=colour if width == widths[0] else "white",
                  label=f"{label}, width {width}")
  _log_flops_axis(ax)
  # Only a few budgets: label exactly their compute.
  ticks = sorted({round(b["fullres"]["total_flops"] / 1e12, 2) for b in budgets})
  ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
  ax.set_xticks([], minor=True)
  ax.set_ylabel("zero-shot top-1 (%)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  ax.set_title("The headline at several budgets (mean of seeds; bars: min–max)")
  fig.tight_layout()
  return _save(fig, path)


def write_report(rows: Sequence[Dict[str, Any]], out_dir: str,
                 settings: Optional[Dict[str, Any]] = None, command: str = "") -> Dict[str, str]:
  """Writes results.json, results.md and the two PNGs of ``rows`` into ``out_dir``.

  ``settings`` and ``command`` (what made the rows) are recorded in both files
  and the command on the figures. Returns ``{'json', 'markdown', 'tokens_png',
  'flops_png'}`` paths.
  """
  if not rows:
    raise ValueError("no result rows; run the study (run.py) before writing the report.")
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, "results.json"),
           "markdown": os.path.join(out_dir, "results.md"),
           "tokens_png": os.path.join(out_dir, "accuracy_vs_tokens.png"),
           "flops_png": os.path.join(out_dir, "accuracy_vs_flops.png")}
  with open(paths["json"], "w") as f:
    json.dump({"settings": settings, "command": command, "runs": list(rows)}, f, indent=1,
              sort_keys=True)
  with open(paths["markdown"], "w") as f:
    f.write(markdown_report(rows, settings, command))
  plot_tokens(rows, paths["tokens_png"], command)
  plot_flops(rows, paths["flops_png"], command)
  return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description="Rewrite results.md and the PNGs from results.json.")
  p.add_argument("--out", default="runs/inverse_scaling", help="the study's output folder")
  p.add_argument("--budgets", nargs="+", metavar="DIR", help="instead: the headline pair of "
                 "these studies (one per budget) into OUT/headline_vs_budget.{md,png}")
  args = p.parse_args(argv)
  if args.budgets:
    records = []
    for folder in args.budgets:
      path = os.path.join(folder, "results.json")
      if not os.path.exists(path):
        print(f"error: {path} does not exist; run that budget's study first.", file=sys.stderr)
        return 2
      with open(path) as f:
        records.append(json.load(f))
    try:
      paths = budget_report(records, args.out)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"{paths['markdown']}\n{paths['png']}")
    return 0
  path = os.path.join(args.out, "results.json")
  if not os.path.exists(path):
    print(f"error: {path} does not exist; run experiments/inverse_scaling/run.py first.",
          file=sys.stderr)
    return 2
  with open(path) as f:
    record = json.load(f)
  paths = write_report(record["runs"], args.out, record.get("settings"),
                       record.get("command", ""))
  print(f"{paths['markdown']}\n{paths['tokens_png']}\n{paths['flops_png']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
