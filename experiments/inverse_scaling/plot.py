r"""Table, reading and plot of the inverse-scaling sweep (run.py's result rows).

Writes, into the sweep's output folder:

* ``results.json``: the settings and one row per run (as run.py made it);
* ``results.md``: a Markdown table (seeds averaged) and the one-paragraph
  reading, computed from the table;
* ``inverse_scaling.png``: zero-shot top-1 against training compute, one colour
  per width, one marker per pre-training token setting; left after the
  full-resolution fine-tune, right after pre-training only.

Regenerate them from an existing ``results.json``::

  .venv/bin/python experiments/inverse_scaling/plot.py --out runs/inverse_scaling
"""

import argparse
import json
import os
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

_METRICS = ("top1", "top5", "pretrain_top1", "pretrain_top5", "colour_acc", "shape_acc",
            "wall_seconds", "cpu_seconds")


def aggregate(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One row per (width, image size, text length): metrics averaged over seeds.

  Args:
    rows: run.py's result rows.

  Returns:
    Rows sorted by width, then descending tokens, with ``seeds`` (the seeds
    averaged), each metric's mean and, for metrics with two or more seeds,
    ``<metric>_spread`` (max - min over the seeds).
  """
  groups: Dict[Tuple[int, int, int], List[Dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault((row["width"], row["image_size"], row["text_length"]), []).append(row)
  out = []
  for key in sorted(groups, key=lambda k: (k[0], -k[1], -k[2])):
    group = groups[key]
    merged = {k: v for k, v in group[0].items() if k not in _METRICS and k not in ("seed",
                                                                                     "run_id")}
    merged["seeds"] = sorted(r["seed"] for r in group)
    for metric in _METRICS:
      values = [r[metric] for r in group if r.get(metric) is not None]
      merged[metric] = statistics.fmean(values) if values else None
      if len(values) > 1:
        merged[f"{metric}_spread"] = max(values) - min(values)
    out.append(merged)
  return out


def _pct(value: Optional[float]) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
  """Markdown table of the aggregated rows (``aggregate``)."""
  header = ("width", "params (M)", "pre-train px", "image tokens", "text tokens",
            "compute (TFLOPs)", "seeds", "pre-train top-1 %", "top-1 %", "top-5 %",
            "colour %", "shape %", "minutes")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in aggregate(rows):
    spread = r.get("top1_spread")
    top1 = _pct(r["top1"]) + (f" ±{100 * spread / 2:.1f}" if spread is not None else "")
    params = r.get("num_params")
    lines.append("| " + " | ".join([
        str(r["width"]), "-" if params is None else f"{params / 1e6:.2f}",
        str(r["image_size"]), str(r["image_tokens"]),
        f"{r['text_tokens']}{' (syntax)' if r['axis'] in ('text', 'both') else ''}",
        f"{r['total_flops'] / 1e12:.2f}", ",".join(map(str, r["seeds"])),
        _pct(r["pretrain_top1"]), top1, _pct(r["top5"]), _pct(r["colour_acc"]),
        _pct(r["shape_acc"]),
        "-" if r.get("wall_seconds") is None else f"{r['wall_seconds'] / 60:.1f}"]) + " |")
  return "\n".join(lines)


def drops(rows: Sequence[Dict[str, Any]], metric: str = "top1") -> List[Dict[str, Any]]:
  """Accuracy lost against each width's full-token run, per reduced setting.

  Returns:
    Rows ``{'width', 'axis', 'image_tokens', 'text_tokens', 'drop', 'compute_ratio'}``
    where ``drop`` = full-token ``metric`` - this setting's (in fractions; seeds
    averaged) and ``compute_ratio`` = this run's compute / the full run's.
  """
  agg = aggregate(rows)
  full = {r["width"]: r for r in agg if r["axis"] == "full"}
  out = []
  for r in agg:
    base = full.get(r["width"])
    if r["axis"] == "full" or base is None or r[metric] is None or base[metric] is None:
      continue
    out.append({"width": r["width"], "axis": r["axis"], "image_tokens": r["image_tokens"],
                "text_tokens": r["text_tokens"], "drop": base[metric] - r[metric],
                "compute_ratio": r["total_flops"] / base["total_flops"]})
  return out


def noise_level(rows: Sequence[Dict[str, Any]], metric: str = "top1") -> Optional[float]:
  """Largest seed-to-seed difference of ``metric`` over repeated settings (None: no repeats)."""
  spreads = [r[f"{metric}_spread"] for r in aggregate(rows) if f"{metric}_spread" in r]
  return max(spreads) if spreads else None


def _fewest_image_tokens(drop_rows: Sequence[Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
  image = [d for d in drop_rows if d["axis"] == "image"]
  if not image:
    return {}
  fewest = min(d["image_tokens"] for d in image)
  return {d["width"]: d for d in image if d["image_tokens"] == fewest}


def _trend(by_width: Dict[int, float], noise: Optional[float]) -> str:
  """'shrinks', 'grows' or 'no clear trend' of a per-width drop, judged against noise."""
  widths = sorted(by_width)
  values = [by_width[w] for w in widths]
  if len(values) < 2:
    return "no clear trend"
  margin = noise or 0.0
  steps = [b - a for a, b in zip(values, values[1:])]
  if all(s < 0 for s in steps) and values[0] - values[-1] > margin:
    return "shrinks"
  if all(s > 0 for s in steps) and values[-1] - values[0] > margin:
    return "grows"
  return "no clear trend"


def _verdict(trend: str, what: str, noise: Optional[float]) -> str:
  margin = "by more than the seed noise" if noise is not None else "(the noise is unknown)"
  if trend == "shrinks":
    return (f"The loss of {what} from fewer image tokens shrinks steadily with width {margin}: "
            "here the larger models do lose less at fewer tokens, as CLIPA's inverse scaling "
            "law says.")
  if trend == "grows":
    return (f"The loss of {what} from fewer image tokens grows steadily with width {margin}, "
            "the opposite of CLIPA's inverse scaling law.")
  qualifier = " by more than the seed noise" if noise is not None else ""
  return (f"The loss of {what} from fewer image tokens does not change steadily with "
          f"width{qualifier}, so this sweep does not show the inverse scaling law at this scale "
          "(it neither confirms nor refutes it).")


def reading(rows: Sequence[Dict[str, Any]]) -> str:
  """One paragraph: do wider models lose less accuracy at fewer tokens?

  Computed from the rows alone: the drop from each width's full-token run to
  its fewest-image-token and shortest-text runs (top-1, and colour accuracy,
  the attribute short runs learn first), the noise (seed repeats and the
  sampling error of the eval set), whether the drops shrink with width by more
  than the noise, and whether a wider model on fewer tokens beats a narrower
  one on full tokens for less compute. So it states what this sweep's numbers
  show, whichever way they go.
  """
  agg = aggregate(rows)
  if not agg:
    return "No finished runs yet."
  parts = []
  full = {r["width"]: r for r in agg if r["axis"] == "full"}
  noise = noise_level(rows)
  colour_noise = noise_level(rows, "colour_acc")
  fewest = _fewest_image_tokens(drops(rows))
  fewest_colour = _fewest_image_tokens(drops(rows, "colour_acc"))
  if fewest and full:
    tokens = next(iter(fewest.values()))["image_tokens"]
    full_tokens = next(iter(full.values()))["image_tokens"]
    listing = ", ".join(
        f"{_signed(fewest[w]['drop'])} points at width {w} "
        f"({_pct(full[w]['top1'])}% -> {_pct(full[w]['top1'] - fewest[w]['drop'])}%)"
        for w in sorted(fewest))
    parts.append(f"Pre-training on {tokens} instead of {full_tokens} image tokens (then the same "
                 f"full-resolution fine-tune) changes zero-shot top-1 by {listing}.")
  text = [d for d in drops(rows) if d["axis"] == "text"]
  if text:
    shortest = min(d["text_tokens"] for d in text)
    by_width = {d["width"]: d for d in text if d["text_tokens"] == shortest}
    parts.append(f"Syntax-reducing the captions to {shortest} tokens changes it by " + ", ".join(
        f"{_signed(by_width[w]['drop'])}" + (" points" if i == 0 else "") + f" at width {w}"
        for i, w in enumerate(sorted(by_width))) + ".")
  if noise is not None:
    parts.append(f"Two seeds of the same run differ by up to {100 * noise:.1f} points of top-1"
                 + (f" and {100 * colour_noise:.1f} of colour accuracy"
                    if colour_noise is not None else "") + ".")
  else:
    parts.append("No run was repeated with another seed, so the seed noise is unknown.")
  examples = [r.get("eval_examples") for r in agg if r.get("eval_examples")]
  mean_top1 = statistics.fmean(r["top1"] for r in agg if r["top1"] is not None)
  if examples:
    se = (mean_top1 * (1 - mean_top1) / min(examples)) ** 0.5
    parts.append(f"(A top-1 near {_pct(mean_top1)}% on {min(examples)} images has a sampling "
                 f"error of about {100 * se:.1f} points.)")
  shapes = [r["shape_acc"] for r in agg if r.get("shape_acc") is not None]
  if shapes and statistics.fmean(shapes) < 0.3:
    parts.append(f"The shape is right only {_pct(statistics.fmean(shapes))}% of the time on "
                 "average (chance 20%), so at this budget top-1 mostly measures colour.")
  if fewest_colour and full:
    parts.append("Colour accuracy changes by " + ", ".join(
        f"{_signed(fewest_colour[w]['drop'])}" + (" points" if i == 0 else "") +
        f" at width {w}" for i, w in enumerate(sorted(fewest_colour))) +
        " with the fewest image tokens.")
  if fewest:
    parts.append(_verdict(_trend({w: d["drop"] for w, d in fewest.items()}, noise), "top-1",
                          noise))
  if fewest_colour and any(r.get("colour_acc") is not None for r in agg):
    trend = _trend({w: d["drop"] for w, d in fewest_colour.items()}, colour_noise)
    if trend != "no clear trend":
      parts.append(_verdict(trend, "colour accuracy", colour_noise))
  parts.append(_compute_matched(agg))
  return " ".join(p for p in parts if p)


def _signed(drop: float) -> str:
  """A drop as a signed change in points: a loss of 3.1 points reads '-3.1'."""
  change = -100 * drop
  return f"{0.0 if abs(change) < 0.05 else change:+.1f}"  # never '-0.0'


def _compute_matched(agg: Sequence[Dict[str, Any]]) -> str:
  """Whether some wider, token-reduced run beats a narrower full-token run for less compute."""
  full = sorted((r for r in agg if r["axis"] == "full"), key=lambda r: r["width"])
  wins = []
  for small in full:
    for r in agg:
      if (r["width"] > small["width"] and r["axis"] != "full"
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


# Reduced-text runs: diamonds, both reduced: down triangles; otherwise one
# marker per image-token count, most tokens first.
_MARKERS = {"text": "D", "both": "v"}
_IMAGE_MARKERS = ("o", "s", "^", "P", "X", "*")


def _marker(row: Dict[str, Any], image_tokens: Sequence[int]) -> str:
  if row["axis"] in _MARKERS:
    return _MARKERS[row["axis"]]
  return _IMAGE_MARKERS[min(image_tokens.index(row["image_tokens"]), len(_IMAGE_MARKERS) - 1)]


def plot(rows: Sequence[Dict[str, Any]], path: str) -> str:
  """Writes the accuracy-vs-compute PNG; returns ``path``.

  One colour per width; marker per pre-training token setting (image tokens
  at full text; diamonds: shorter syntax-masked text at full image; down
  triangles: both reduced). Solid lines join a width's image-axis runs, dashed
  lines its full-token and reduced-text runs. Seeds are averaged; error bars
  span the seeds where there are several.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel

  agg = aggregate(rows)
  if not agg:
    raise ValueError("no result rows to plot; run the sweep first.")
  widths = sorted({r["width"] for r in agg})
  image_tokens = sorted({r["image_tokens"] for r in agg}, reverse=True)
  colours = plt.get_cmap("viridis")([0.1 + 0.75 * i / max(1, len(widths) - 1)
                                      for i in range(len(widths))])
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
  panels = (("top1", "after the full-resolution fine-tune"),
            ("pretrain_top1", "after pre-training only (at its own tokens)"))
  for ax, (metric, title) in zip(axes, panels):
    for colour, width in zip(colours, widths):
      mine = [r for r in agg if r["width"] == width and r[metric] is not None]
      for axis_set, style in ((("full", "image"), "-"), (("full", "text"), "--")):
        line = sorted((r for r in mine if r["axis"] in axis_set), key=lambda r: r["total_flops"])
        if len(line) > 1:
          ax.plot([r["total_flops"] / 1e12 for r in line], [100 * r[metric] for r in line],
                  style, color=colour, alpha=0.7)
      for r in mine:
        spread = r.get(f"{metric}_spread")
        ax.errorbar(r["total_flops"] / 1e12, 100 * r[metric],
                    yerr=None if spread is None else 50 * spread, fmt=_marker(r, image_tokens),
                    color=colour, markersize=8, capsize=3, markeredgecolor="black")
    ax.set_xscale("log")
    # Plain numbers: matplotlib's default "2x10^0" minor labels overlap here.
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_xlabel("training compute, pre-train + fine-tune (TFLOPs, analytic)")
    ax.set_ylabel("zero-shot top-1 on the held-out demo split (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
  handles = [Line2D([], [], color=c, lw=2, label=f"width {w}") for c, w in zip(colours, widths)]
  full_text = max(r["text_tokens"] for r in agg)
  for t in image_tokens:
    handles.append(Line2D([], [], ls="", marker=_IMAGE_MARKERS[min(
        image_tokens.index(t), len(_IMAGE_MARKERS) - 1)], color="grey",
        label=f"{t} image tokens, {full_text} text"))
  for axis, label in (("text", "{t} text tokens (syntax), full image"),
                      ("both", "{t} text tokens (syntax), fewest image tokens")):
    lengths = sorted({r["text_tokens"] for r in agg if r["axis"] == axis})
    if lengths:
      handles.append(Line2D([], [], ls="", marker=_MARKERS[axis], color="grey",
                            label=label.format(t="/".join(map(str, lengths)))))
  fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False)
  fig.suptitle("Inverse scaling on demo_shapes: accuracy vs training compute "
               "(same pre-training samples per run)")
  fig.tight_layout(rect=(0, 0.12, 1, 0.95))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def markdown_report(rows: Sequence[Dict[str, Any]], settings: Optional[Dict[str, Any]] = None
                    ) -> str:
  """``results.md``: settings line, table and reading."""
  lines = ["# Inverse-scaling sweep: results", ""]
  if settings:
    lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())), ""]
  lines += [format_table(rows), "",
            "top-1 after a seed list of two or more is the mean ± half the range over the "
            "seeds. Compute is pre-train + fine-tune training FLOPs (clipa_t5x.flops: 3x the "
            "forward matmul FLOPs, per sample x samples). Colour % / shape %: how often the "
            "30-way prediction has the right colour / the right shape.", "",
            "## Reading", "", reading(rows), ""]
  return "\n".join(lines)


def write_report(rows: Sequence[Dict[str, Any]], out_dir: str,
                 settings: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
  """Writes results.json, results.md and inverse_scaling.png into ``out_dir``.

  Args:
    rows: run.py's result rows (any subset of the sweep).
    out_dir: output folder.
    settings: the sweep settings, recorded in results.json / results.md.

  Returns:
    ``{'json', 'markdown', 'png'}`` paths.
  """
  if not rows:
    raise ValueError("no result rows; run the sweep (run.py) before writing the report.")
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, "results.json"),
           "markdown": os.path.join(out_dir, "results.md"),
           "png": os.path.join(out_dir, "inverse_scaling.png")}
  with open(paths["json"], "w") as f:
    json.dump({"settings": settings, "runs": list(rows)}, f, indent=1, sort_keys=True)
  with open(paths["markdown"], "w") as f:
    f.write(markdown_report(rows, settings))
  plot(rows, paths["png"])
  return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description="Rewrite results.md and the PNG from results.json.")
  p.add_argument("--out", default="runs/inverse_scaling", help="the sweep's output folder")
  args = p.parse_args(argv)
  path = os.path.join(args.out, "results.json")
  if not os.path.exists(path):
    print(f"error: {path} does not exist; run experiments/inverse_scaling/run.py first.",
          file=sys.stderr)
    return 2
  with open(path) as f:
    record = json.load(f)
  paths = write_report(record["runs"], args.out, record.get("settings"))
  print(f"{paths['markdown']}\n{paths['png']}")
  print("\n" + reading(record["runs"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
