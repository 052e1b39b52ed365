"""The demo's second scene: textures of bold capital letters that differ in one stroke.

Every image is one letter of ``LETTERS`` (E F O Q P R C G U V, DejaVu Sans
Bold) repeated over the whole frame in a grid at a random phase, in one of the
demo's colours on a tinted light background. The copies are 0.25-0.7 of the
side apart (font size 30-80% of the side), so a 16 px image of a coarse
texture shows letters as large as a 32 px image of a fine one. The label is the
letter alone (10 classes); colour, scale and phase are nuisances the captions
never name.

Why letters (experiments/demo_diagnosis/README.md, section 5): the shapes of
``demo_shapes`` are learned *better* at 16 px than at 32 px, so fewer image
tokens cost a small model nothing and the inverse-scaling law has nothing to
show there. These letters come in pairs that differ in one small stroke (E/F,
O/Q, P/R, C/G, U/V), which blurs away in small copies at 16 px.
(I and T are not nouns to the syntax-masking table, so syntax masking would
drop them from long captions; U and V are.) ``class_factors`` reports the
pair (the coarse outline) as a factor, so the evaluation shows how much of the
error is the stroke that tells the two letters of a pair apart.

Why a texture, not one letter (version 1 drew one small letter near the
centre; experiments/demo_diagnosis/README.md, section 6): with one letter, a
model pre-trained at 16 px, where every patch holds part of the letter, met
12 patches of bare background at 32 px and fell to chance, and a 100-step
fine-tune could not recover (10-17% zero-shot). Natural images, on which CLIPA
works, have content in every patch at every resolution and objects at many
scales; the texture gives the letters both properties.

The font is the one matplotlib ships (an ``experiments`` / ``demo`` extra).
``clipa_t5x.demo.generate`` writes it as every scene (``generate(...,
scene='glyphs')``): the same tar shards and manifest.
"""

import functools
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipa_t5x.demo.scenes.drawing import COLOURS, SUPERSAMPLE, encode_jpeg, jitter_colour

# Bump when the rendered bytes or captions change (cached data sets are regenerated).
GENERATOR_VERSION = 2

# Pairs that differ in one stroke, next to each other: class 2k and 2k + 1.
LETTERS: Tuple[str, ...] = ("E", "F", "O", "Q", "P", "R", "C", "G", "U", "V")
CLASS_NAMES: Tuple[str, ...] = tuple(f"letter {l}" for l in LETTERS)
FONT_FILE = "DejaVuSans-Bold.ttf"
# Font size (em) as a fraction of the side; capitals are ~0.73 em tall, so at
# 32 px a letter is 7-19 px high and at 16 px 3.5-9.5 px, where the Q's tail and
# the E's lower bar of the smaller copies blur away.
_FONT_SIZE = (0.30, 0.80)
SPACING = 0.85  # copies this many em apart, in rows and columns
_COLOUR_JITTER = 20

# Captions name the letter only (colour words let a contrastive model settle on
# colour; experiments/demo_diagnosis, section 5), and most are short: with
# longer, wordier captions a width-128 model at 4 image tokens had not got off
# the loss plateau after 1,000 steps (31% zero-shot; 99% with short captions
# in the CLIP probe). In the last two the letter comes after 7 word pieces:
# truncation to 8 tokens cuts it, syntax masking (nouns first) keeps it.
_TEMPLATES = (
    "the letter {l}",
    "a letter {l}",
    "letter {l}",
    "{l}",
    "a capital {l}",
    "the capital letter {l}",
    "a photo of the letter {l}",
    "a bold letter {l}",
    "a pattern printed with many copies of the bold letter {l}",
    "a close-up photo of rows of the bold capital letter {l}",
)


@functools.lru_cache(maxsize=None)
def font_path(name: str = FONT_FILE) -> str:
  """Path of the font file ``name`` (default DejaVu Sans Bold) as matplotlib ships it.

  A clear error without matplotlib or without the file.
  """
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError("the glyphs demo scene draws its letters with the font matplotlib "
                      "ships; install it: pip install matplotlib (or the 'demo' extra).") from None
  path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from this matplotlib install; reinstall "
                            "matplotlib.")
  return path


@functools.lru_cache(maxsize=64)
def _font(pixels: int) -> ImageFont.FreeTypeFont:
  return ImageFont.truetype(font_path(), pixels)


def make_caption(rng: np.random.Generator, letter: str) -> str:
  """One caption for a letter (a template drawn from ``rng``)."""
  return _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(l=letter)


def draw_texture(draw: ImageDraw.ImageDraw, letter: str, font: ImageFont.FreeTypeFont,
                 fill: Tuple[int, int, int], phase: Tuple[float, float], step: float,
                 extent: float, scale: float = 1.0) -> None:
  """Draws ``letter`` in rows and columns ``step`` apart, from ``phase``, over ``[0, extent]``.

  Copies start one step before the frame and end one after, so the border is
  covered too. ``phase``, ``step`` and ``extent`` share one unit (image
  fractions, or pixels); ``scale`` converts it to pixels.
  """
  px, py = phase
  for y in np.arange(py - step, extent + step, step):
    for x in np.arange(px - step, extent + step, step):
      draw.text((x * scale, y * scale), letter, font=font, fill=fill, anchor="mm")


def render_example(rng: np.random.Generator, image_size: int,
                   label: Optional[int] = None) -> Tuple[bytes, Dict[str, Any]]:
  """Draws one letter texture and writes its caption (the scene contract of ``clipa_t5x.demo.scenes``).

  Returns ``(jpeg_bytes, attributes)``; the attributes hold the caption, the
  class index and name, the letter, its colour, the grid's phase ``(x, y)``
  and the font size as image fractions, and the background RGB.
  """
  if label is None:
    label = int(rng.integers(len(LETTERS)))
  letter = LETTERS[label]
  colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
  font_size = float(rng.uniform(*_FONT_SIZE))
  step = SPACING * font_size  # of the side
  fx, fy = rng.uniform(0.0, step, size=2)
  background = tuple(int(v) for v in rng.integers(215, 256, 3))
  fill = jitter_colour(rng, COLOURS[colour], _COLOUR_JITTER)
  big = image_size * SUPERSAMPLE
  image = Image.new("RGB", (big, big), background)
  draw_texture(ImageDraw.Draw(image), letter, _font(max(4, round(font_size * big))), fill,
               (fx, fy), step, extent=1.0, scale=big)
  jpeg = encode_jpeg(image, image_size)
  attrs = {"caption": make_caption(rng, letter), "label": label, "class_name": CLASS_NAMES[label],
           "letter": letter, "colour": colour,
           "phase": [round(float(fx), 4), round(float(fy), 4)], "font_size": round(font_size, 4),
           "background": list(background)}
  return jpeg, attrs


def class_factors() -> Dict[str, List[int]]:
  """``{'pair': [...]}``: which one-stroke pair (E/F, O/Q, ...) each class belongs to.

  Pair accuracy is how often the outline is right; top-1 below it is the
  stroke that tells the two letters of a pair apart.
  """
  return {"pair": [i // 2 for i in range(len(LETTERS))]}
