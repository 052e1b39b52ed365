"""The demo's resolution table: every stage's model classified at every stage's resolution.

CLIPA's claim is that a short fine-tune at the full resolution lifts a model
pre-trained at a low one. The run's summary shows each stage at its own
resolution only; this table adds the pre-trained model at the fine-tune's
resolution (what the fine-tune starts from) and the fine-tuned model at the
pre-training's, so the fine-tune's gain is read apart from the resolution's.
"""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

from clipa_t5x import inference
from clipa_t5x import paths
from clipa_t5x import text_table
from clipa_t5x.demo import data as demo_data

TABLE = "resolution_table.json"


def measure(stage_dirs: Mapping[str, str], data: demo_data.DemoData,
            num_images: int = 1000,
            own: Optional[Mapping[str, Mapping[str, float]]] = None) -> List[Dict[str, Any]]:
  """Zero-shot top-1 of each stage's model at each stage's resolution.

  Args:
    stage_dirs: ``{stage name: stage folder}`` in run order.
    data: the demo data (its held-out split, scene class names and factors).
    num_images: held-out images to classify (the first, every class in turn).
    own: ``{stage: {'top1': .., '<factor>_top1': ..}}`` already measured at the
      stage's own resolution on the same images (the run's evaluation): reused.

  Returns:
    One row per (stage, resolution): ``{'stage', 'image_size', 'trained_at',
    'top1', '<factor>_top1'...}``, stages in order, resolutions ascending.
  """
  models = {name: inference.load(d, batch_size=200, text_reduction="syntax")
            for name, d in stage_dirs.items()}  # first: no checkpoint, no data generated
  jpegs, labels = data.eval_examples(num_images)
  labels = np.asarray(labels)
  names, factors = data.class_names(), data.class_factors()
  sizes = sorted({m.image_size for m in models.values()})
  rows = []
  own = own or {}
  for name, model in models.items():
    classes = model.class_embeddings(names, demo_data.templates())
    for size in sizes:
      row = {"stage": name, "image_size": size, "trained_at": model.image_size}
      if size == model.image_size and name in own:
        rows.append({**row, **own[name]})
        continue
      features = model.encode_images(jpegs, image_size=size)
      predicted = model.classify_features(features, names, top_k=1,
                                          class_embeddings=classes).top_k_indices[:, 0]
      row["top1"] = float(np.mean(predicted == labels))
      for factor, ids in factors.items():
        ids = np.asarray(ids)
        row[f"{factor}_top1"] = float(np.mean(ids[predicted] == ids[labels]))
      rows.append(row)
  return rows


def _own_resolution_results(rows: Sequence[Mapping[str, Any]],
                            num_images: int) -> Dict[str, Dict[str, float]]:
  """The run's own zero-shot results per stage, where they cover exactly ``num_images``."""
  own = {}
  for row in rows:
    top1_keys = [k for k in row.get("eval", {}) if k.endswith("/top1")]
    if not top1_keys or row.get("zeroshot_top1") is None:
      continue
    if row["eval"].get(top1_keys[0][:-len("top1")] + "num_examples") == num_images:
      own[row["stage"]] = {"top1": row["zeroshot_top1"], **{
          f"{f}_top1": v for f, v in row.get("zeroshot_factor_top1", {}).items()}}
  return own


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """The rows of ``measure`` as a text table, one line per (model, resolution)."""
  factors = [k for k in rows[0] if k.endswith("_top1")] if rows else []
  header = ("model", "evaluated at", "zero-shot top-1") + tuple(
      f"{f[:-len('_top1')]} top-1" for f in factors)
  lines = [header]
  for row in rows:
    own = " (its own)" if row["image_size"] == row["trained_at"] else ""
    lines.append((row["stage"], f"{row['image_size']} px{own}", f"{100 * row['top1']:.1f}%")
                 + tuple(f"{100 * row[f]:.1f}%" for f in factors))
  return text_table.format_table(lines)


def write_resolution_table(model_dir: str, rows: Optional[Sequence[Mapping[str, Any]]] = None,
                           data: Optional[demo_data.DemoData] = None,
                           num_images: int = 1000) -> Optional[str]:
  """Prints the resolution table and writes it to ``MODEL_DIR/resolution_table.json``.

  A ``runner.run`` ``after_run`` hook (``gin/runs/demo_cpu.gin``):
  ``runner.run.after_run = [@demo_resolutions.write_resolution_table]`` with
  ``demo_resolutions.write_resolution_table.data = %DEMO_DATA``.

  Args:
    model_dir: the run's MODEL_DIR.
    rows: the run's summary rows (their ``stage`` names, in run order; a stage's
      own zero-shot result over the same ``num_images`` images is reused).
    data: the demo data the run evaluated on (None: the default location).
    num_images: held-out images to classify.

  Returns:
    The JSON file's path (None on processes other than the first, without
    stages, or when a stage has no checkpoint).
  """
  if jax.process_index() != 0 or not rows:
    return None
  stage_dirs = {row["stage"]: os.path.join(model_dir, row["stage"]) for row in rows}
  try:
    table = measure(stage_dirs, data or demo_data.DemoData(), num_images,
                    own=_own_resolution_results(rows, num_images))
  except ValueError as e:  # a stage without a checkpoint (e.g. stubbed out): no table
    print(f"resolution table not made: {e}", flush=True)
    return None
  path = os.path.join(model_dir, TABLE)
  paths.write_json_atomic(path, table)
  print("\nzero-shot top-1 of each stage's model at each stage's resolution "
        f"({num_images} held-out images):\n" + format_table(table), flush=True)
  return path
