"""Can the demo's image tower see shape at all? A supervised check, no text.

Renders demo_shapes scenes in memory (the generator's own ``render_example``),
resizes them to the pre-training resolution and trains the demo's image tower
(CLIPA ViT, same init) with a plain softmax head on the *shape* label (or the
colour, or the 30-way class) with optax AdamW. Scene options strip the
nuisances one at a time (position, size, background, second shape, crop), so
each row of the diagnosis isolates one cause. A pixel-space logistic
regression (no ViT) is the floor of "how linearly visible is it".

  .venv/bin/python experiments/demo_diagnosis/supervised_probe.py \
      --scene current --target shape --size 32 --steps 400
"""

import argparse
import importlib
import io
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from clipa_t5x.demo.scenes import shapes as demo_shapes  # --generator picks
from clipa_t5x.models import vit

SOURCE = 64  # rendered side (v2: 112)
# The old (version 2) generator's frozen copy is kept by git only:
V2_COMMIT = "4c94a04"
V2_PATH = "experiments/demo_diagnosis/demo_shapes_v2.py"


def _old_generator():
  """The version-2 generator (``--generator v2``), restored from git beside this file."""
  here = os.path.dirname(os.path.abspath(__file__))
  if not os.path.exists(os.path.join(here, "demo_shapes_v2.py")):
    sys.exit(f"--generator v2 needs the old generator beside this file; restore it with\n"
             f"  git show {V2_COMMIT}:{V2_PATH} > {V2_PATH}")
  sys.path.insert(0, here)
  return importlib.import_module("demo_shapes_v2")


def _patch_scene(scene: str):
  """Monkeypatches the (old, v2) generator's nuisance tables for one scene."""
  g = demo_shapes
  if scene == "current":
    return
  if "center" in scene:
    g.POSITIONS = {"center": (0.5, 0.5)}
    g._MAX_OFFSET = 0.0  # v3
  if "light" in scene:
    g.BACKGROUNDS = ("light",)
  if "large" in scene:
    g.SIZES = ("large",)


def render(n: int, size: int, seed: int, split: int, crop_min: float, no_second: bool):
  """n images resized to size px (after an optional random crop) + attributes."""
  images = np.zeros((n, size, size, 3), np.uint8)
  shapes, colours = np.zeros(n, np.int32), np.zeros(n, np.int32)
  for i in range(n):
    rng = np.random.default_rng((seed, split, i))
    if no_second:
      # render_example draws has_second from rng.random() < 0.2; retry streams.
      for k in range(100):
        rng = np.random.default_rng((seed, split, i, k))
        try:
          jpeg, a = demo_shapes.render_example(rng, SOURCE)
        except ValueError:  # a second shape with no free position (centre-only scene)
          continue
        if a.get("second_shape") is None:
          break
    else:
      jpeg, a = demo_shapes.render_example(rng, SOURCE)
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    images[i] = crop_resize(img, size, crop_min, np.random.default_rng((seed, split, i, 7)))
    shapes[i] = demo_shapes.SHAPES.index(a["shape"])
    colours[i] = list(demo_shapes.COLOURS).index(a["colour"])
  return images, shapes, colours


def crop_resize(img: Image.Image, size: int, crop_min: float, rng) -> np.ndarray:
  """The pipeline's random crop (area >= crop_min of the square image, aspect
  3/4..4/3; none when crop_min is 1), then a bilinear resize to size px."""
  source = img.size[0]
  if crop_min < 1.0:
    area = rng.uniform(crop_min, 1.0) * source * source
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = min(source, int(round(math.sqrt(area * ratio))))
    h = min(source, int(round(math.sqrt(area / ratio))))
    x0, y0 = rng.integers(0, source - w + 1), rng.integers(0, source - h + 1)
    img = img.crop((x0, y0, x0 + w, y0 + h))
  return np.asarray(img.resize((size, size), Image.BILINEAR))


def logistic_pixels(xtr, ytr, xte, yte, k, steps=300):
  """Multinomial logistic regression on standardised pixels (full-batch Adam)."""
  xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255.
  xte = xte.reshape(len(xte), -1).astype(np.float32) / 255.
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-3
  xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
  w = jnp.zeros((xtr.shape[1], k)); b = jnp.zeros(k)
  tx = optax.adamw(1e-2, weight_decay=1e-2); p = (w, b); s = tx.init(p)

  @jax.jit
  def step(p, s):
    def loss(p):
      lg = xtr @ p[0] + p[1]
      return optax.softmax_cross_entropy_with_integer_labels(lg, ytr).mean()
    l, g = jax.value_and_grad(loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l
  for _ in range(steps):
    p, s, _ = step(p, s)
  return float(np.mean(np.argmax(xte @ p[0] + p[1], -1) == yte))


def train_vit(xtr, ytr, xte, yte, k, steps, lr, batch, width, depth, patch, seed=0):
  """The demo ViT image tower + linear head, trained with softmax CE."""
  model = vit.VisionTransformer(width=width, depth=depth, heads=4, mlp_dim=4 * width,
                                patch_size=patch, out_dim=k)
  params = model.init(jax.random.key(seed), jnp.asarray(xtr[:2]), train=False)["params"]
  sched = optax.warmup_cosine_decay_schedule(0., lr, max(1, steps // 10), steps)
  tx = optax.adamw(sched, weight_decay=0.1)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    def loss(p):
      lg = model.apply({"params": p}, x, train=False)
      return optax.softmax_cross_entropy_with_integer_labels(lg, y).mean()
    l, g = jax.value_and_grad(loss)(params)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt, l

  rng = np.random.default_rng(seed)
  losses = []
  for t in range(steps):
    idx = rng.integers(0, len(xtr), batch)
    params, opt, l = step(params, opt, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]))
    losses.append(float(l))
  pred = []
  for i in range(0, len(xte), 500):
    pred.append(np.argmax(model.apply({"params": params}, jnp.asarray(xte[i:i + 500]),
                                      train=False), -1))
  acc = float(np.mean(np.concatenate(pred) == yte))
  return acc, losses


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--generator", default="v2", choices=["v2", "v3", "current"],
                 help="v2: the old generator (restored from git); v3 or current: the demo's "
                 "shapes scene (clipa_t5x.demo.scenes.shapes)")
  p.add_argument("--scene", default="current")
  p.add_argument("--no_second", action="store_true")
  p.add_argument("--target", default="shape", choices=["shape", "colour"])
  p.add_argument("--size", type=int, default=32)
  p.add_argument("--crop_min", type=float, default=1.0)
  p.add_argument("--num_train", type=int, default=6000)
  p.add_argument("--num_eval", type=int, default=1000)
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--depth", type=int, default=4)
  p.add_argument("--patch", type=int, default=8)
  p.add_argument("--pixels", action="store_true", help="also the pixel logistic regression")
  a = p.parse_args()
  global demo_shapes, SOURCE
  if a.generator == "v2":
    demo_shapes, SOURCE = _old_generator(), 112
  _patch_scene(a.scene)
  t0 = time.time()
  xtr, str_, ctr = render(a.num_train, a.size, 0, 0, a.crop_min, a.no_second)
  xte, ste, cte = render(a.num_eval, a.size, 0, 1, 1.0, a.no_second)
  ytr, yte = (str_, ste) if a.target == "shape" else (ctr, cte)
  k = len(demo_shapes.SHAPES) if a.target == "shape" else len(demo_shapes.COLOURS)
  out = dict(vars(a), render_s=round(time.time() - t0, 1))
  if a.pixels:
    out["pixel_logreg_acc"] = logistic_pixels(xtr, ytr, xte, yte, k)
  t0 = time.time()
  acc, losses = train_vit(xtr, ytr, xte, yte, k, a.steps, a.lr, a.batch, a.width,
                          a.depth, a.patch)
  out.update(vit_acc=acc, chance=1 / k, train_s=round(time.time() - t0, 1),
             loss_first=round(float(np.mean(losses[:20])), 3),
             loss_last=round(float(np.mean(losses[-20:])), 3))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
