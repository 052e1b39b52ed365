"""[Frozen copy of clipa_t5x/data/demo_shapes.py at GENERATOR_VERSION 2, kept for the diagnosis.]

The project's own demo data set: coloured shapes with varied captions.

Every image shows one main shape (sometimes with a smaller second one) in one of
six colours on a light, dark, noisy or gradient background. The caption names the
main shape's colour and shape in many different phrasings, so a model has to read
both words to match image and text; the zero-shot label is the (colour, shape)
pair of the main shape, e.g. "red circle".

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

Command line: ``python -m clipa_t5x.data.demo_shapes --out DIR``.
"""

import argparse
import io
import json
import math
import os
import shutil
import tarfile
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

# Bump when the rendered bytes change, so cached data sets are regenerated.
GENERATOR_VERSION = 2

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 225),
    "yellow": (240, 215, 25),
    "purple": (140, 50, 185),
    "orange": (250, 135, 20),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon")
# Class index = colour index * len(SHAPES) + shape index.
CLASS_NAMES: Tuple[str, ...] = tuple(
    f"{c} {s}" for c in COLOURS for s in SHAPES)

SIZES = ("small", "large")
POSITIONS: Dict[str, Tuple[float, float]] = {  # (x, y) as image fractions
    "center": (0.5, 0.5),
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
}
BACKGROUNDS = ("light", "dark", "noisy", "gradient")

_SPLIT_IDS = {"train": 0, "eval": 1}
_MAX_PER_SHARD = 10_000  # 4 digits of the 9-digit key are the sample index.
_JPEG_QUALITY = 90
_MANIFEST = "manifest.json"

# ---------------------------------------------------------------- captions ---
_SHAPE_WORDS = {
    "circle": ["circle", "circle", "circle", "disc", "round dot"],
    "square": ["square", "square", "square", "square block"],
    "triangle": ["triangle", "triangle", "triangle", "triangular shape"],
    "star": ["star", "star", "star", "five-pointed star"],
    "hexagon": ["hexagon", "hexagon", "hexagon", "six-sided shape"],
}
_SIZE_WORDS = {
    "small": ["small", "small", "tiny", "little"],
    "large": ["large", "big", "big", "huge"],
}
_POSITION_PHRASES = {
    "center": ["in the center", "in the middle", "in the centre of the image",
               "right in the middle of the picture"],
    "left": ["on the left", "on the left side", "towards the left",
             "on the left of the picture"],
    "right": ["on the right", "on the right side", "towards the right",
              "on the right of the frame"],
    "top": ["at the top", "near the top of the picture", "in the upper part",
            "at the top of the image"],
    "bottom": ["at the bottom", "near the bottom of the picture",
               "in the lower part", "at the bottom of the image"],
    "top left": ["in the top left corner", "in the upper left corner",
                 "at the top left"],
    "top right": ["in the top right corner", "in the upper right corner",
                  "at the top right"],
    "bottom left": ["in the bottom left corner", "in the lower left corner",
                    "at the bottom left"],
    "bottom right": ["in the bottom right corner", "in the lower right corner",
                     "at the bottom right"],
}
_BACKGROUND_PHRASES = {
    "light": ["on a white background", "on a light background",
              "against a pale backdrop", "on a bright background"],
    "dark": ["on a dark background", "on a black background",
             "against a dark backdrop", "on a dark grey background"],
    "noisy": ["on a noisy background", "on a grainy background",
              "against a speckled backdrop", "on a noisy grey background"],
    "gradient": ["on a gradient background", "on a shaded background",
                 "against a smooth gradient"],
}
# Main-shape templates. Fields: {a} article for what follows, {size}, {colour},
# {shape}, {pos}, {bg}; several put the colour after the shape on purpose.
_TEMPLATES = [
    "{a_size} {size} {colour} {shape} {pos}",
    "{a_size} {size} {colour} {shape} {pos} {bg}",
    "{a_colour} {colour} {shape}",
    "{a_colour} {colour} {shape} {bg}",
    "photo of {a_colour} {colour} {shape}",
    "a picture of {a_colour} {colour} {shape} {pos}",
    "there is {a_size} {size} {colour} {shape} {pos}",
    "there is {a_size} {size} {colour} {shape} {pos} {bg}",
    "{pos_cap} there is {a_colour} {colour} {shape}",
    "{colour} {shape} {pos}",
    "{a_shape} {shape} that is {colour}, drawn {pos}",
    "an image showing {a_size} {size} {shape} coloured {colour}",
    "the {shape} {pos} is {colour}",
    "simple drawing of {a_colour} {colour} {shape} {bg}",
    "{a_size} {size} {shape} in {colour} {bg}",
    "{colour} is the colour of the {size} {shape} {pos}",
    "a {colour_adj} {shape} {pos}",
    "clip art: {a_colour} {colour} {shape}",
]
_SECOND_TEMPLATES = [
    " and a small {colour} {shape}",
    " next to {a_size} {size} {colour} {shape}",
    " with {a_colour} {colour} {shape} nearby",
    ", plus {a_size} {size} {colour} {shape} {pos}",
]


def _article(word: str) -> str:
  return "an" if word[:1] in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
  return options[int(rng.integers(len(options)))]


def _shape_phrase_fields(rng: np.random.Generator, colour: str, shape: str,
                         size: str, position: str) -> Dict[str, str]:
  size_w = _pick(rng, _SIZE_WORDS[size])
  shape_w = _pick(rng, _SHAPE_WORDS[shape])
  pos_w = _pick(rng, _POSITION_PHRASES[position])
  return {
      "colour": colour, "shape": shape_w, "size": size_w, "pos": pos_w,
      "pos_cap": pos_w[0].upper() + pos_w[1:],
      "a_size": _article(size_w), "a_colour": _article(colour),
      "a_shape": _article(shape_w),
      "colour_adj": f"bright {colour}" if colour != "purple" else "deep purple",
  }


def make_caption(rng: np.random.Generator, main: Dict[str, Any],
                 second: Optional[Dict[str, Any]], background: str) -> str:
  """Writes a varied natural-language caption for one scene.

  Args:
    rng: the example's random generator (consumed deterministically).
    main: attributes of the main shape (colour, shape, size, position).
    second: attributes of the optional second shape, or None.
    background: one of ``BACKGROUNDS``.

  Returns:
    The caption; the main shape's colour and shape words always appear in it.
  """
  fields = _shape_phrase_fields(rng, main["colour"], main["shape"],
                                main["size"], main["position"])
  fields["bg"] = _pick(rng, _BACKGROUND_PHRASES[background])
  caption = _pick(rng, _TEMPLATES).format(**fields)
  if second is not None:
    f2 = _shape_phrase_fields(rng, second["colour"], second["shape"],
                              second["size"], second["position"])
    caption += _pick(rng, _SECOND_TEMPLATES).format(**f2)
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


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float,
                r: float, angle: float, fill: Tuple[int, int, int]) -> None:
  if shape == "circle":
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
  elif shape == "square":
    # Circumradius scales keep the areas of the shapes roughly equal.
    draw.polygon(_polygon(cx, cy, r * 1.2, 4, angle + math.pi / 4), fill=fill)
  elif shape == "triangle":
    draw.polygon(_polygon(cx, cy + r * 0.15, r * 1.25, 3, angle), fill=fill)
  elif shape == "star":
    draw.polygon(_polygon(cx, cy, r * 1.3, 5, angle, inner=r * 0.55),
                 fill=fill)
  elif shape == "hexagon":
    draw.polygon(_polygon(cx, cy, r * 1.05, 6, angle), fill=fill)
  else:
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
  """An HxWx3 uint8 background of the given kind."""
  if kind == "light":
    base = rng.integers(205, 256, size=3)
    img = np.broadcast_to(base, (size, size, 3))
  elif kind == "dark":
    base = rng.integers(0, 60, size=3)
    img = np.broadcast_to(base, (size, size, 3))
  elif kind == "noisy":
    base = rng.integers(100, 170)
    noise = rng.normal(0.0, 16.0, size=(size, size, 1))
    img = np.repeat(base + noise, 3, axis=2)
  elif kind == "gradient":
    a = rng.integers(0, 70, size=3).astype(np.float32)
    b = rng.integers(190, 256, size=3).astype(np.float32)
    if rng.random() < 0.5:
      a, b = b, a
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(a + (b - a) * t, (size, size, 3))
    if rng.random() < 0.5:
      img = img.transpose(1, 0, 2)
  else:
    raise ValueError(f"Unknown background {kind!r}; expected {BACKGROUNDS}.")
  return np.clip(img, 0, 255).astype(np.uint8)


def _jitter_colour(rng: np.random.Generator,
                   rgb: Tuple[int, int, int]) -> Tuple[int, int, int]:
  return tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in rgb)


def _place(rng: np.random.Generator, position: str, size_name: str,
           image_size: int) -> Tuple[float, float, float]:
  """Centre (x, y) and radius in pixels for a shape."""
  # Big enough that the shape, not only its colour, survives a 32 px resize.
  lo, hi = (0.13, 0.17) if size_name == "small" else (0.22, 0.28)
  r = rng.uniform(lo, hi) * image_size
  fx, fy = POSITIONS[position]
  jx, jy = rng.uniform(-0.04, 0.04, size=2)
  return (fx + jx) * image_size, (fy + jy) * image_size, r


def render_example(rng: np.random.Generator, image_size: int,
                   label: Optional[int] = None) -> Tuple[bytes, Dict[str, Any]]:
  """Draws one scene and writes its caption.

  Args:
    rng: the example's own random generator.
    image_size: side of the square image in pixels.
    label: class index of the main shape, or None to draw it at random.

  Returns:
    ``(jpeg_bytes, attributes)``; attributes hold the caption, the main
    shape's colour/shape/size/position, the class index and name, the
    background and the optional second shape.
  """
  num_classes = len(CLASS_NAMES)
  if label is None:
    label = int(rng.integers(num_classes))
  colour = list(COLOURS)[label // len(SHAPES)]
  shape = SHAPES[label % len(SHAPES)]
  background = _pick(rng, BACKGROUNDS)
  has_second = rng.random() < 0.2
  # With a second shape the main one is large and off-centre, leaving room.
  positions = [p for p in POSITIONS if not (has_second and p == "center")]
  main = {"colour": colour, "shape": shape,
          "size": "large" if has_second else _pick(rng, SIZES),
          "position": _pick(rng, positions)}
  second = None
  if has_second:
    # A smaller shape of another class, far enough from the main one.
    mx, my = POSITIONS[main["position"]]
    far = [p for p, (x, y) in POSITIONS.items()
           if math.hypot(x - mx, y - my) > 0.4]
    other = int(rng.integers(num_classes - 1))
    other += other >= label
    second = {"colour": list(COLOURS)[other // len(SHAPES)],
              "shape": SHAPES[other % len(SHAPES)], "size": "small",
              "position": _pick(rng, far)}

  image = Image.fromarray(_background(rng, background, image_size))
  draw = ImageDraw.Draw(image)
  scenes = ([second] if second else []) + [main]  # main drawn last, on top.
  for s in scenes:
    cx, cy, r = _place(rng, s["position"], s["size"], image_size)
    angle = rng.uniform(-0.3, 0.3)
    _draw_shape(draw, s["shape"], cx, cy, r, angle,
                _jitter_colour(rng, COLOURS[s["colour"]]))
  caption = make_caption(rng, main, second, background)
  buf = io.BytesIO()
  image.save(buf, format="JPEG", quality=_JPEG_QUALITY)
  attrs = {
      "caption": caption, "label": label, "class_name": CLASS_NAMES[label],
      "colour": colour, "shape": shape, "size": main["size"],
      "position": main["position"], "background": background,
      "second_shape": second,
  }
  return buf.getvalue(), attrs


# ------------------------------------------------------------------ writing ---
def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  # Fixed metadata: identical bytes on every run and machine.
  info.mtime, info.mode, info.uid, info.gid = 0, 0o644, 0, 0
  info.uname = info.gname = ""
  tar.addfile(info, io.BytesIO(data))


def _write_shard(path: str, shard_index: int, split_id: int, seed: int,
                 first_index: int, count: int, image_size: int,
                 balanced_classes: bool) -> None:
  with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
    for j in range(count):
      index = first_index + j
      rng = np.random.default_rng((seed, split_id, index))
      label = index % len(CLASS_NAMES) if balanced_classes else None
      jpeg, attrs = render_example(rng, image_size, label)
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
            seed: int) -> Dict[str, int]:
  return {"num_train": num_train, "num_eval": num_eval,
          "image_size": image_size, "num_train_shards": num_train_shards,
          "num_eval_shards": num_eval_shards, "seed": seed,
          "generator_version": GENERATOR_VERSION}


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
                     "shapes; use at least 16 (default 112).")


def generate(out_dir: str, num_train: int = 20000, num_eval: int = 1000,
             image_size: int = 112, num_train_shards: int = 8, seed: int = 0,
             num_eval_shards: int = 1) -> Dict[str, Any]:
  """Writes the demo data set into ``out_dir`` (created; must be empty).

  Prefer ``ensure_demo_data``, which adds caching and atomic replacement.

  Args:
    out_dir: a local directory that does not exist yet or is empty.
    num_train: number of training examples (classes drawn at random).
    num_eval: number of held-out eval examples (classes balanced: example i
      has class ``i % 30``; a different random stream from train).
    image_size: side of the square JPEG images in pixels.
    num_train_shards: number of ``train-XXXXX.tar`` files.
    seed: the seed; the same seed gives byte-identical files.
    num_eval_shards: number of ``eval-XXXXX.tar`` files.

  Returns:
    The manifest written last to ``out_dir/manifest.json``.
  """
  params = _params(num_train, num_eval, image_size, num_train_shards,
                   num_eval_shards, seed)
  _validate(params)
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
                   first, count, image_size, balanced_classes=split == "eval")
      names.append(name)
      first += count
    files[split] = names
  with open(os.path.join(out_dir, "classes.json"), "w") as f:
    json.dump(list(CLASS_NAMES), f, indent=1)
  manifest = {"params": params, "files": files,
              "num_examples": {"train": num_train, "eval": num_eval},
              "num_classes": len(CLASS_NAMES)}
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
    out_dir: target directory (default: ``default_data_dir()``).
    **kwargs: parameters of ``generate`` (num_train, num_eval, image_size,
      num_train_shards, num_eval_shards, seed).

  Returns:
    ``out_dir`` as an absolute path.
  """
  out_dir = os.path.abspath(os.path.expanduser(out_dir or default_data_dir()))
  defaults = {"num_train": 20000, "num_eval": 1000, "image_size": 112,
              "num_train_shards": 8, "num_eval_shards": 1, "seed": 0}
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


def default_data_dir() -> str:
  """``$CLIPA_DEMO_DATA`` or ``~/.cache/clipa_t5x/demo_shapes``."""
  return os.environ.get("CLIPA_DEMO_DATA") or os.path.join(
      os.path.expanduser("~"), ".cache", "clipa_t5x", "demo_shapes")


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(
      description="Generate the demo_shapes webdataset shards.")
  parser.add_argument("--out", default=None,
                      help="output directory (default: $CLIPA_DEMO_DATA or "
                      "~/.cache/clipa_t5x/demo_shapes)")
  parser.add_argument("--num_train", type=int, default=20000)
  parser.add_argument("--num_eval", type=int, default=1000)
  parser.add_argument("--image_size", type=int, default=112)
  parser.add_argument("--num_train_shards", type=int, default=8)
  parser.add_argument("--num_eval_shards", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  start = time.time()
  kw = {k: v for k, v in vars(args).items() if k != "out"}
  path = ensure_demo_data(args.out, **kw)
  print(f"demo_shapes data set ready at {path} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
  main()
