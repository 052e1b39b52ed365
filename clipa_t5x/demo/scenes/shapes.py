"""The demo's main scene: coloured shapes with varied captions.

Every image shows one shape (one of ``SHAPES``) in one of ``COLOURS``, small or
large, near the centre, on a tinted light background. The caption names the
shape in a few phrasings, with its colour in most of them and sometimes its size
or the background; the zero-shot label is the (colour, shape) pair, e.g. "red
circle". Class index = colour index * len(SHAPES) + shape index.

Version 4 (experiments/demo_diagnosis/README.md has the measurements behind
it): a shape spans 2-3 of the 4x4 patches at 32 px, the crop cannot cut it
away, the background is always light, and captions that omit the colour make
shape worth learning from the first step. Smaller small shapes (radius 6-11% or
8-11% of the side, so that 32 px blurs them and 48 px does not) were tried for
the demo's resolution story (docs/demo.md): the 800-step pre-training then
learned colour only (shape 20% and 35%, chance 20%).
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from clipa_t5x.demo.scenes.drawing import COLOURS, SUPERSAMPLE, encode_jpeg, jitter_colour

# Bump when the rendered bytes change, so cached data sets are regenerated.
GENERATOR_VERSION = 4

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
  fill = jitter_colour(rng, COLOURS[colour], 18)

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


def class_factors() -> Dict[str, List[int]]:
  """Per-class index of each label factor: ``{'colour': [...], 'shape': [...]}``.

  Zero-shot evaluation uses it to report how often the colour and the shape
  of the predicted class are right on their own.
  """
  return {"colour": [i // len(SHAPES) for i in range(len(CLASS_NAMES))],
          "shape": [i % len(SHAPES) for i in range(len(CLASS_NAMES))]}
