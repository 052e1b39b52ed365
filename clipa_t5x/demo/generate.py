"""Writes a demo scene's data set as webdataset tar shards, cached and replaced atomically.

The shards are laid out the way img2dataset writes them (``KEY.jpg``,
``KEY.txt``, ``KEY.json`` and, for the label, ``KEY.cls``; KEY = 9 digits: 5
for the shard, 4 for the sample), through the project's one shard writer
(``clipa_t5x.data.shard_writer``), so the same reader serves the demo and real
web-scale data::

  out_dir/
    train-00000.tar ... train-00007.tar   # ~20,000 random examples
    eval-00000.tar                        # ~1,000, balanced over classes
    classes.json                          # ordered class names
    manifest.json                         # parameters + counts, written last

Generation is deterministic: each example draws from its own
``numpy.random.default_rng((seed, split_id, index))`` and the tar members carry
fixed metadata (mtime 0, uid 0), so a fixed seed gives identical bytes.

Command line: ``python -m clipa_t5x.demo.generate --out DIR [--scene glyphs]``.
"""

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clipa_t5x import paths
from clipa_t5x.data.shard_writer import ShardWriter
from clipa_t5x.demo import scenes

_SPLIT_IDS = {"train": 0, "eval": 1}
_KEY_DIGITS = 4  # of the 9-digit key, the sample's index in its shard
_MAX_PER_SHARD = 10 ** _KEY_DIGITS
_MANIFEST = "manifest.json"
DEFAULTS = {"num_train": 20000, "num_eval": 1000, "image_size": 48, "num_train_shards": 8,
            "num_eval_shards": 1, "seed": 0, "scene": "shapes"}
DATA_DIR_VARIABLES = {"shapes": "CLIPA_DEMO_DATA", "glyphs": "CLIPA_DEMO_GLYPHS_DATA"}


def _render_shard(scene: str, split_id: int, seed: int, first_index: int, count: int,
                  image_size: int, balanced_classes: bool) -> List[Tuple[bytes, Dict[str, Any]]]:
  """``(jpeg, attributes)`` of examples ``first_index ..`` of one split (a worker's job)."""
  module = scenes.get(scene)
  examples = []
  for index in range(first_index, first_index + count):
    rng = np.random.default_rng((seed, split_id, index))
    label = index % len(module.CLASS_NAMES) if balanced_classes else None
    examples.append(module.render_example(rng, image_size, label))
  return examples


def _write_shard(writer: ShardWriter, examples: Sequence[Tuple[bytes, Dict[str, Any]]],
                 image_size: int) -> None:
  """Writes rendered examples into ``writer``'s next shard."""
  for jpeg, attrs in examples:
    meta = {"key": writer.next_key, "status": "success", "error_message": None,
            "width": image_size, "height": image_size,
            "original_width": image_size, "original_height": image_size, **attrs}
    writer.write({"cls": str(attrs["label"]).encode(), "jpg": jpeg,
                  "json": json.dumps(meta, sort_keys=True).encode(),
                  "txt": attrs["caption"].encode("utf-8")})
  writer.close_shard()


def _split_counts(total: int, num_shards: int) -> List[int]:
  base, extra = divmod(total, num_shards)
  return [base + (i < extra) for i in range(num_shards)]


def _params(num_train: int, num_eval: int, image_size: int,
            num_train_shards: int, num_eval_shards: int,
            seed: int, scene: str = "shapes") -> Dict[str, Any]:
  params = {"num_train": num_train, "num_eval": num_eval, "image_size": image_size,
            "num_train_shards": num_train_shards, "num_eval_shards": num_eval_shards,
            "seed": seed, "generator_version": scenes.get(scene).GENERATOR_VERSION}
  if scene != "shapes":  # recorded for other scenes only: shapes caches stay valid
    params["scene"] = scene
  return params


def _validate(params: Dict[str, int]) -> None:
  for split in ("train", "eval"):
    n, shards = params[f"num_{split}"], params[f"num_{split}_shards"]
    if n < 1 or shards < 1:
      raise ValueError(f"num_{split}={n} and num_{split}_shards={shards} must "
                       "both be >= 1.")
    if shards > n:
      raise ValueError(f"num_{split}_shards={shards} exceeds num_{split}={n}; "
                       "use fewer shards.")
    if math.ceil(n / shards) > _MAX_PER_SHARD:
      raise ValueError(f"{n} {split} examples in {shards} shards is more than "
                       f"{_MAX_PER_SHARD} per shard; raise num_{split}_shards.")
  if params["image_size"] < 16:
    raise ValueError(f"image_size={params['image_size']} is too small to draw "
                     "shapes; use at least 16 (default 48).")


def generate(out_dir: str, num_train: int = 20000, num_eval: int = 1000,
             image_size: int = 48, num_train_shards: int = 8, seed: int = 0,
             num_eval_shards: int = 1, scene: str = "shapes") -> Dict[str, Any]:
  """Writes a demo data set into ``out_dir`` (created; must be empty).

  Prefer ``ensure_demo_data``, which adds caching and atomic replacement.

  Args:
    out_dir: a local directory that does not exist yet or is empty.
    num_train: number of training examples (classes drawn at random).
    num_eval: number of held-out eval examples (classes balanced: example i
      has class ``i % len(CLASS_NAMES)``; a different random stream from train).
    image_size: side of the square JPEG images in pixels.
    num_train_shards: number of ``train-XXXXX.tar`` files.
    seed: the seed; the same seed gives byte-identical files.
    num_eval_shards: number of ``eval-XXXXX.tar`` files.
    scene: a name of ``clipa_t5x.demo.scenes`` (``'shapes'``, ``'glyphs'``).

  Returns:
    The manifest written last to ``out_dir/manifest.json``.
  """
  params = _params(num_train, num_eval, image_size, num_train_shards,
                   num_eval_shards, seed, scene)
  _validate(params)
  class_names = scenes.get(scene).CLASS_NAMES
  os.makedirs(out_dir, exist_ok=True)
  if os.listdir(out_dir):
    raise ValueError(f"generate() needs an empty directory, but {out_dir} has "
                     "files; use ensure_demo_data() or pick a new directory.")
  jobs = []  # (split, its writer, the rendering of one shard)
  for split, n, shards in (("train", num_train, num_train_shards),
                           ("eval", num_eval, num_eval_shards)):
    counts = _split_counts(n, shards)
    writer = ShardWriter(out_dir, max(counts), prefix=f"{split}-", key_digits=_KEY_DIGITS,
                         mtime=0)
    starts = np.cumsum([0] + counts[:-1])
    jobs += [(split, writer, (scene, _SPLIT_IDS[split], seed, int(first), count, image_size,
                              split == "eval")) for first, count in zip(starts, counts)]
  # Shards render in parallel (a spawned worker per core: this process may hold TF and JAX
  # threads, which fork would copy) and are written here in order: the bytes do not change.
  workers = min(len(jobs), os.cpu_count() or 1)
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn")) as pool:
    rendered = pool.map(_render_shard, *zip(*(job for _, _, job in jobs)))
    for (_, writer, _), examples in zip(jobs, rendered):
      _write_shard(writer, examples, image_size)
  files = {split: [os.path.basename(p) for p in writer.shards] for split, writer, _ in jobs}
  with open(os.path.join(out_dir, "classes.json"), "w") as f:
    json.dump(list(class_names), f, indent=1)
  manifest = {"params": params, "files": files,
              "num_examples": {"train": num_train, "eval": num_eval},
              "num_classes": len(class_names)}
  # Written last: its presence marks a complete data set.
  with open(os.path.join(out_dir, _MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  return manifest


def read_manifest(out_dir: str) -> Optional[Dict[str, Any]]:
  """The manifest of a complete data set in ``out_dir``, else None."""
  try:
    with open(os.path.join(out_dir, _MANIFEST)) as f:
      return json.load(f)
  except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
    return None


def ensure_demo_data(out_dir: Optional[str] = None, **kwargs) -> str:
  """Makes sure a complete demo data set with these parameters is in out_dir.

  Idempotent and safe against interruption: if ``out_dir/manifest.json``
  records the same parameters nothing is done. Otherwise the data is generated
  in a temporary sibling and swapped into place (``paths.replace_dir``), so a
  killed run leaves only an unused temporary sibling, never a half data set at
  ``out_dir``. An existing data set with other parameters is replaced.

  Args:
    out_dir: target directory (default: ``default_data_dir(scene)``).
    **kwargs: parameters of ``generate`` (num_train, num_eval, image_size,
      num_train_shards, num_eval_shards, seed, scene).

  Returns:
    ``out_dir`` as an absolute path.
  """
  out_dir = os.path.abspath(os.path.expanduser(
      out_dir or default_data_dir(kwargs.get("scene", "shapes"))))
  unknown = set(kwargs) - set(DEFAULTS)
  if unknown:
    raise ValueError(f"Unknown demo data parameters {sorted(unknown)}; "
                     f"expected some of {sorted(DEFAULTS)}.")
  params = _params(**{**DEFAULTS, **kwargs})
  _validate(params)

  def complete() -> bool:
    manifest = read_manifest(out_dir)
    return manifest is not None and manifest.get("params") == params

  if complete():
    return out_dir
  if os.path.exists(out_dir) and os.listdir(out_dir) and read_manifest(out_dir) is None:
    raise ValueError(f"{out_dir} exists, is not empty and holds no demo data "
                     "set (no manifest.json); delete it or choose another "
                     "directory.")
  generator_kwargs = {k: v for k, v in params.items() if k != "generator_version"}
  # Another process generating the same set may finish first: then its set is kept.
  return paths.replace_dir(out_dir, lambda tmp: generate(tmp, **generator_kwargs),
                           done=complete)


def default_data_dir(scene: str = "shapes") -> str:
  """``$CLIPA_DEMO_DATA`` or ``~/.cache/clipa_t5x/demo_shapes`` (glyphs:
  ``$CLIPA_DEMO_GLYPHS_DATA`` or ``~/.cache/clipa_t5x/demo_glyphs``)."""
  scenes.get(scene)  # a clear error for an unknown scene
  return os.environ.get(DATA_DIR_VARIABLES[scene]) or os.path.join(
      os.path.expanduser("~"), ".cache", "clipa_t5x", f"demo_{scene}")


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m clipa_t5x.demo.generate",
      description="Generate a demo scene's webdataset shards (cached: an existing set with the "
      "same parameters is kept).")
  parser.add_argument("--out", default=None,
                      help="output directory (default: $CLIPA_DEMO_DATA or "
                      "~/.cache/clipa_t5x/demo_shapes; glyphs: $CLIPA_DEMO_GLYPHS_DATA or "
                      "~/.cache/clipa_t5x/demo_glyphs)")
  for name in ("num_train", "num_eval", "image_size", "num_train_shards", "num_eval_shards",
               "seed"):
    parser.add_argument(f"--{name}", type=int, default=DEFAULTS[name])
  parser.add_argument("--scene", default="shapes", choices=tuple(scenes.SCENES),
                      help="shapes (coloured shapes, the demo) or glyphs (letter textures)")
  args = parser.parse_args(argv)
  start = time.time()
  kw = {k: v for k, v in vars(args).items() if k != "out"}
  path = ensure_demo_data(args.out, **kw)
  print(f"demo_{args.scene} data set ready at {path} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
  main()
