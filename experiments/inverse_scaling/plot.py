r"""Table, generated reading and plots of the inverse-scaling study (run.py's rows).

Writes, into the study's output folder:

* ``results.json``: the settings and one row per run (as run.py made it);
* ``results.md``: a Markdown table (one row per point: seeds' mean and range)
  and the reading, generated from the numbers;
* ``accuracy_vs_tokens.png``: zero-shot top-1 against pre-training image
  tokens, one line per model size, error bars spanning the seeds (left: after
  the full-resolution fine-tune; right: pre-training only); random masking
  as hollow markers;
* ``accuracy_vs_flops.png``: zero-shot top-1 against analytic training FLOPs,
  every point, the headline pair (CLIPA schedule vs full resolution for the
  same FLOPs) joined.

Noise: seeds of one point differ in initialisation, masking and data order.
The seed standard deviation is pooled over all points with two or more seeds
(``pooled_sd``), and a difference of two means gets a 95% t-interval from
it; the reading calls an effect real only when its interval excludes zero.
Seeds of a small model can spread far more than a large one's, which the
pooled SD averages away, so every size verdict is also checked with each
point's own seed variance (a Welch interval) and the reading says whether it
agrees.

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
  """One row per point (width x token setting): metrics over the seeds.

  Args:
    rows: run.py's result rows.

  Returns:
    Rows sorted by width, then descending image and text tokens, with
    ``point_id``, ``seeds``, ``n`` (seeds with a result) and per metric its
    mean (``<metric>``), ``<metric>_min``, ``<metric>_max`` and, with two or
    more seeds, ``<metric>_sd`` (sample standard deviation) and
    ``<metric>_spread`` (max - min).
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


def _pts(value: Optional[float]) -> str:
  return "?" if value is None else f"{100 * value:.1f}"


def _signed(drop: float) -> str:
  """A drop as a signed change in points: a loss of 3.1 points reads '-3.1'."""
  change = -100 * drop
  return f"{0.0 if abs(change) < 0.05 else change:+.1f}"  # never '-0.0'


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

  Returns:
    Rows ``{'width', 'axis', 'image_tokens', 'text_tokens', 'drop', 'ci',
    'compute_ratio'}`` where ``drop`` = full-token ``metric`` - this setting's
    (fractions; seed means), ``ci`` its 95% half-width (None without seed
    repeats) and ``compute_ratio`` = this run's compute / the full run's. The
    full-resolution baseline is not a token reduction and is left out.
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


def _fewest_image_tokens(drop_rows: Sequence[Dict[str, Any]],
                         axis: str = "image") -> Dict[int, Dict[str, Any]]:
  image = [d for d in drop_rows if d["axis"] == axis]
  if not image:
    return {}
  fewest = min(d["image_tokens"] for d in image)
  return {d["width"]: d for d in image if d["image_tokens"] == fewest}


def _interval(value: float, ci: Optional[float]) -> str:
  """'+1.2 ± 0.8' in points (a drop shown as a change), or just the change."""
  return _signed(value) + ("" if ci is None else f" ± {100 * ci:.1f}")


def trend(by_width: Dict[int, Dict[str, Any]], noise: Noise) -> Dict[str, Any]:
  """Do the drops shrink with width? Judged on smallest vs largest width.

  Args:
    by_width: width -> a ``drops`` row (one reduced setting).
    noise: the metric's ``Noise``.

  Returns:
    ``{'verdict', 'difference', 'ci', 'monotone', 'costs'}``: ``verdict`` is
    ``'shrinks'`` (the smallest width's drop exceeds the largest's by more
    than the 95% interval), ``'grows'`` (the reverse), ``'no difference'``
    (the interval includes zero), ``'no cost'`` (fewer tokens cost no width
    accuracy beyond its interval, so the law cannot be tested) or
    ``'unknown'`` (one width, or no seed repeats). ``monotone``: every wider
    model's drop is below the next narrower one's.
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


def _welch_note(result: Dict[str, Any]) -> str:
  """The verdict checked without the pooled SD's equal-noise assumption (Welch)."""
  welch = result.get("welch")
  if not welch or result["verdict"] not in ("shrinks", "grows", "no difference"):
    return ""
  same = welch["verdict"] == result["verdict"]
  outcome = ("the same verdict" if same else
             "which excludes zero" if welch["verdict"] != "no difference" else
             "which does not exclude zero")
  return (f" With each point's own seed variance instead of the pooled one (Welch): "
          f"{100 * result['difference']:+.1f} ± {100 * welch['ci']:.1f} points, "
          f"{welch['dof']:.1f} degrees of freedom, {outcome}.")


def _verdict_sentence(result: Dict[str, Any], what: str, widths: Sequence[int],
                      tokens: Optional[int] = None) -> str:
  """The verdict of ``trend`` in words; ``tokens``: of one reduced setting (default: the fewest)."""
  if tokens is not None and result["verdict"] in ("shrinks", "grows", "no difference", "no cost"):
    return _short_verdict(result, what, widths, tokens)
  small, large = widths[0], widths[-1]
  diff = ("" if result["difference"] is None else
          f" (drop at width {small} minus drop at width {large}: "
          f"{100 * result['difference']:+.1f}"
          + ("" if result["ci"] is None else f" ± {100 * result['ci']:.1f}") + " points)")
  verdict = result["verdict"]
  if verdict == "shrinks":
    steady = ("steadily, at every width step" if result["monotone"] else
              "from the smallest to the largest width (not at every step)")
    return (f"The loss of {what} from fewer image tokens shrinks with model size{diff}, "
            f"{steady}, beyond the seed noise: here the larger models do lose less at fewer "
            "tokens, the shape of CLIPA's Fig. 1/3 (its inverse scaling law).")
  if verdict == "grows":
    return (f"The loss of {what} from fewer image tokens grows with model size{diff}, beyond "
            "the seed noise: the opposite of CLIPA's inverse scaling law.")
  if verdict == "no cost":
    return (f"Fewer image tokens cost no model {what} beyond the seed noise, so this sweep "
            "does not show the inverse scaling law (there is no loss to shrink; it neither "
            "confirms nor refutes it).")
  if verdict == "no difference":
    return (f"The loss of {what} from fewer image tokens does not differ between the "
            f"smallest and the largest model beyond the seed noise{diff}, so this sweep does "
            "not show the inverse scaling law at this scale (it neither confirms nor refutes "
            "it).")
  return (f"No point was repeated with another seed, so the seed noise is unknown and this "
          f"sweep cannot say whether the loss of {what} shrinks with model size{diff}.")


def _short_verdict(result: Dict[str, Any], what: str, widths: Sequence[int],
                   tokens: int) -> str:
  """One sentence: the verdict at ``tokens`` image tokens (a setting other than the fewest)."""
  diff = (f"drop at width {widths[0]} minus drop at width {widths[-1]}: "
          f"{100 * result['difference']:+.1f} ± {100 * result['ci']:.1f} points")
  verdict = result["verdict"]
  if verdict == "shrinks":
    steady = "steadily" if result["monotone"] else "not at every width step"
    return (f"At {tokens} image tokens the loss of {what} shrinks with model size beyond the "
            f"seed noise ({diff}; {steady}): the larger models lose less there.")
  if verdict == "grows":
    return (f"At {tokens} image tokens the loss of {what} grows with model size beyond the "
            f"seed noise ({diff}).")
  if verdict == "no cost":
    return f"At {tokens} image tokens no model loses {what} beyond the seed noise."
  return (f"At {tokens} image tokens the loss of {what} does not differ between the smallest "
          f"and the largest model beyond the seed noise ({diff}).")


def _steps_sentence(by_width: Dict[int, Dict[str, Any]], noise: Noise, what: str) -> str:
  """Size step by size step: does the loss at the fewest tokens shrink, grow or neither?

  The verdict compares only the smallest and the largest model; a law that
  holds from some size on (or a smallest model that gains from fewer tokens)
  shows here.
  """
  widths = sorted(by_width)
  if len(widths) < 3 or not noise.known:
    return ""
  steps = []
  for a, b in zip(widths, widths[1:]):
    difference = by_width[a]["drop"] - by_width[b]["drop"]
    ci = noise.half_width(*by_width[a]["n"], *by_width[b]["n"])
    word = _direction(difference, ci)
    word = "changes within the noise" if word == "no difference" else word
    steps.append(f"from width {a} to {b} it {word} ({100 * difference:+.1f} ± {100 * ci:.1f} "
                 "points)")
  gains = [w for w in widths if by_width[w]["ci"] is not None
           and -by_width[w]["drop"] > by_width[w]["ci"]]
  gain_note = (f" Fewer tokens raise {what} beyond the noise at width "
               + ", ".join(map(str, gains)) + "." if gains else "")
  return f"Size by size, the loss of {what} at the fewest tokens: " + "; ".join(steps) + "." \
      + gain_note


def _image_axis_paragraph(rows, metric: str, label: str) -> List[str]:
  agg = aggregate(rows)
  parts = []
  full = {r["width"]: r for r in agg if r["axis"] == "full"}
  noise = Noise(rows, metric)
  drop_rows = drops(rows, metric)
  fewest = _fewest_image_tokens(drop_rows)
  if not (fewest and full):
    return parts
  full_tokens = next(iter(full.values()))["image_tokens"]
  image = [d for d in drop_rows if d["axis"] == "image"]
  for t in sorted({d["image_tokens"] for d in image}, reverse=True):
    by_width = {d["width"]: d for d in image if d["image_tokens"] == t}
    listing = ", ".join(
        f"{_interval(by_width[w]['drop'], by_width[w]['ci'])} points at width {w} "
        f"({_pct(full[w][metric])}% -> {_pct(full[w][metric] - by_width[w]['drop'])}%)"
        for w in sorted(by_width))
    parts.append(f"{label}: pre-training on {t} instead of {full_tokens} image tokens "
                 f"changes zero-shot top-1 by {listing}.")
  what = "top-1 after the fine-tune" if metric == "top1" else "pre-training-only top-1"
  # The law is about the whole curve: a verdict at every reduced count, the fewest last.
  fewest_tokens = next(iter(fewest.values()))["image_tokens"]
  for t in sorted({d["image_tokens"] for d in image} - {fewest_tokens}, reverse=True):
    by_width = {d["width"]: d for d in image if d["image_tokens"] == t}
    result = trend(by_width, noise)
    parts.append(_verdict_sentence(result, what, sorted(by_width), tokens=t)
                 + _welch_note(result))
  result = trend(fewest, noise)
  parts.append(_verdict_sentence(result, what, sorted(fewest)) + _welch_note(result))
  parts.append(_steps_sentence(fewest, noise, what))
  return [p for p in parts if p]


def reading(rows: Sequence[Dict[str, Any]]) -> str:
  """The study's reading, generated from its rows alone.

  In order: the accuracy lost at each reduced image-token count per width,
  after the fine-tune and after pre-training only, with 95% seed-noise
  intervals; whether that loss shrinks with model size beyond the noise (the
  paper's Fig. 1/3 shape), grows, or neither; resizing against random
  masking at equal tokens; syntax-masked text; the noise and the sampling
  error; the headline (CLIPA schedule vs full resolution for the same FLOPs);
  and whether a wider token-reduced run beats a narrower full-token run with
  less compute. It states what the numbers show, whichever way they go.
  """
  agg = aggregate(rows)
  if not agg:
    return "No finished runs yet."
  parts: List[str] = []
  noise = Noise(rows)
  parts += _image_axis_paragraph(rows, "top1", "After the fine-tune")
  if any(r.get("pretrain_top1") is not None for r in agg):
    parts += _image_axis_paragraph(rows, "pretrain_top1", "Pre-training only")
  parts.append(_masking_sentence(rows, noise))
  text = [d for d in drops(rows) if d["axis"] == "text"]
  if text:
    shortest = min(d["text_tokens"] for d in text)
    by_width = {d["width"]: d for d in text if d["text_tokens"] == shortest}
    parts.append(f"Syntax-reducing the captions to {shortest} tokens changes it by " + ", ".join(
        _interval(by_width[w]["drop"], by_width[w]["ci"]) + (" points" if i == 0 else "")
        + f" at width {w}" for i, w in enumerate(sorted(by_width))) + ".")
  if noise.known:
    parts.append(f"Noise: seeds of one point differ by up to {100 * noise_level(rows):.1f} "
                 f"points of top-1 (pooled seed SD {100 * noise.sd:.1f} points, {noise.dof} "
                 "degrees of freedom; ± values are 95% intervals from it).")
  else:
    parts.append("No point was repeated with another seed, so the seed noise is unknown.")
  examples = [r.get("eval_examples") for r in agg if r.get("eval_examples")]
  mean_top1 = statistics.fmean(r["top1"] for r in agg if r["top1"] is not None)
  if examples:
    se = (mean_top1 * (1 - mean_top1) / min(examples)) ** 0.5
    parts.append(f"(A top-1 near {_pct(mean_top1)}% on {min(examples)} images has a sampling "
                 f"error of about {100 * se:.1f} points, shared by all runs since they use "
                 "the same images.)")
  factor_means = {name: statistics.fmean(values) for name in factor_names(rows)
                  if (values := [r[f"factor_{name}"] for r in agg
                                 if r.get(f"factor_{name}") is not None])}
  if factor_means:
    parts.append("On average the prediction has the right "
                 + " and the right ".join(f"{name} {_pct(mean)}%"
                                          for name, mean in factor_means.items())
                 + " of the time.")
  parts += _headline(rows, noise)
  parts.append(_compute_matched(agg))
  return " ".join(p for p in parts if p)


def _masking_sentence(rows, noise: Noise) -> str:
  """Random masking vs resizing at the same image-token count, per width."""
  agg = aggregate(rows)
  masked = [r for r in agg if r["axis"] == "mask" and r["top1"] is not None]
  pairs = []
  for m in masked:
    resized = [r for r in agg if r["width"] == m["width"] and r["axis"] in ("image", "full")
               and r["image_tokens"] == m["image_tokens"] and r["text_tokens"] == m["text_tokens"]
               and r["top1"] is not None]
    if resized:
      pairs.append((m, resized[0]))
  if not pairs:
    return ""
  m0, r0 = pairs[0]
  listing = ", ".join(
      f"{_pct(m['top1'])}% vs {_pct(r['top1'])}% at width {m['width']} (masking "
      f"{_interval(r['top1'] - m['top1'], noise.half_width(m['top1_n'], r['top1_n']))})"
      for m, r in pairs)
  better = [m["top1"] - r["top1"] for m, r in pairs]
  cis = [noise.half_width(m["top1_n"], r["top1_n"]) for m, r in pairs]
  if all(ci is not None and b < -ci for b, ci in zip(better, cis)):
    verdict = "resizing beats masking at every width beyond the noise, as CLIPA found"
  elif all(ci is not None and b > ci for b, ci in zip(better, cis)):
    verdict = "masking beats resizing at every width beyond the noise, unlike CLIPA's finding"
  else:
    verdict = "not at every width beyond the noise one way or the other"
  return (f"At {m0['image_tokens']} image tokens, random masking ({100 * m0['mask_ratio']:g}% of "
          f"the {m0['image_size']} px patches) against resizing "
          f"({r0['image_size']} px), after the fine-tune: {listing}; {verdict}.")


_HEADLINE_OUTCOMES = {None: "with unknown noise",
                      "win": "the CLIPA schedule wins beyond the seed noise",
                      "loss": "full-resolution training wins beyond the seed noise",
                      "tie": "a tie within the seed noise"}


def _win_loss(difference: float, ci: float) -> str:
  """The schedule's 'win' / 'loss' / 'tie' against full resolution (``_direction``'s test)."""
  return {"shrinks": "win", "grows": "loss"}.get(_direction(difference, ci), "tie")


def headline_pairs(rows, noise: Noise) -> List[Dict[str, Any]]:
  """Per headline width: the CLIPA schedule and its compute-matched full-resolution run.

  Returns:
    Dicts ``{'width', 'schedule', 'fullres', 'difference', 'ci', 'verdict',
    'outcome', 'welch', 'rank'}``: the two ``aggregate`` rows, schedule minus
    full-resolution top-1, its 95% half-width from the pooled SD (None without
    seed repeats), ``'win'`` / ``'loss'`` / ``'tie'`` (None: unknown noise) and
    the same in words, the Welch check (``{'ci', 'dof', 'verdict'}``
    from each arm's own seed variance; None with fewer than 2 seeds an arm)
    and the rank test (``rank_test``; None with fewer than 2 seeds an arm).
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
                  "difference": diff, "ci": ci, "verdict": verdict,
                  "outcome": _HEADLINE_OUTCOMES[verdict], "welch": welch, "rank": rank})
  return pairs


def _headline(rows, noise: Noise) -> List[str]:
  """The CLIPA schedule against full-resolution training for the same FLOPs."""
  agg = aggregate(rows)
  parts = []
  for pair in headline_pairs(rows, noise):
    sched, base, diff, ci = pair["schedule"], pair["fullres"], pair["difference"], pair["ci"]
    outcome = pair["outcome"]
    full = next((r for r in agg if r["width"] == base["width"] and r["axis"] == "full"
                 and r["top1"] is not None), None)
    extra = ("" if full is None else
             f" For reference, the full-token schedule (the same samples at {full['image_size']} "
             f"px, {full['total_flops'] / sched['total_flops']:.1f}x the compute) reaches "
             f"{_pct(full['top1'])}%.")
    parts.append(
        f"Headline, width {base['width']}, same model and evaluation: the CLIPA schedule "
        f"(pre-training at {sched['image_tokens']} image / {sched['text_tokens']} text tokens, "
        f"then the short full-resolution fine-tune; {sched['total_flops'] / 1e12:.3g} TFLOPs) "
        f"reaches {_pct(sched['top1'])}%, training at full resolution only for the same "
        f"compute ({base['total_flops'] / 1e12:.3g} TFLOPs, {base['pretrain_samples']:,} "
        f"samples instead of {sched['pretrain_samples'] + sched['finetune_samples']:,}) "
        f"reaches {_pct(base['top1'])}%: a difference of {_interval(-diff, ci)} points "
        "(schedule minus full resolution), "
        f"{outcome}.{_headline_welch(pair)}{_headline_rank(pair)}{extra}")
  return parts


def _seed_values(rows, point_id: str, metric: str = "top1") -> List[float]:
  """The per-seed values of one point."""
  return [r[metric] for r in rows if _point_id(r) == point_id and r.get(metric) is not None]


def rank_test(a: Sequence[float], b: Sequence[float]) -> Optional[Dict[str, Any]]:
  """Two-sided Mann-Whitney test of ``a`` against ``b`` (seeds of two arms).

  Intervals from a standard deviation suit seeds that scatter around one value;
  when some seeds of an arm stall and others learn (two clusters), the rank
  test asks the plainer question: how often does a seed of one arm beat a seed
  of the other?

  Returns:
    ``{'p', 'wins', 'pairs'}``: the p-value (exact without ties), how many of
    the ``len(a) * len(b)`` seed pairs ``a`` wins (a tie counts half), or None
    with fewer than 2 seeds an arm.
  """
  if len(a) < 2 or len(b) < 2:
    return None
  from scipy import stats  # pylint: disable=import-outside-toplevel
  result = stats.mannwhitneyu(a, b, alternative="two-sided")
  return {"p": float(result.pvalue), "wins": float(result.statistic), "pairs": len(a) * len(b)}


def _headline_rank(pair: Dict[str, Any]) -> str:
  rank = pair.get("rank")
  if not rank:
    return ""
  return (f" Rank test (Mann-Whitney, two-sided): a schedule seed beats a full-resolution seed "
          f"in {rank['wins']:g} of {rank['pairs']} pairs, p = {rank['p']:.3g}.")


def _headline_welch(pair: Dict[str, Any]) -> str:
  """The headline checked with each arm's own seed variance (Welch), in one sentence."""
  welch = pair.get("welch")
  if not welch or pair["verdict"] is None:
    return ""
  if welch["verdict"] == pair["verdict"]:
    agreement = "the same outcome"
  else:
    agreement = {"win": "a win for the schedule", "loss": "a loss for the schedule",
                 "tie": "a tie"}[welch["verdict"]] + ", not the pooled interval's outcome"
  return (f" With each arm's own seed variance instead of the pooled one (Welch): "
          f"{_interval(-pair['difference'], welch['ci'])} points, {welch['dof']:.1f} degrees "
          f"of freedom, {agreement}.")


def _compute_matched(agg: Sequence[Dict[str, Any]]) -> str:
  """Whether some wider, token-reduced run beats a narrower full-token run for less compute."""
  full = sorted((r for r in agg if r["axis"] == "full"), key=lambda r: r["width"])
  wins = []
  for small in full:
    for r in agg:
      if (r["width"] > small["width"] and r["axis"] not in ("full", "fullres")
          and r["total_flops"] < small["total_flops"] and r["top1"] is not None
          and small["top1"] is not None and r["top1"] > small["top1"]):
        wins.append((r, small))
  if not wins:
    return ("No wider token-reduced run beats a narrower full-token run with less compute "
            "(CLIPA's figure shows such wins at scale).")
  r, small = max(wins, key=lambda w: w[0]["top1"] - w[1]["top1"])
  return (f"Compute-matched, width {r['width']} pre-trained on {r['image_tokens']} image / "
          f"{r['text_tokens']} text tokens reaches {_pct(r['top1'])}% with "
          f"{small['total_flops'] / r['total_flops']:.1f}x less compute than width "
          f"{small['width']} on full tokens ({_pct(small['top1'])}%).")


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


# ------------------------------------------------------- headline vs budget
def budget_report(records: Sequence[Dict[str, Any]], out_dir: str) -> Dict[str, str]:
  """The headline pair at several budgets: ``headline_vs_budget.md`` and ``.png``.

  Args:
    records: ``results.json`` contents of studies that differ in their
      budget (``pretrain_steps`` / ``finetune_steps``), each holding a headline
      pair (e.g. run with ``--only <schedule>,<fullres>``).
    out_dir: where the two files go.

  Returns:
    ``{'markdown': path, 'png': path}``.

  Raises:
    ValueError: a record has no headline pair.
  """
  budgets = []
  for record in records:
    rows = record["runs"]
    pairs = headline_pairs(rows, Noise(rows))
    if not pairs:
      raise ValueError(f"no headline pair in the study run by {record.get('command')!r}; "
                       "run it with its CLIPA schedule and full-resolution points.")
    settings = record.get("settings") or {}
    for pair in pairs:
      budgets.append({**pair, "steps": (settings.get("pretrain_steps"),
                                        settings.get("finetune_steps")),
                      "command": record.get("command", "")})
  budgets.sort(key=lambda b: (b["width"], b["fullres"]["total_flops"], b["steps"][0] or 0))
  lines = ["# The headline at several budgets", "",
           "The CLIPA schedule (fewest tokens, then the full-resolution fine-tune) against "
           "training at full resolution only for the same FLOPs; mean over the seeds "
           "(min–max), 95% intervals from each budget's pooled seed SD.", "",
           "| width | pre-train + fine-tune steps | compute (TFLOPs) | seeds | CLIPA schedule "
           "top-1 % | full resolution top-1 % | schedule minus full resolution | outcome | "
           "Welch (each arm's own seed variance) | rank test: seed pairs won, p |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for b in budgets:
    sched, base = b["schedule"], b["fullres"]
    steps = "?" if None in b["steps"] else f"{b['steps'][0]} + {b['steps'][1]}"
    lines.append(
        f"| {b['width']} | {steps} | {sched['total_flops'] / 1e12:.3g} | "
        f"{','.join(map(str, sched['seeds']))} | {_with_range(sched, 'top1')} | "
        f"{_with_range(base, 'top1')} | {_interval(-b['difference'], b['ci'])} | "
        f"{b['outcome']} | " + ("-" if not b["welch"] else
                                f"± {100 * b['welch']['ci']:.1f} ({b['welch']['dof']:.1f} dof): "
                                f"{b['welch']['verdict']}") + " | "
        + ("-" if not b["rank"] else
           f"{b['rank']['wins']:g} of {b['rank']['pairs']}, p = {b['rank']['p']:.3g}") + " |")
  ahead = sum(b["difference"] > 0 for b in budgets)
  lines += ["", f"The schedule's mean is ahead in {ahead} of {len(budgets)} pairs; beyond the "
            f"seed noise at {sum(b['verdict'] == 'win' for b in budgets)}, behind "
            f"it at {sum(b['verdict'] == 'loss' for b in budgets)}.", "",
            "Commands:", ""] + [f"    {b['command']}" for b in budgets] + [""]
  paths = {"markdown": os.path.join(out_dir, "headline_vs_budget.md"),
           "png": os.path.join(out_dir, "headline_vs_budget.png")}
  os.makedirs(out_dir, exist_ok=True)
  with open(paths["markdown"], "w") as f:
    f.write("\n".join(lines))
  _plot_budgets(budgets, paths["png"])
  return paths


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


def markdown_report(rows: Sequence[Dict[str, Any]], settings: Optional[Dict[str, Any]] = None,
                    command: str = "") -> str:
  """``results.md``: command, settings line, table and reading."""
  lines = ["# Inverse-scaling study: results", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  if settings:
    lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())), ""]
  lines += [format_table(rows), "",
            "Accuracies are the mean over the seeds, (min–max) in brackets. Compute is all "
            "stages' training FLOPs (clipa_t5x.flops: 3x the forward matmul FLOPs, per sample x "
            "samples). The per-factor columns (e.g. pair %): how often the predicted class has the right "
            "factor of the label "
            "(demo_glyphs: pair = the one-stroke pair E/F, O/Q, P/R, C/G, U/V; demo_shapes: "
            "colour, shape). Figures: `accuracy_vs_tokens.png`, `accuracy_vs_flops.png`.", "",
            "## Reading", "", reading(rows), ""]
  return "\n".join(lines)


def write_report(rows: Sequence[Dict[str, Any]], out_dir: str,
                 settings: Optional[Dict[str, Any]] = None, command: str = "") -> Dict[str, str]:
  """Writes results.json, results.md and the two PNGs into ``out_dir``.

  Args:
    rows: run.py's result rows (any subset of the study).
    out_dir: output folder.
    settings: the study's settings, recorded in results.json / results.md.
    command: the command that made the rows, printed in results.md and on the
      figures.

  Returns:
    ``{'json', 'markdown', 'tokens_png', 'flops_png'}`` paths.
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
  print("\n" + reading(record["runs"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
