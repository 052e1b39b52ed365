"""Does a lower resolution cost a small ViT accuracy on this data? A supervised check.

The inverse-scaling study needs data on which fewer image tokens *cost*
accuracy (so that larger models can lose less of it). This probe trains the
study's image tower (CLIPA ViT, patch 8, 4 blocks) with a softmax head on the
class label, at several resolutions and widths, for a fixed number of steps:

* ``--scene shapes``: the demo's scenes (``demo_shapes`` v4, shape label, the
  pipeline's >= 80% crop), rendered as ``supervised_probe.py`` renders them;
* ``--scene glyphs``: a candidate replacement: ten letters that differ in
  small strokes (``--glyph_set lower``: b d p q h n u o c e in DejaVu Sans,
  45-75% of the side; ``capitals``: E F O Q P R C G I T in DejaVu Sans Bold,
  70-90%; ``small_capitals``: the same at 30-40%; ``medium_capitals``: 45-55%;
  ``scattered_*``: anywhere in the frame; ``tiled_*``: a texture of copies
  over the whole frame), from matplotlib's fonts, in the demo's colours on a
  tinted light background, position jittered, the same crop.

Each line of output is one (scene, resolution, width) as JSON.

  .venv/bin/python experiments/demo_diagnosis/resolution_probe.py \\
      --scene glyphs --sizes 32,16 --widths 64,128 --steps 300
"""

import argparse
import functools
import json
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import supervised_probe
from clipa_t5x.demo.scenes import glyphs as demo_glyphs
from clipa_t5x.demo.scenes import shapes as demo_shapes

# Letter sets: lower-case ones that differ in small strokes, and bold capitals
# whose pairs (E/F, O/Q, P/R, ...) differ in one stroke. Each is (letters, font
# file, font size range as a fraction of the side[, layout]); the layout is the
# largest offset of the one letter from the centre (default 0.08 of the side),
# or "tiled": copies over the whole frame, 0.85 em apart, at a random phase.
GLYPH_SETS = {
    "lower": (("b", "d", "p", "q", "h", "n", "u", "o", "c", "e"), "DejaVuSans.ttf", (0.45, 0.75)),
    "capitals": (("E", "F", "O", "Q", "P", "R", "C", "G", "I", "T"), "DejaVuSans-Bold.ttf",
                 (0.7, 0.9)),
    "small_capitals": (("E", "F", "O", "Q", "P", "R", "C", "G", "I", "T"),
                       "DejaVuSans-Bold.ttf", (0.3, 0.4)),
    "medium_capitals": (("E", "F", "O", "Q", "P", "R", "C", "G", "I", "T"),
                        "DejaVuSans-Bold.ttf", (0.45, 0.55)),
    # demo_glyphs version 1's letters and sizes (U/V for I/T: syntax masking keeps them).
    "demo_glyphs": (("E", "F", "O", "Q", "P", "R", "C", "G", "U", "V"),
                    "DejaVuSans-Bold.ttf", (0.3, 0.4)),
    # The same letters at many sizes (25-60% of the side): scale variety.
    "mixed_capitals": (("E", "F", "O", "Q", "P", "R", "C", "G", "U", "V"),
                       "DejaVuSans-Bold.ttf", (0.25, 0.6)),
    # demo_glyphs' letters anywhere in the frame (centre within 0.25-0.75 of the
    # side, not +-0.08 around the middle): at 16 px some patches hold no letter.
    "scattered_capitals": (("E", "F", "O", "Q", "P", "R", "C", "G", "U", "V"),
                           "DejaVuSans-Bold.ttf", (0.3, 0.4), 0.25),
    "scattered_mixed": (("E", "F", "O", "Q", "P", "R", "C", "G", "U", "V"),
                        "DejaVuSans-Bold.ttf", (0.25, 0.5), 0.25),
    # demo_glyphs' letters repeated over the whole frame at a random phase (a
    # texture): every patch holds letter strokes at every resolution.
    "tiled_capitals": (("E", "F", "O", "Q", "P", "R", "C", "G", "U", "V"),
                       "DejaVuSans-Bold.ttf", (0.3, 0.4), "tiled"),
    # The same texture with font sizes 0.3-0.8 of the side: the 16 px image of a
    # coarse texture shows letters as large as the 32 px image of a fine one
    # (demo_glyphs version 2's layout).
    "tiled_mixed": (("E", "F", "O", "Q", "P", "R", "C", "G", "U", "V"),
                    "DejaVuSans-Bold.ttf", (0.3, 0.8), "tiled"),
}
GLYPHS = GLYPH_SETS["lower"][0]
SOURCE = 64  # rendered side before the crop and resize


def render_glyphs(n: int, size: int, split: int, crop_min: float, glyph_set: str = "lower"):
  """n glyph images at ``size`` px, their class indices and colour indices."""
  glyphs, font_name, (low, high), *rest = GLYPH_SETS[glyph_set]
  max_offset = rest[0] if rest else 0.08
  tiled = max_offset == "tiled"
  font_path = demo_glyphs.font_path(font_name)
  fonts = {}
  colours = list(demo_shapes.COLOURS.values())
  images = np.zeros((n, size, size, 3), np.uint8)
  labels = np.zeros(n, np.int32)
  colour_ids = np.zeros(n, np.int32)
  for i in range(n):
    rng = np.random.default_rng((11, split, i))
    label = int(rng.integers(len(glyphs)))
    px = int(rng.uniform(low, high) * SOURCE)
    font = fonts.setdefault(px, ImageFont.truetype(font_path, px))
    background = tuple(int(v) for v in rng.integers(215, 256, 3))
    img = Image.new("RGB", (SOURCE, SOURCE), background)
    draw = ImageDraw.Draw(img)
    colour_ids[i] = rng.integers(len(colours))
    fill = tuple(int(v) for v in np.clip(np.array(colours[colour_ids[i]])
                                         + rng.integers(-20, 21, 3), 0, 255))
    if tiled:  # demo_glyphs' grid of copies, shifted by a random phase
      step = demo_glyphs.SPACING * px
      demo_glyphs.draw_texture(draw, glyphs[label], font, fill, tuple(rng.uniform(0, step, 2)),
                               step, extent=SOURCE)
    else:
      cx, cy = SOURCE * (0.5 + rng.uniform(-max_offset, max_offset, 2))
      draw.text((cx, cy), glyphs[label], font=font, fill=fill, anchor="mm")
    images[i] = supervised_probe.crop_resize(img, size, crop_min, rng)
    labels[i] = label
  return images, labels, colour_ids


def render_shapes(n: int, size: int, split: int, crop_min: float):
  """n demo_shapes scenes at ``size`` px, their shape indices and colour indices."""
  supervised_probe.demo_shapes = demo_shapes
  supervised_probe.SOURCE = SOURCE
  return supervised_probe.render(n, size, 0, split, crop_min, no_second=False)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--scene", default="glyphs", choices=["glyphs", "shapes"])
  p.add_argument("--glyph_set", default="lower", choices=sorted(GLYPH_SETS))
  p.add_argument("--sizes", default="32,16")
  p.add_argument("--widths", default="64,128")
  p.add_argument("--patch", type=int, default=8)
  p.add_argument("--depth", type=int, default=4)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--crop_min", type=float, default=0.8)
  p.add_argument("--num_train", type=int, default=4000)
  p.add_argument("--num_eval", type=int, default=1000)
  a = p.parse_args()
  render = (functools.partial(render_glyphs, glyph_set=a.glyph_set) if a.scene == "glyphs"
            else render_shapes)
  classes = len(GLYPHS) if a.scene == "glyphs" else len(demo_shapes.SHAPES)
  for size in (int(s) for s in a.sizes.split(",")):
    xtr, ytr, _ = render(a.num_train, size, 0, a.crop_min)
    xte, yte, _ = render(a.num_eval, size, 1, 1.0)
    for width in (int(w) for w in a.widths.split(",")):
      start = time.time()
      acc, losses = supervised_probe.train_vit(xtr, ytr, xte, yte, classes, a.steps, a.lr,
                                               a.batch, width, a.depth, a.patch)
      scene = f"glyphs/{a.glyph_set}" if a.scene == "glyphs" else a.scene
      print(json.dumps({"scene": scene, "size": size, "tokens": (size // a.patch) ** 2,
                        "width": width, "steps": a.steps, "accuracy": acc,
                        "chance": 1 / classes, "loss_last": round(float(np.mean(losses[-20:])), 3),
                        "train_s": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
  main()
