"""The resolution probe with CLIP's loss: does a wider model lose less at fewer tokens?

``resolution_probe.py`` trains the image tower alone, supervised. This trains
the inverse-scaling study's whole two-tower model (``run.model_config``:
widths as the study's, 4 blocks, patch 8) with the project's contrastive loss
(``ClipaModel.loss_fn``) and optimizer (``optimizers.make_optimizer``, AdamW,
peak 1e-3 at batch 128 as the study), on in-memory images and captions, and
classifies the held-out images zero-shot with prompts. No SeqIO pipeline is
involved, so each run costs only its train steps.

Captions (``--captions mixed``): "the letter E", "a red letter E", "E in red"
or "a red E" (colour and letter drawn independently); ``--captions letter``:
"the letter E", "a letter E", "letter E" or "E". Tokenized once with the
project's tokenizer at 16 tokens (truncation). Zero-shot prompts: "the letter
E", "a letter E", averaged.

``--eval_sizes`` classifies the same held-out letters at other resolutions
(transfer without a fine-tune); ``--finetune_steps N`` then trains on at
``--finetune_size`` (CLIPA's second stage) and reports ``finetune_top1``.

  .venv/bin/python experiments/demo_diagnosis/clip_probe.py \\
      --glyph_set small_capitals --sizes 32,16 --widths 64,128 --steps 800 --seeds 0
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import resolution_probe
from clipa_t5x import optimizers
from clipa_t5x.demo.scenes import drawing
from clipa_t5x.data import text_reduction
from clipa_t5x.evaluation import batching
from clipa_t5x.evaluation import metrics
from clipa_t5x.evaluation import zeroshot
from clipa_t5x.models import clip

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "inverse_scaling"))
import run as study  # pylint: disable=wrong-import-position

# --captions mixed: three of four name the colour too; letter: only the letter.
CAPTION_SETS = {
    "mixed": ("the letter {g}", "a {c} letter {g}", "{g} in {c}", "a {c} {g}"),
    "letter": ("the letter {g}", "a letter {g}", "letter {g}", "{g}"),
}
PROMPTS = ("the letter {c}", "a letter {c}")
TEXT_LENGTH = 16


def captions_for(labels: np.ndarray, colours: np.ndarray, glyphs, seed: int,
                 caption_set: str = "mixed") -> np.ndarray:
  """One caption per image (template drawn at random), tokenized: int32 [N, TEXT_LENGTH]."""
  rng = np.random.default_rng(seed)
  names = list(drawing.COLOURS)
  templates = CAPTION_SETS[caption_set]
  texts = [templates[rng.integers(len(templates))].format(g=glyphs[l], c=names[c])
           for l, c in zip(labels, colours)]
  return text_reduction.tokenize_texts(texts, TEXT_LENGTH, "truncate")


def pad_to(images: np.ndarray, size: int, corner: bool = False) -> np.ndarray:
  """Each image on a ``size``-px canvas of its own corner colour: the letter keeps its pixel
  size while the patch grid grows (scale kept, more background tokens). Centred, or in the
  top-left ``corner``, where its patches keep the grid positions (and position embeddings)
  they had in the smaller image."""
  n, side = images.shape[:2]
  out = np.broadcast_to(images[:, :1, :1], (n, size, size, 3)).copy()
  start = 0 if corner else (size - side) // 2
  out[:, start:start + side, start:start + side] = images
  return out


def _train(model, params, images, texts, steps: int, lr: float, warmup: int, seed: int,
           batch: int):
  """``steps`` AdamW steps of the contrastive loss on (images, texts); returns (params, losses)."""
  config = optimizers.OptimizerConfig(base_learning_rate=lr, warmup_steps=warmup,
                                      weight_decay=0.2)
  tx, _ = optimizers.make_optimizer(config, batch, steps)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, texts, rng):
    (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(
        params, {"image": images, "text": texts}, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  order = np.random.default_rng(seed)
  losses = []  # device scalars, read once at the end: no host sync per step
  for t in range(steps):
    idx = order.integers(0, len(images), batch)
    params, opt_state, loss = step(params, opt_state, jnp.asarray(images[idx]),
                                   jnp.asarray(texts[idx]), jax.random.key(t))
    losses.append(loss)
  return params, np.asarray(jax.device_get(losses), np.float32)


def train_and_evaluate(xtr, ttr, xte, yte, glyphs, width: int, steps: int, seed: int,
                       batch: int = 128, depth: int = 4, other_sizes=None,
                       finetune=None) -> dict:
  """Trains the study's model of ``width`` and ``depth`` for ``steps``; zero-shot top-1 on (xte, yte).

  ``other_sizes``: ``{size: (images, labels)}`` also classified by the same
  model (``zeroshot_top1_at_<size>``): does what it learned at one resolution
  carry over to another without a fine-tune?
  ``finetune``: ``(steps, train_images, test_images, test_labels[, lr])``: then
  train ``steps`` more at ``lr`` (default: the study's fine-tune base learning
  rate) on the same captions with these images (another resolution) and
  classify the test images (``finetune_top1``): CLIPA's second stage.
  """
  settings = dataclasses.replace(study.DEFAULT, depth=depth)
  model = clip.ClipaModel(study.model_config(width, settings))
  params = nn.meta.unbox(model.get_initial_variables(jax.random.key(seed), xtr.shape[1],
                                                     TEXT_LENGTH)["params"])
  start = time.time()
  params, losses = _train(model, params, xtr, ttr, steps, settings.pretrain_lr,
                          min(50, steps // 10), seed, batch)
  train_s = time.time() - start
  # The project's zero-shot path: prompt-ensembled class embeddings (once per
  # set of weights), then top-1.
  def classifier(params):
    classes = zeroshot.embed_classes(lambda tokens: model.encode_texts(params, tokens), glyphs,
                                     PROMPTS, text_length=TEXT_LENGTH,
                                     batch_size=len(glyphs) * len(PROMPTS))
    def top1(x, y):
      images = batching.encode_in_batches(lambda b: model.encode_images(params, b), x, 500,
                                          "encode_images")
      return metrics.topk_accuracy(images @ classes.T, y, ks=(1,))[1]
    return top1
  top1 = classifier(params)
  row = {"zeroshot_top1": top1(xte, yte),
         **{f"zeroshot_top1_at_{s}": top1(x, y) for s, (x, y) in (other_sizes or {}).items()},
         "loss_first": round(float(np.mean(losses[:20])), 3),
         "loss_last": round(float(np.mean(losses[-20:])), 3), "train_s": round(train_s, 1)}
  if finetune:
    ft_steps, ft_train, ft_test, ft_labels, *ft_lr = finetune
    params, ft_losses = _train(model, params, ft_train, ttr, ft_steps,
                               (ft_lr[0] if ft_lr else None) or settings.finetune_lr,
                               min(settings.finetune_warmup, ft_steps // 10), seed + 1, batch)
    row.update({"finetune_top1": classifier(params)(ft_test, ft_labels),
                "finetune_loss_last": round(float(np.mean(ft_losses[-20:])), 3)})
  return row


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--glyph_set", default="small_capitals",
                 choices=sorted(resolution_probe.GLYPH_SETS))
  p.add_argument("--captions", default="mixed", choices=sorted(CAPTION_SETS))
  p.add_argument("--sizes", default="32,16")
  p.add_argument("--widths", default="64,128")
  p.add_argument("--seeds", default="0")
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--depth", type=int, default=4, help="blocks per tower")
  p.add_argument("--crop_min", type=float, default=0.8)
  p.add_argument("--num_train", type=int, default=8000)
  p.add_argument("--num_eval", type=int, default=1000)
  p.add_argument("--eval_sizes", default="", help="also classify the held-out letters at these "
                 "sizes with the same model, e.g. 32 (transfer without a fine-tune)")
  p.add_argument("--eval_padded", type=int, default=0, help="also classify the held-out images "
                 "padded to this size (letters keep their pixel size), centred and in the top-left "
                 "corner: zeroshot_top1_at_padded<N>, zeroshot_top1_at_corner<N>")
  p.add_argument("--finetune_steps", type=int, default=0, help="then fine-tune this many steps "
                 "at --finetune_size on the same captions (CLIPA's second stage): finetune_top1")
  p.add_argument("--finetune_size", type=int, default=32)
  p.add_argument("--finetune_lr", type=float, default=None,
                 help="base learning rate of the fine-tune (default: the study's)")
  a = p.parse_args()
  glyphs = resolution_probe.GLYPH_SETS[a.glyph_set][0]
  for size in (int(s) for s in a.sizes.split(",")):
    xtr, ytr, ctr = resolution_probe.render_glyphs(a.num_train, size, 0, a.crop_min, a.glyph_set)
    xte, yte, _ = resolution_probe.render_glyphs(a.num_eval, size, 1, 1.0, a.glyph_set)
    ttr = captions_for(ytr, ctr, glyphs, seed=0, caption_set=a.captions)
    others = {int(s): resolution_probe.render_glyphs(a.num_eval, int(s), 1, 1.0, a.glyph_set)[:2]
              for s in a.eval_sizes.split(",") if s and int(s) != size}
    if a.eval_padded:
      others[f"padded{a.eval_padded}"] = (pad_to(xte, a.eval_padded), yte)
      others[f"corner{a.eval_padded}"] = (pad_to(xte, a.eval_padded, corner=True), yte)
    finetune = None
    if a.finetune_steps:
      ft_train = resolution_probe.render_glyphs(a.num_train, a.finetune_size, 0, a.crop_min,
                                                a.glyph_set)[0]
      ft_test, ft_labels, _ = resolution_probe.render_glyphs(a.num_eval, a.finetune_size, 1, 1.0,
                                                             a.glyph_set)
      finetune = (a.finetune_steps, ft_train, ft_test, ft_labels, a.finetune_lr)
    for width in (int(w) for w in a.widths.split(",")):
      for seed in (int(s) for s in a.seeds.split(",")):
        row = train_and_evaluate(xtr, ttr, xte, yte, glyphs, width, a.steps, seed,
                                 depth=a.depth, other_sizes=others, finetune=finetune)
        print(json.dumps({"glyph_set": a.glyph_set, "captions": a.captions, "size": size,
                          "tokens": (size // 8) ** 2, "crop_min": a.crop_min,
                          "width": width, "depth": a.depth, "seed": seed, "steps": a.steps,
                          **({"finetune_steps": a.finetune_steps,
                              "finetune_size": a.finetune_size,
                              "finetune_lr": a.finetune_lr or study.DEFAULT.finetune_lr}
                             if finetune else {}),
                          "chance": 1 / len(glyphs), **row}), flush=True)


if __name__ == "__main__":
  main()
