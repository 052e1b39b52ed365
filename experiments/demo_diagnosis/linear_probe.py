"""Linear probes on a trained demo model's frozen features: is shape in them?

Loads a stage (``inference.load``), embeds held-out and fresh training images
of the demo data (read from the generator, the same scenes as the shards) with
the image tower, and fits a softmax regression for shape and for colour on the
features. Also embeds the 20 class prompts with the text tower and reports how
far apart the prompts of same-colour classes are (cosine), i.e. whether the
text tower tells the shapes apart.

  .venv/bin/python experiments/demo_diagnosis/linear_probe.py --model runs/demo_cpu/pretrain
"""

import argparse
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clipa_t5x import inference
from clipa_t5x.demo.scenes import shapes as demo_shapes


def images(n: int, split: int, size: int):
  out, shapes, colours = [], [], []
  for i in range(n):
    jpeg, a = demo_shapes.render_example(np.random.default_rng((123, split, i)), size,
                                         i % len(demo_shapes.CLASS_NAMES))
    out.append(jpeg)
    shapes.append(demo_shapes.SHAPES.index(a["shape"]))
    colours.append(list(demo_shapes.COLOURS).index(a["colour"]))
  return out, np.array(shapes), np.array(colours)


def softmax_probe(xtr, ytr, xte, yte, k, steps=500):
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
  xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
  p = (jnp.zeros((xtr.shape[1], k)), jnp.zeros(k))
  tx = optax.adam(1e-2)
  s = tx.init(p)

  @jax.jit
  def step(p, s):
    g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        xtr @ p[0] + p[1], ytr).mean() + 1e-4 * jnp.sum(p[0] ** 2))(p)
    u, s = tx.update(g, s)
    return optax.apply_updates(p, u), s
  for _ in range(steps):
    p, s = step(p, s)
  return float(np.mean(np.argmax(xte @ p[0] + p[1], -1) == yte))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", required=True)
  ap.add_argument("--num_train", type=int, default=2000)
  ap.add_argument("--num_eval", type=int, default=1000)
  a = ap.parse_args()
  model = inference.load(a.model, batch_size=200)
  tr, str_, ctr = images(a.num_train, 0, 64)
  te, ste, cte = images(a.num_eval, 1, 64)
  ftr, fte = model.encode_images(tr), model.encode_images(te)
  out = {"model": a.model, "image_size": model.image_size,
         "probe_shape": softmax_probe(ftr, str_, fte, ste, len(demo_shapes.SHAPES)),
         "probe_colour": softmax_probe(ftr, ctr, fte, cte, len(demo_shapes.COLOURS))}
  t = model.encode_texts([f"a photo of a {c}." for c in demo_shapes.CLASS_NAMES])
  sim = t @ t.T
  n = len(demo_shapes.SHAPES)
  same_colour = [sim[i, j] for i in range(len(t)) for j in range(len(t))
                 if i != j and i // n == j // n]
  same_shape = [sim[i, j] for i in range(len(t)) for j in range(len(t))
                if i != j and i % n == j % n]
  out["text_cos_same_colour_other_shape"] = float(np.mean(same_colour))
  out["text_cos_same_shape_other_colour"] = float(np.mean(same_shape))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
