"""The project's own demo data set: coloured shapes with varied captions.

Every image shows one shape (one of ``SHAPES``) in one of ``COLOURS``, small or
large, near the centre, on a tinted light background. The caption names the
shape in a few phrasings, with its colour in most of them and sometimes its size
or the background; the zero-shot label is the (colour, shape) pair, e.g. "red
circle". Class index = colour index * len(SHAPES) + shape index.

Version 4 (experiments/demo_diagnosis/README.md has the measurements behind
it; 3 was an unreleased draft): the version-2 scenes hid the shape from a
small ViT. Trained supervised on shape alone, the demo's image tower reached
48% in 300 steps on them, 98% on centred, large shapes on light backgrounds;
mixed light/dark/gradient backgrounds alone cost 96% -> 53%. A contrastive
model then matched captions by colour only. Here a shape spans 2-3 of the 4x4
patches at 32 px, the crop cannot cut it away, the background is always light,
and captions that omit the colour make shape worth learning from the first
step. Small shapes and the star/cross points still need resolution.

The data is written as webdataset tar shards laid out the way img2dataset writes
them (``KEY.jpg``, ``KEY.txt``, ``KEY.json`` and, for the label, ``KEY.cls``;
KEY = 9 digits: 5 for the shard, 4 for the sample), so the same reader serves
the demo and real web-scale data::

  out_dir/
    train-00000.tar ... train-00007.tar   # ~20,000 random examples
    eval-00000.tar                        # ~1,000, balanced over classes
    classes.json                          # ordered class names
    manifest.json                         # parameters + counts, written last

Generation is deterministic: each example draws from its own
``numpy.random.default_rng((seed, split_id, index))`` and the tar headers carry
fixed metadata (mtime 0, uid 0), so a fixed seed gives identical bytes.

The same writer serves the letters scene of the inverse-scaling study
(``scene='glyphs'``, drawn by ``demo_glyphs``; default folder
``~/.cache/clipa_t5x/demo_glyphs``).

Command line: ``python -m clipa_t5x.data.demo_shapes --out DIR [--scene glyphs]``.
"""

import argparse
import io
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

# Bump when the rendered bytes change, so cached data sets are regenerated.
GENERATOR_VERSION = 4

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 225),
    "yellow": (240, 215, 25),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
# Class index = colour index * len(SHAPES) + shape index.
CLASS_NAMES: Tuple[str, ...] = tuple(
    f"{c} {s}" for c in COLOURS for s in SHAPES)

SIZES = ("small", "large")
# Radius as a fraction of the image side. Small shapes span ~1.5 patches of a
# 4x4 grid at 32 px, large ones ~2.5: both visible, small ones need detail.
_RADIUS = {"small": (0.16, 0.22), "large": (0.26, 0.32)}
# Largest offset of the shape's centre from the image centre (image fraction):
# with the crop keeping >= 80% of the area the shape stays (mostly) in view.
_MAX_OFFSET = 0.06
# Light backgrounds only (tinted): with dark and gradient ones as well, the same
# ViT trained *supervised* on shape reached 53% instead of 96% in 300 steps
# (experiments/demo_diagnosis): the edge polarity flips and the small tower
# must learn every shape twice.
BACKGROUNDS = ("light",)

_SPLIT_IDS = {"train": 0, "eval": 1}
_MAX_PER_SHARD = 10_000  # 4 digits of the 9-digit key are the sample index.
_JPEG_QUALITY = 90
SUPERSAMPLE = 2  # scenes are drawn at 2x and downsampled: anti-aliased edges
_MANIFEST = "manifest.json"

# ---------------------------------------------------------------- captions ---
_SHAPE_WORDS = {
    "circle": ["circle", "circle", "circle", "disc"],
    "square": ["square", "square", "square", "square block"],
    "triangle": ["triangle", "triangle", "triangle", "triangular shape"],
    "star": ["star", "star", "star", "five-pointed star"],
    "cross": ["cross", "cross", "cross", "plus sign"],
}
_SIZE_WORDS = {
    "small": ["small", "small", "little"],
    "large": ["large", "big", "big"],
}
_BACKGROUND_PHRASES = {
    "light": ["on a white background", "on a light background",
              "on a pale background"],
}
# Fields: {a_*} article for what follows, {size}, {colour}, {shape}, {bg}.
# Short on purpose: 8 syntax-reduced tokens keep the colour and shape words.
_TEMPLATES = [
    "{a_colour} {colour} {shape}",
    "{a_colour} {colour} {shape}",
    "{a_size} {size} {colour} {shape}",
    "{a_colour} {colour} {shape} {bg}",
    "a photo of {a_colour} {colour} {shape}",
    "a drawing of {a_size} {size} {colour} {shape}",
    "{colour} {shape}",
    "{a_shape} {shape} coloured {colour}",
    "the {shape} is {colour}",
    "there is {a_colour} {colour} {shape} in the picture",
    "{a_size} {size} {shape} in {colour} {bg}",
    "clip art of {a_colour} {colour} {shape}",
]
# Captions that leave the colour out. Colour alone lowers the contrastive loss
# of a colour-and-shape caption so much that the towers settle there and shape
# stays unlearned (experiments/demo_diagnosis); a caption naming only the
# shape can be matched by nothing but the shape.
_SHAPE_ONLY_TEMPLATES = [
    "{a_shape} {shape}",
    "a photo of {a_shape} {shape}",
    "{a_size} {size} {shape}",
    "{a_shape} {shape} {bg}",
    "a drawing of {a_shape} {shape}",
]
SHAPE_ONLY_FRACTION = 0.4


def _article(word: str) -> str:
  return "an" if word[:1] in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
  return options[int(rng.integers(len(options)))]


def make_caption(rng: np.random.Generator, colour: str, shape: str, size: str,
                 background: str) -> str:
  """Writes a short natural-language caption for one scene.

  Args:
    rng: the example's random generator (consumed deterministically).
    colour: one of ``COLOURS``.
    shape: one of ``SHAPES``.
    size: one of ``SIZES``.
    background: one of ``BACKGROUNDS``.

  Returns:
    The caption: a word for the shape always appears in it, the colour in
    all but ``SHAPE_ONLY_FRACTION`` of them.
  """
  size_w = _pick(rng, _SIZE_WORDS[size])
  shape_w = _pick(rng, _SHAPE_WORDS[shape])
  fields = {"colour": colour, "shape": shape_w, "size": size_w,
            "bg": _pick(rng, _BACKGROUND_PHRASES[background]),
            "a_size": _article(size_w), "a_colour": _article(colour),
            "a_shape": _article(shape_w)}
  shape_only = rng.random() < SHAPE_ONLY_FRACTION
  caption = _pick(rng, _SHAPE_ONLY_TEMPLATES if shape_only else _TEMPLATES).format(**fields)
  return caption[0].upper() + caption[1:] if rng.random() < 0.3 else caption


# --------------------------------------------------------------- rendering ---
def _polygon(cx: float, cy: float, r: float, n: int, angle: float,
             inner: Optional[float] = None) -> List[Tuple[float, float]]:
  """Vertices of a regular n-gon (or a star when ``inner`` radius is set)."""
  pts = []
  steps = 2 * n if inner else n
  for i in range(steps):
    rad = (inner if inner and i % 2 else r)
    t = angle - math.pi / 2 + 2 * math.pi * i / steps
    pts.append((cx + rad * math.cos(t), cy + rad * math.sin(t)))
  return pts


def _rotate(points: Sequence[Tuple[float, float]], cx: float, cy: float,
            angle: float) -> List[Tuple[float, float]]:
  c, s = math.cos(angle), math.sin(angle)
  return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c)
          for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float,
                r: float, angle: float, fill: Tuple[int, int, int]) -> None:
  if shape == "circle":
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
  elif shape == "square":
    # Circumradius scales keep the areas of the shapes roughly equal.
    draw.polygon(_polygon(cx, cy, r * 1.2, 4, angle + math.pi / 4), fill=fill)
  elif shape == "triangle":
    draw.polygon(_polygon(cx, cy + r * 0.2, r * 1.35, 3, angle), fill=fill)
  elif shape == "star":
    draw.polygon(_polygon(cx, cy, r * 1.35, 5, angle, inner=r * 0.55),
                 fill=fill)
  elif shape == "cross":
    # A plus sign: arms a third of the span wide.
    a, w = r * 1.15, r * 0.4
    pts = [(cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
           (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
           (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w)]
    draw.polygon(_rotate(pts, cx, cy, angle), fill=fill)
  else:
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
  """An HxWx3 uint8 background of the given kind."""
  if kind == "light":
    base = rng.integers(205, 256, size=3)
    img = np.broadcast_to(base, (size, size, 3))
  else:
    raise ValueError(f"Unknown background {kind!r}; expected {BACKGROUNDS}.")
  return np.clip(img, 0, 255).astype(np.uint8)


def _jitter_colour(rng: np.random.Generator,
                   rgb: Tuple[int, int, int]) -> Tuple[int, int, int]:
  return tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in rgb)


def render_example(rng: np.random.Generator, image_size: int,
                   label: Optional[int] = None) -> Tuple[bytes, Dict[str, Any]]:
  """Draws one scene and writes its caption.

  Args:
    rng: the example's own random generator.
    image_size: side of the square image in pixels.
    label: class index, or None to draw it at random.

  Returns:
    ``(jpeg_bytes, attributes)``; attributes hold the caption, the class
    index and name, the shape's colour/shape/size, its centre ``(x, y)`` and
    radius as image fractions, the rotation and the background.
  """
  num_classes = len(CLASS_NAMES)
  if label is None:
    label = int(rng.integers(num_classes))
  colour = list(COLOURS)[label // len(SHAPES)]
  shape = SHAPES[label % len(SHAPES)]
  background = _pick(rng, BACKGROUNDS)
  size = _pick(rng, SIZES)
  radius = float(rng.uniform(*_RADIUS[size]))
  fx, fy = 0.5 + rng.uniform(-_MAX_OFFSET, _MAX_OFFSET, size=2)
  angle = float(rng.uniform(-0.3, 0.3))
  fill = _jitter_colour(rng, COLOURS[colour])

  big = image_size * SUPERSAMPLE
  image = Image.fromarray(_background(rng, background, big))
  _draw_shape(ImageDraw.Draw(image), shape, fx * big, fy * big, radius * big,
              angle, fill)
  jpeg = encode_jpeg(image, image_size)
  caption = make_caption(rng, colour, shape, size, background)
  attrs = {
      "caption": caption, "label": label, "class_name": CLASS_NAMES[label],
      "colour": colour, "shape": shape, "size": size,
      "center": [round(float(fx), 4), round(float(fy), 4)],
      "radius": round(radius, 4), "angle": round(angle, 4),
      "background": background,
  }
  return jpeg, attrs


def encode_jpeg(image: Image.Image, image_size: int) -> bytes:
  """A scene drawn at ``SUPERSAMPLE`` x the size, box-downsampled and JPEG-encoded."""
  buf = io.BytesIO()
  image.resize((image_size, image_size), Image.BOX).save(buf, format="JPEG",
                                                          quality=_JPEG_QUALITY)
  return buf.getvalue()


def class_factors() -> Dict[str, List[int]]:
  """Per-class index of each label factor: ``{'colour': [...], 'shape': [...]}``.

  Zero-shot evaluation uses it to report how often the colour and the shape
  of the predicted class are right on their own.
  """
  return {"colour": [i // len(SHAPES) for i in range(len(CLASS_NAMES))],
          "shape": [i % len(SHAPES) for i in range(len(CLASS_NAMES))]}


# ------------------------------------------------------------------ writing ---
def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  # Fixed metadata: identical bytes on every run and machine.
  info.mtime, info.mode, info.uid, info.gid = 0, 0o644, 0, 0
  info.uname = info.gname = ""
  tar.addfile(info, io.BytesIO(data))


SCENES = ("shapes", "glyphs")


def scene_module(scene: str):
  """The module that draws ``scene``: this one, or ``demo_glyphs``.

  A scene module has ``CLASS_NAMES``, ``GENERATOR_VERSION``,
  ``render_example(rng, image_size, label)`` and ``class_factors()``.
  """
  if scene == "shapes":
    return sys.modules[__name__]
  if scene == "glyphs":
    from clipa_t5x.data import demo_glyphs  # pylint: disable=import-outside-toplevel
    return demo_glyphs
  raise ValueError(f"Unknown demo scene {scene!r}; expected one of {SCENES}.")


def _write_shard(path: str, shard_index: int, split_id: int, seed: int,
                 first_index: int, count: int, image_size: int,
                 balanced_classes: bool, scene: str = "shapes") -> None:
  module = scene_module(scene)
  with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
    for j in range(count):
      index = first_index + j
      rng = np.random.default_rng((seed, split_id, index))
      label = index % len(module.CLASS_NAMES) if balanced_classes else None
      jpeg, attrs = module.render_example(rng, image_size, label)
      key = f"{shard_index:05d}{j:04d}"  # img2dataset's 9-digit key.
      meta = {"key": key, "status": "success", "error_message": None,
              "width": image_size, "height": image_size,
              "original_width": image_size, "original_height": image_size,
              **attrs}
      # webdataset's TarWriter writes a sample's members in sorted order.
      _add_member(tar, f"{key}.cls", str(attrs["label"]).encode())
      _add_member(tar, f"{key}.jpg", jpeg)
      _add_member(tar, f"{key}.json",
                  json.dumps(meta, sort_keys=True).encode())
      _add_member(tar, f"{key}.txt", attrs["caption"].encode("utf-8"))


def _split_counts(total: int, num_shards: int) -> List[int]:
  base, extra = divmod(total, num_shards)
  return [base + (i < extra) for i in range(num_shards)]


def _params(num_train: int, num_eval: int, image_size: int,
            num_train_shards: int, num_eval_shards: int,
            seed: int, scene: str = "shapes") -> Dict[str, Any]:
  params = {"num_train": num_train, "num_eval": num_eval,
            "image_size": image_size, "num_train_shards": num_train_shards,
            "num_eval_shards": num_eval_shards, "seed": seed,
            "generator_version": scene_module(scene).GENERATOR_VERSION}
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
  """Writes the demo data set into ``out_dir`` (created; must be empty).

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
    scene: ``'shapes'`` (this module's scenes) or ``'glyphs'``
      (``demo_glyphs``: letters).

  Returns:
    The manifest written last to ``out_dir/manifest.json``.
  """
  params = _params(num_train, num_eval, image_size, num_train_shards,
                   num_eval_shards, seed, scene)
  _validate(params)
  class_names = scene_module(scene).CLASS_NAMES
  os.makedirs(out_dir, exist_ok=True)
  if os.listdir(out_dir):
    raise ValueError(f"generate() needs an empty directory, but {out_dir} has "
                     "files; use ensure_demo_data() or pick a new directory.")
  files = {}
  for split, n, shards in (("train", num_train, num_train_shards),
                           ("eval", num_eval, num_eval_shards)):
    names, first = [], 0
    for i, count in enumerate(_split_counts(n, shards)):
      name = f"{split}-{i:05d}.tar"
      _write_shard(os.path.join(out_dir, name), i, _SPLIT_IDS[split], seed,
                   first, count, image_size, balanced_classes=split == "eval",
                   scene=scene)
      names.append(name)
      first += count
    files[split] = names
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
  in a fresh sibling temp directory and renamed into place, so a killed run
  leaves only an unused ``.tmp`` sibling, never a half data set at
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
  defaults = {"num_train": 20000, "num_eval": 1000, "image_size": 48,
              "num_train_shards": 8, "num_eval_shards": 1, "seed": 0,
              "scene": "shapes"}
  unknown = set(kwargs) - set(defaults)
  if unknown:
    raise ValueError(f"Unknown demo data parameters {sorted(unknown)}; "
                     f"expected some of {sorted(defaults)}.")
  params = _params(**{**defaults, **kwargs})
  _validate(params)

  def complete() -> bool:
    manifest = read_manifest(out_dir)
    return manifest is not None and manifest.get("params") == params

  if complete():
    return out_dir
  if os.path.exists(out_dir) and os.listdir(out_dir) and read_manifest(
      out_dir) is None:
    raise ValueError(f"{out_dir} exists, is not empty and holds no demo data "
                     "set (no manifest.json); delete it or choose another "
                     "directory.")
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
  try:
    generate(tmp, **{k: v for k, v in params.items()
                     if k != "generator_version"})
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; others read it too
    if os.path.exists(out_dir):
      # Another process may have finished first; else move the old set aside.
      if complete():
        return out_dir
      old = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".old-",
                             dir=parent)
      os.rename(out_dir, os.path.join(old, "data"))
      shutil.rmtree(old, ignore_errors=True)
    try:
      os.rename(tmp, out_dir)
    except OSError:
      if not complete():  # Lost a race only if the winner's set is complete.
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


DATA_DIR_VARIABLES = {"shapes": "CLIPA_DEMO_DATA", "glyphs": "CLIPA_DEMO_GLYPHS_DATA"}


def default_data_dir(scene: str = "shapes") -> str:
  """``$CLIPA_DEMO_DATA`` or ``~/.cache/clipa_t5x/demo_shapes`` (glyphs:
  ``$CLIPA_DEMO_GLYPHS_DATA`` or ``~/.cache/clipa_t5x/demo_glyphs``)."""
  scene_module(scene)  # a clear error for an unknown scene
  return os.environ.get(DATA_DIR_VARIABLES[scene]) or os.path.join(
      os.path.expanduser("~"), ".cache", "clipa_t5x", f"demo_{scene}")


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(
      description="Generate the demo_shapes webdataset shards.")
  parser.add_argument("--out", default=None,
                      help="output directory (default: $CLIPA_DEMO_DATA or "
                      "~/.cache/clipa_t5x/demo_shapes)")
  parser.add_argument("--num_train", type=int, default=20000)
  parser.add_argument("--num_eval", type=int, default=1000)
  parser.add_argument("--image_size", type=int, default=48)
  parser.add_argument("--num_train_shards", type=int, default=8)
  parser.add_argument("--num_eval_shards", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--scene", default="shapes", choices=SCENES,
                      help="shapes (demo_shapes) or glyphs (demo_glyphs: letters)")
  args = parser.parse_args(argv)
  start = time.time()
  kw = {k: v for k, v in vars(args).items() if k != "out"}
  path = ensure_demo_data(args.out, **kw)
  print(f"demo_{args.scene} data set ready at {path} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
  main()
