"""Exact contrastive-loss gradients of a large batch, computed in micro-batches.

Averaging per-micro-batch losses would change the objective: each image
would only be contrasted with the captions of its own micro-batch. Instead
(the "gradient cache" method): (1) encode every micro-batch without keeping
activations; (2) compute the loss over the *full* batch of features and its
gradient with respect to the features; (3) re-encode each micro-batch and
back-propagate those feature gradients into the parameters, summing them.
The result equals the full-batch gradient; peak activation memory is that of
one micro-batch (plus the features of the whole batch). Both losses are
exact this way: the softmax loss, and the sigmoid loss, whose step (2) runs
its device ring over the full batch of features.
"""

from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp



def microbatched_loss_and_grads(model, params: Any, batch: Mapping[str, jax.Array],
                                rng: jax.Array, num_microbatches: int,
                                mask_ratio: float = 0.0, mask_type: str = "random"
                                ) -> Tuple[Tuple[jax.Array, Dict[str, jax.Array]], Any]:
  """``((loss, metrics), grads)`` of the full-batch contrastive loss.

  Args:
    model: has ``features(params, batch, rng, mask_ratio, mask_type) -> (zimg,
      ztxt, _)``, ``loss_params(params)`` (the loss's scalars, e.g.
      ``log_temperature``, ``logit_bias``) and ``contrastive_loss(zimg, ztxt,
      loss_params)``.
    params: parameters.
    batch: the global batch; its size must divide by ``num_microbatches``.
    rng: patch-masking key; micro-batch ``i`` uses ``fold_in(rng, i)``.
    num_microbatches: how many pieces to encode one after another.
    mask_ratio: fraction of image patches dropped (0 = none).
    mask_type: 'random', 'grid' or 'block'.
  """
  size = batch["image"].shape[0]
  if size % num_microbatches:
    raise ValueError(f"batch size {size} is not divisible by num_microbatches="
                     f"{num_microbatches}.")
  micro = jax.tree.map(
      lambda x: x.reshape((num_microbatches, size // num_microbatches) + x.shape[1:]), batch)
  index = jnp.arange(num_microbatches)

  def encode(p, piece, i):
    zimg, ztxt, _ = model.features(p, piece, jax.random.fold_in(rng, i), mask_ratio, mask_type)
    return zimg, ztxt

  # (1) all features, no activations kept.
  zimg, ztxt = jax.lax.map(lambda args: encode(params, *args), (micro, index))
  flat = lambda z: z.reshape((size,) + z.shape[2:])
  # (2) the loss over the whole batch, and its gradient w.r.t. the features.
  (loss, metrics), (g_img, g_txt, g_scalars) = jax.value_and_grad(
      model.contrastive_loss, argnums=(0, 1, 2), has_aux=True)(
          flat(zimg), flat(ztxt), model.loss_params(params))
  unflat = lambda g: g.reshape(zimg.shape)

  # (3) back-propagate each micro-batch's feature gradients, summed.
  def accumulate(total, args):
    piece, i, gi, gt = args
    _, vjp = jax.vjp(lambda p: encode(p, piece, i), params)
    (grads,) = vjp((gi, gt))
    return jax.tree.map(jnp.add, total, grads), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, _ = jax.lax.scan(accumulate, zeros, (micro, index, unflat(g_img), unflat(g_txt)))
  grads = dict(grads)
  for name, g in g_scalars.items():  # the loss's own scalars: no encoder path
    grads[name] = grads[name] + g
  return (loss, metrics), grads
