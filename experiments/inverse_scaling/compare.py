r"""The inverse-scaling study's numbers, from run.py's rows: points, noise and the tests.

Every function returns data (means, intervals, verdicts); ``plot.py`` writes it as
``results.md``'s tables and the figures. A difference of two means gets a Student-t
interval from the seed SD pooled over the points, and a Welch interval from each point's
own seed variance (a small model's seeds can spread far more than a large one's); the
headline also a rank test (seeds that stall or learn form two clusters).
"""

import math
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from scipy import stats

Row = Dict[str, Any]
_METRICS = ("top1", "top5", "pretrain_top1", "pretrain_top5", "wall_seconds", "cpu_seconds")
_PER_RUN = ("seed", "run_id", "pretrain_seconds", "finetune_seconds")  # differ between seeds
AXES = ("full", "image", "mask", "text", "both", "fullres")  # run.py's settings, table order
# Verdict words when the interval excludes zero above / below, or includes it.
_SIZE, _WIN_LOSS = ("shrinks", "grows", "no difference"), ("win", "loss", "tie")
_MASKING = ("masking", "resizing", "tie")


def factor_names(rows: Sequence[Row]) -> List[str]:
  """The label factors the rows report (``factor_<name>``), in first-seen order."""
  return list(dict.fromkeys(k[len("factor_"):] for row in rows for k in row
                            if k.startswith("factor_")))


def aggregate(rows: Sequence[Row]) -> List[Row]:
  """One row per point (width x token setting): ``seeds``, ``n`` and per metric its mean
  over the seeds, ``_n``, ``_min``, ``_max`` and (two or more seeds) ``_sd``, ``_spread``."""
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
  return sorted(out, key=lambda r: (r["width"], AXES.index(r["axis"]), -r["image_tokens"],
                                    -r["text_tokens"]))


def pooled_sd(rows: Sequence[Row], metric: str = "top1") -> Tuple[Optional[float], int]:
  """Seed SD of ``metric`` pooled over the points with two or more seeds, and its dof
  ((None, 0) when there is none)."""
  groups: Dict[str, List[float]] = {}
  for row in rows:
    if row.get(metric) is not None:
      groups.setdefault(row["point_id"], []).append(row[metric])
  squares = sum(sum((v - statistics.fmean(vs)) ** 2 for v in vs) for vs in groups.values())
  dof = sum(len(vs) - 1 for vs in groups.values())
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
  """95% half-width and Welch-Satterthwaite dof of a sum/difference of independent means;
  ``terms``: per mean (seed variance / seeds, seed dof). None without any spread."""
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
  """Two-sided Mann-Whitney test of two arms' seeds: ``{'p', 'wins', 'pairs'}`` (exact p
  without ties; a tie is half a win), None with fewer than 2 seeds an arm."""
  if len(a) < 2 or len(b) < 2:
    return None
  result = stats.mannwhitneyu(a, b, alternative="two-sided")
  return {"p": float(result.pvalue), "wins": float(result.statistic), "pairs": len(a) * len(b)}


# ------------------------------------------------------------ the tests
def drops(rows: Sequence[Row], metric: str = "top1") -> List[Row]:
  """Per reduced setting, ``'drop'``: its width's full-token mean minus its own, with
  ``'ci'`` (pooled 95%), ``'n'``, ``'welch_terms'`` and ``'compute_ratio'``."""
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
  """Does the drop of one setting (width -> ``drops`` row) shrink from smallest to largest width?

  ``'verdict'``: 'shrinks' / 'grows' beyond the 95% interval, 'no difference', 'no cost'
  (no width loses beyond its interval) or 'unknown'; also ``'difference'``, ``'ci'``,
  ``'costs'``, ``'monotone'`` (every wider model drops less) and ``'welch'``.
  """
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
  """``trend`` of resizing per reduced image-token count (largest first): smallest width
  against largest, then each size step (three or more widths); with ``'image_tokens'``,
  ``'widths'``."""
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


def masking_pairs(rows: Sequence[Row]) -> List[Row]:
  """Random masking against resizing at the same tokens, per width: ``'masked'``,
  ``'resized'`` and their ``_difference``."""
  agg, noise = aggregate(rows), Noise(rows)
  out = []
  for m in (r for r in agg if r["axis"] == "mask" and r["top1"] is not None):
    resized = [r for r in agg if r["width"] == m["width"] and r["axis"] in ("image", "full")
               and r["image_tokens"] == m["image_tokens"] and r["text_tokens"] == m["text_tokens"]
               and r["top1"] is not None]
    if resized:
      out.append({"width": m["width"], "masked": m, "resized": resized[0],
                  **_difference(m, resized[0], noise, _MASKING)})
  return out


def headline_pairs(rows: Sequence[Row]) -> List[Row]:
  """Per width, the CLIPA schedule against its compute-matched full-resolution run:
  ``'schedule'``, ``'fullres'``, their ``_difference`` (win / loss / tie) and ``'rank'``."""
  agg, noise = aggregate(rows), Noise(rows)
  pairs = []
  for base in (r for r in agg if r["axis"] == "fullres" and r["top1"] is not None):
    schedule = [r for r in agg if r["width"] == base["width"] and r["axis"] in ("both", "image")
                and r["top1"] is not None]
    if not schedule:
      continue
    # The schedule is the fewest-token run; prefer CLIPA's own recipe (both reduced).
    sched = min(schedule, key=lambda r: (r["axis"] != "both", r["total_flops"]))
    seeds = [[r["top1"] for r in rows if r["point_id"] == p["point_id"]
              and r.get("top1") is not None] for p in (sched, base)]
    pairs.append({"width": base["width"], "schedule": sched, "fullres": base,
                  **_difference(sched, base, noise, _WIN_LOSS), "rank": rank_test(*seeds)})
  return pairs


def compute_matched_wins(rows: Sequence[Row]) -> List[Tuple[Row, Row]]:
  """``(wider token-reduced point, narrower full-token point)`` pairs where the wider
  one reaches a higher top-1 with less compute, the largest gain first."""
  agg = aggregate(rows)
  wins = [(r, small) for small in agg if small["axis"] == "full" and small["top1"] is not None
          for r in agg if r["width"] > small["width"] and r["axis"] not in ("full", "fullres")
          and r["total_flops"] < small["total_flops"] and r["top1"] is not None
          and r["top1"] > small["top1"]]
  return sorted(wins, key=lambda w: w[1]["top1"] - w[0]["top1"])


def noise_summary(rows: Sequence[Row], metric: str = "top1") -> Row:
  """``'sd'``, ``'dof'`` (``pooled_sd``), ``'largest_spread'`` (of a point's seeds),
  ``'eval_images'`` and ``'sampling_error'`` (binomial SD at the mean); None: unknown."""
  agg = aggregate(rows)
  sd, dof = pooled_sd(rows, metric)
  spreads = [r[f"{metric}_spread"] for r in agg if f"{metric}_spread" in r]
  examples = min((r["eval_examples"] for r in agg if r.get("eval_examples")), default=None)
  values = [r[metric] for r in agg if r[metric] is not None]
  mean = statistics.fmean(values) if values else None
  return {"sd": sd, "dof": dof, "largest_spread": max(spreads, default=None),
          "eval_images": examples, "sampling_error": None if examples is None or mean is None
          else math.sqrt(mean * (1 - mean) / examples)}
