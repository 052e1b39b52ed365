"""The contrastive losses: CLIP's softmax (InfoNCE) loss and SigLIP's sigmoid loss.

``softmax_contrastive_loss`` is written on *global* arrays: under ``jax.jit``
with the batch sharded over the ``data`` mesh axis, GSPMD inserts the
all-gathers the pmap code of the official repo wrote by hand. Every image is
contrasted with every caption of the whole batch.

``sigmoid_contrastive_loss`` (SigLIP) scores every image-caption pair on its
own, so it needs no row-wise normalisation and no global [B, B] matrix: under
a mesh with a ``data`` axis, each device scores its local images against its
local captions, then against the captions of every other device, passed round
a ring with ``ppermute`` inside ``shard_map``. Per-device memory is one
[B/n, B/n] block at a time. Without such a mesh (one device, or outside
``jit``) the same code runs as one block.
"""

import math
from typing import Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

# log(1/0.07): CLIP's and CLIPA's initial value of the learnable log-temperature.
INIT_LOG_TEMPERATURE = 2.659260036932778
# SigLIP's initial values: t' = log 10 (logits scaled by 10) and bias b = -10.
SIGMOID_INIT_LOG_TEMPERATURE = math.log(10.0)
SIGMOID_INIT_LOGIT_BIAS = -10.0
# Names of the losses and the scalar parameters each one learns.
LOSS_PARAMS = {
    "softmax": ("log_temperature",),
    "sigmoid": ("log_temperature", "logit_bias"),
}
LOSSES = tuple(LOSS_PARAMS)
DATA_AXIS = "data"

Metrics = Dict[str, jax.Array]


def check_loss(name: str) -> None:
  """Raises a one-line ValueError unless ``name`` is a known loss."""
  if name not in LOSS_PARAMS:
    raise ValueError(f"unknown loss {name!r}; set LOSS to one of {list(LOSSES)}, e.g. "
                     "--gin.LOSS=\"'sigmoid'\".")


def default_init_log_temperature(loss: str) -> float:
  """The initial log-temperature of ``loss``: log(1/0.07) for softmax, log 10 for sigmoid."""
  check_loss(loss)
  return SIGMOID_INIT_LOG_TEMPERATURE if loss == "sigmoid" else INIT_LOG_TEMPERATURE


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  """Scales ``x`` to unit L2 norm along ``axis`` (``eps`` keeps zeros finite)."""
  return x / (jnp.linalg.norm(x, axis=axis, keepdims=True) + eps)


def softmax_contrastive_loss(
    image_features: jax.Array,
    text_features: jax.Array,
    log_temperature: jax.Array,
) -> Tuple[jax.Array, Metrics]:
  """Symmetric softmax contrastive loss of paired, L2-normalised features.

  Args:
    image_features: [B, D] L2-normalised image embeddings of the global batch.
    text_features: [B, D] L2-normalised text embeddings; row i pairs with image i.
    log_temperature: scalar; logits are scaled by ``exp(log_temperature)``
      (no clamp, as in the official CLIPA code).

  Returns:
    ``(loss, metrics)``: the loss is ½(CE image→text + CE text→image), averaged
    over the batch, computed in float32. ``metrics`` holds ``loss``,
    ``temperature`` (the multiplier ``exp(log_temperature)``) and the in-batch
    top-1 accuracies ``i2t_accuracy`` and ``t2i_accuracy``.

  Memory: the [B, B] float32 logits are the largest buffer; sharded by rows over
  ``data`` they take ``4·B²/n_data`` bytes per device: 16 GiB in all for
  B = 65,536, 64 MiB per device on a 256-way data mesh.
  """
  image_features = image_features.astype(jnp.float32)
  text_features = text_features.astype(jnp.float32)
  scale = jnp.exp(log_temperature.astype(jnp.float32))
  logits = scale * image_features @ text_features.T  # [B_img, B_txt]
  labels = jnp.arange(logits.shape[0])
  log_p_i2t = jax.nn.log_softmax(logits, axis=1)
  log_p_t2i = jax.nn.log_softmax(logits, axis=0)
  nll_i2t = -jnp.take_along_axis(log_p_i2t, labels[:, None], axis=1)[:, 0]
  nll_t2i = -jnp.take_along_axis(log_p_t2i, labels[None, :], axis=0)[0, :]
  loss = 0.5 * (nll_i2t.mean() + nll_t2i.mean())
  metrics = {
      "loss": loss,
      "temperature": scale,
      "i2t_accuracy": jnp.mean(jnp.argmax(logits, axis=1) == labels),
      "t2i_accuracy": jnp.mean(jnp.argmax(logits, axis=0) == labels),
  }
  return loss, metrics


def _ring_size(axis: str) -> int:
  """Devices along mesh axis ``axis`` of the mesh being traced under (1 = no such mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or axis not in mesh.axis_names:
    return 1
  return int(mesh.shape[axis])


def _sigmoid_blocks(img: jax.Array, txt: jax.Array, log_t: jax.Array, bias: jax.Array,
                    axis: str, ring: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Sums of one device's pair losses and hits: ``(loss_sum, i2t_hits, t2i_hits)``.

  ``img`` / ``txt`` are this device's [n, D] rows (row i pairs with row i).
  The first block holds the positives on its diagonal; the ``ring - 1`` others
  score ``img`` against the captions of the other devices, which arrive by
  ``ppermute`` one neighbour at a time and are all negatives. Each block is
  rematerialised in the backward pass, so at most one [n, n] block is alive.
  """
  scale = jnp.exp(log_t)
  n = img.shape[0]
  eye = jnp.eye(n, dtype=bool)

  def logits_of(t):
    return scale * img @ t.T + bias

  logits = logits_of(txt)
  signs = jnp.where(eye, 1.0, -1.0)
  loss_sum = -jnp.sum(jax.nn.log_sigmoid(signs * logits))
  # In-batch accuracy: a positive beats every negative of its row (image) or
  # column (caption). The column maxima travel round the ring with the captions.
  seen = jax.lax.stop_gradient(logits)
  positive = jnp.diagonal(seen)
  off = jnp.where(eye, -jnp.inf, seen)
  row_max, col_max = off.max(axis=1), off.max(axis=0)

  def step(carry, _):
    loss_sum, row_max, t, col_max, col_pos = carry
    perm = [(i, (i + 1) % ring) for i in range(ring)]
    t, col_max, col_pos = (jax.lax.ppermute(x, axis, perm) for x in (t, col_max, col_pos))
    logits = logits_of(t)
    loss_sum = loss_sum - jnp.sum(jax.nn.log_sigmoid(-logits))
    seen = jax.lax.stop_gradient(logits)
    return (loss_sum, jnp.maximum(row_max, seen.max(axis=1)), t,
            jnp.maximum(col_max, seen.max(axis=0)), col_pos), None

  if ring > 1:
    carry = (loss_sum, row_max, txt, col_max, positive)
    carry, _ = jax.lax.scan(jax.checkpoint(step), carry, None, length=ring - 1)
    loss_sum, row_max, _, col_max, col_positive = carry
  else:
    col_positive = positive
  i2t_hits = jnp.sum(positive > row_max)
  t2i_hits = jnp.sum(col_positive > col_max)
  return loss_sum, i2t_hits, t2i_hits


def sigmoid_contrastive_loss(
    image_features: jax.Array,
    text_features: jax.Array,
    log_temperature: jax.Array,
    logit_bias: jax.Array,
    data_axis: str = DATA_AXIS,
) -> Tuple[jax.Array, Metrics]:
  """SigLIP's pairwise sigmoid loss of paired, L2-normalised features.

  For logits ``z_ij = exp(t') · <x_i, y_j> + b`` and labels ``l_ij = +1`` on the
  diagonal, ``-1`` elsewhere, the loss is ``-Σ_ij log σ(l_ij z_ij) / B``: the
  sum over all B² image-caption pairs divided by the batch size, as the SigLIP
  paper (and big_vision and open_clip) write it.

  Args:
    image_features: [B, D] image embeddings of the global batch.
    text_features: [B, D] text embeddings; row i pairs with image i.
    log_temperature: scalar ``t'``; logits are scaled by ``exp(t')`` (no clamp).
    logit_bias: scalar ``b`` added to every logit.
    data_axis: the mesh axis the batch is sharded over. Traced under a mesh
      (``jax.set_mesh``) where it has several devices, the loss runs as a ring
      of ``ppermute`` inside ``shard_map``: no device ever holds more than a
      [B/n, B/n] block of logits. Otherwise it is one block.

  Returns:
    ``(loss, metrics)`` in float32; ``metrics`` holds ``loss``,
    ``temperature`` (``exp(t')``), ``logit_bias`` and the in-batch top-1
    accuracies ``i2t_accuracy`` and ``t2i_accuracy``.
  """
  img = image_features.astype(jnp.float32)
  txt = text_features.astype(jnp.float32)
  log_t = jnp.asarray(log_temperature, jnp.float32).reshape(())
  bias = jnp.asarray(logit_bias, jnp.float32).reshape(())
  batch = img.shape[0]
  ring = _ring_size(data_axis)
  if ring > 1 and batch % ring:
    raise ValueError(f"sigmoid loss: batch {batch} is not divisible by the {ring} devices of "
                     f"mesh axis {data_axis!r}; use a multiple of {ring}.")
  if ring > 1:
    def per_device(img, txt, log_t, bias):
      sums = _sigmoid_blocks(img, txt, log_t, bias, data_axis, ring)
      return tuple(jax.lax.psum(s, data_axis) for s in sums)
    loss_sum, i2t_hits, t2i_hits = jax.shard_map(
        per_device, in_specs=(P(data_axis), P(data_axis), P(), P()),
        out_specs=(P(), P(), P()), axis_names={data_axis})(img, txt, log_t, bias)
  else:
    loss_sum, i2t_hits, t2i_hits = _sigmoid_blocks(img, txt, log_t, bias, data_axis, 1)
  loss = loss_sum / batch
  metrics = {
      "loss": loss,
      "temperature": jnp.exp(log_t),
      "logit_bias": bias,
      "i2t_accuracy": i2t_hits / batch,
      "t2i_accuracy": t2i_hits / batch,
  }
  return loss, metrics


def contrastive_loss(name: str, image_features: jax.Array, text_features: jax.Array,
                     loss_params: Mapping[str, jax.Array]) -> Tuple[jax.Array, Metrics]:
  """The loss ``name`` ('softmax' or 'sigmoid') of features and its scalar parameters.

  ``loss_params`` maps the names in ``LOSS_PARAMS[name]`` (``log_temperature``,
  and ``logit_bias`` for sigmoid) to scalars.
  """
  check_loss(name)
  missing = [k for k in LOSS_PARAMS[name] if k not in loss_params]
  if missing:
    raise ValueError(f"the {name} loss needs parameter(s) {missing}; a model built with "
                     f"loss={name!r} has them.")
  if name == "sigmoid":
    return sigmoid_contrastive_loss(image_features, text_features,
                                    loss_params["log_temperature"], loss_params["logit_bias"])
  return softmax_contrastive_loss(image_features, text_features, loss_params["log_temperature"])
