"""CLIPA image tower: a ViT with fixed 2-D sin-cos positions and patch masking.

As in the released CLIPA-v2 models: bias-free conv patch embedding, a zero
``cls`` token always prepended, a fixed sin-cos position embedding recomputed
from the patch grid (so 70 px → 224 px → 336 px needs no interpolation), no
LayerNorm before the blocks, mean pooling over the patch tokens (cls
excluded) followed by LayerNorm, and a bias-free projection head.

Training may drop patch tokens (FLIP-style ``random``, or the ``grid`` /
``block`` variants of the CLIPA paper); the kept patches are picked before the
patch embedding (only they are embedded) and each keeps its own position.
"""

import math
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipa_t5x.models import layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MASK_TYPES = ("random", "grid", "block")
MASK_RNG = "mask"


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10000.) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding of an ``h × w`` patch grid.

  For ``k < width/4``: ω_k = 1 / temperature^(k / (width/4 − 1)); the row of the
  patch at (row y, column x) is [sin(xω), cos(xω), sin(yω), cos(yω)]. Rows are
  in row-major patch order. The cls token gets no position embedding.

  Args:
    h: grid rows.
    w: grid columns.
    width: embedding width; must be a multiple of 4 and at least 8.
    temperature: frequency base.

  Returns:
    float32 array [h * w, width] (a numpy constant, not a parameter).
  """
  if width % 4 or width < 8:
    raise ValueError(
        f"sin-cos 2-D position embedding needs a width that is a multiple of 4 and >= 8, "
        f"got {width}; change the image tower width.")
  quarter = width // 4
  omega = 1.0 / temperature**(np.arange(quarter, dtype=np.float64) / (quarter - 1))
  y, x = np.mgrid[:h, :w]
  x_angles = x.reshape(-1, 1).astype(np.float64) * omega[None, :]
  y_angles = y.reshape(-1, 1).astype(np.float64) * omega[None, :]
  pe = np.concatenate(
      [np.sin(x_angles), np.cos(x_angles), np.sin(y_angles), np.cos(y_angles)], axis=1)
  return pe.astype(np.float32)


def num_kept(num_patches: int, mask_ratio: float) -> int:
  """Patches kept by random/block masking: floor(N·(1−ratio)).

  A tiny tolerance absorbs float error (10 patches at ratio 0.9 keep 1, not 0).
  """
  keep = int(num_patches * (1.0 - mask_ratio) + 1e-6)
  if keep < 1:
    raise ValueError(
        f"mask_ratio={mask_ratio} keeps no patch of {num_patches}; lower mask_ratio.")
  return keep


def check_masking(mask_ratio: float, mask_type: str) -> None:
  """ValueError unless ``(mask_ratio, mask_type)`` is a valid patch-masking setting.

  ``mask_ratio`` in [0, 1) (0 = no masking); ``mask_type`` one of
  ``MASK_TYPES``; ``'grid'`` keeps one patch per 2x2 window, i.e. ratio 0.75.
  """
  if mask_type not in MASK_TYPES:
    raise ValueError(f"mask_type={mask_type!r} is not one of {MASK_TYPES}.")
  if not 0.0 <= float(mask_ratio) < 1.0:
    raise ValueError(f"mask_ratio={mask_ratio} must be in [0, 1); use 0 to disable masking.")
  if mask_type == "grid" and mask_ratio not in (0.0, 0.75):
    raise ValueError(
        f"mask_type='grid' keeps one patch per 2x2 window, i.e. mask_ratio=0.75, but "
        f"mask_ratio={mask_ratio}; set mask_ratio=0.75 or use mask_type='random'.")


def random_keep_indices(rng: jax.Array, batch: int, num_patches: int,
                        mask_ratio: float) -> jax.Array:
  """Per sample, a uniformly random subset of ``num_kept`` patch indices.

  Args:
    rng: PRNG key.
    batch: number of samples.
    num_patches: patches per image N.
    mask_ratio: fraction dropped.

  Returns:
    int32 [batch, K] distinct indices into the N patches (in random order).
  """
  keep = num_kept(num_patches, mask_ratio)
  noise = jax.random.uniform(rng, (batch, num_patches))
  return jnp.argsort(noise, axis=1)[:, :keep].astype(jnp.int32)


def grid_keep_indices(rng: jax.Array, batch: int, grid_h: int, grid_w: int) -> jax.Array:
  """Keeps one patch per 2×2 window, at one random offset per sample (ratio 0.75).

  Args:
    rng, batch: as ``random_keep_indices``.
    grid_h, grid_w: patch grid; both must be even.

  Returns:
    int32 [batch, grid_h·grid_w/4] row-major patch indices.
  """
  if grid_h % 2 or grid_w % 2:
    raise ValueError(
        f"grid masking needs an even patch grid, got {grid_h}x{grid_w}; pick an image size "
        "that gives an even number of patches per side, or use mask_type='random'.")
  offsets = jax.random.randint(rng, (batch, 2), 0, 2)
  rows = 2 * jnp.arange(grid_h // 2)[None, :, None] + offsets[:, 0, None, None]
  cols = 2 * jnp.arange(grid_w // 2)[None, None, :] + offsets[:, 1, None, None]
  return (rows * grid_w + cols).reshape(batch, -1).astype(jnp.int32)


def block_shape(grid_h: int, grid_w: int, keep: int) -> Tuple[int, int]:
  """Rows × columns of the square-ish block that holds ``keep`` patches.

  Rows = ceil(sqrt(keep)) (capped by the grid), columns = ceil(keep / rows);
  if that is wider than the grid, the block takes the full width and
  ceil(keep / grid_w) rows. Only the first ``keep`` cells of the block in
  row-major order are kept, so the last block row may be partial.
  """
  rows = min(grid_h, math.ceil(math.sqrt(keep)))
  cols = math.ceil(keep / rows)
  if cols > grid_w:
    cols = grid_w
    rows = math.ceil(keep / cols)
  return rows, cols


def block_keep_indices(rng: jax.Array, batch: int, grid_h: int, grid_w: int,
                       mask_ratio: float) -> jax.Array:
  """Keeps one contiguous block of ``num_kept`` patches at a random position.

  Args:
    rng, batch: as ``random_keep_indices``.
    grid_h, grid_w: patch grid.
    mask_ratio: fraction dropped; K = floor(N·(1−ratio)) patches are kept, laid
      out as in ``block_shape``.

  Returns:
    int32 [batch, K] row-major patch indices.
  """
  keep = num_kept(grid_h * grid_w, mask_ratio)
  rows, cols = block_shape(grid_h, grid_w, keep)
  cells = np.arange(keep)
  dr, dc = jnp.asarray(cells // cols), jnp.asarray(cells % cols)
  key_r, key_c = jax.random.split(rng)
  top = jax.random.randint(key_r, (batch, 1), 0, grid_h - rows + 1)
  left = jax.random.randint(key_c, (batch, 1), 0, grid_w - cols + 1)
  return ((top + dr[None]) * grid_w + left + dc[None]).astype(jnp.int32)


def keep_indices(rng: jax.Array, batch: int, *, grid_hw: Tuple[int, int],
                 mask_ratio: float, mask_type: str) -> jax.Array:
  """Per sample, the row-major indices of the patches that masking keeps.

  Args:
    rng: PRNG key; each sample draws its own mask.
    batch: number of samples.
    grid_hw: (rows, columns) of the patch grid.
    mask_ratio: fraction dropped (see ``check_masking``; 'grid' needs 0.75).
    mask_type: 'random', 'grid' or 'block'.

  Returns:
    int32 [batch, K].
  """
  gh, gw = grid_hw
  check_masking(mask_ratio, mask_type)
  if mask_type == "random":
    return random_keep_indices(rng, batch, gh * gw, mask_ratio)
  if mask_type == "grid":
    return grid_keep_indices(rng, batch, gh, gw)
  return block_keep_indices(rng, batch, gh, gw, mask_ratio)


def mask_patches(tokens: jax.Array, rng: jax.Array, *, grid_hw: Tuple[int, int],
                 mask_ratio: float, mask_type: str) -> jax.Array:
  """Drops patch tokens of ``tokens`` [B, N, W] (no cls) → [B, K, W].

  Args:
    tokens: patch tokens, position embedding already added, row-major.
    rng, grid_hw, mask_ratio, mask_type: as ``keep_indices`` (rows·columns = N).

  Returns:
    The kept tokens.
  """
  batch, n = tokens.shape[:2]
  gh, gw = grid_hw
  if gh * gw != n:
    raise ValueError(f"grid {gh}x{gw} does not match {n} patch tokens.")
  idx = keep_indices(rng, batch, grid_hw=grid_hw, mask_ratio=mask_ratio, mask_type=mask_type)
  return jnp.take_along_axis(tokens, idx[:, :, None], axis=1)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] → [B, N, p·p·C]: row-major patches, each flattened (row, column, channel).

  The flattening order matches a conv kernel [p, p, C, W] reshaped to [p·p·C, W].
  """
  b, h, w, c = images.shape
  p = patch_size
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


class PatchEmbedding(nn.Module):
  """Bias-free patch embedding: a stride-``p`` conv written as one matmul.

  Its parameter is the conv kernel ``kernel`` [p, p, 3, W] (HWIO, as
  ``nn.Conv`` names and initialises it), applied to flattened patches, so that
  only the patches that masking keeps need embedding.
  """
  patch_size: int
  width: int
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    """[B, K, p·p·C] flattened patches (see ``patchify``) → [B, K, W]."""
    p = self.patch_size
    channels = patches.shape[-1] // (p * p)
    kernel = self.param(
        "kernel", layers.boxed(self.kernel_init, (None, None, None, "embed")),
        (p, p, channels, self.width), jnp.float32)
    kernel = kernel.reshape(p * p * channels, self.width).astype(self.dtype)
    return jnp.einsum("bkd,dw->bkw", patches.astype(self.dtype), kernel)


class VisionTransformer(layers.Tower, kw_only=True):
  """CLIPA ViT image encoder → [B, out_dim] (not L2-normalised).

  Attributes: ``layers.Tower``'s, and ``patch_size``: square patch size.
  """
  patch_size: int

  def setup(self):
    xavier = nn.initializers.xavier_uniform()
    self.embedding = PatchEmbedding(
        patch_size=self.patch_size, width=self.width, dtype=self.dtype, kernel_init=xavier)
    self.cls = self.param(
        "cls", layers.boxed(nn.initializers.zeros, (None, None, "embed")),
        (1, 1, self.width), jnp.float32)
    self.encoder = layers.tower_encoder(self, xavier, xavier, xavier, xavier)
    self.encoder_norm = layers.layer_norm(self.dtype)
    self.head = layers.projection_head(self.out_dim, self.width, self.dtype)

  def _check_images(self, images: jax.Array) -> Tuple[int, int]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
          f"images must be [batch, height, width, 3], got shape {tuple(images.shape)}.")
    h, w = images.shape[1:3]
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(
          f"Image size {h}x{w} is not divisible by the patch size {p}; resize images to a "
          f"multiple of {p} (e.g. {max(p, h // p * p)}x{max(p, w // p * p)}).")
    return h // p, w // p

  def tokens(self, images: jax.Array, *, train: bool, mask_ratio: float = 0.0,
             mask_type: str = "random") -> jax.Array:
    """The token sequence fed to the encoder: cls + (kept) patch tokens.

    Args:
      images: uint8 or float [B, H, W, 3] in 0..255.
      train: masking is applied only when True and ``mask_ratio > 0`` (needs
        the ``'mask'`` rng).
      mask_ratio: fraction of patches dropped in training (a training
        setting, see ``check_masking``).
      mask_type: 'random', 'grid' or 'block'.

    Returns:
      [B, 1 + K, width] in the compute dtype; token 0 is cls (no position).
    """
    gh, gw = self._check_images(images)
    # Patches are cut (and picked) from the raw pixels, a quarter of the bytes
    # of float32 ones for uint8 input; normalised after, per channel.
    x = patchify(images, self.patch_size)
    pos = jnp.asarray(posemb_sincos_2d(gh, gw, self.width), self.dtype)[None]
    if train and mask_ratio > 0:
      if not self.has_rng(MASK_RNG):
        raise ValueError(
            f"Patch masking (mask_ratio={mask_ratio}) needs a 'mask' rng: call "
            "apply(..., rngs={'mask': key}) or pass train=False.")
      # Only the kept patches are embedded (the same tokens as embedding all and
      # then dropping, at 1 - mask_ratio of the cost, and no scatter back over
      # every patch in the backward pass); each keeps its own position.
      idx = keep_indices(self.make_rng(MASK_RNG), x.shape[0], grid_hw=(gh, gw),
                         mask_ratio=mask_ratio, mask_type=mask_type)
      # The indices are in range by construction: no clamping or fill select.
      x = jnp.take_along_axis(x, idx[:, :, None], axis=1, mode="promise_in_bounds")
      pos = jnp.take(pos[0], idx, axis=0, mode="clip")
    p2 = self.patch_size * self.patch_size
    mean = jnp.asarray(np.tile(np.asarray(IMAGENET_MEAN, np.float32), p2))
    std = jnp.asarray(np.tile(np.asarray(IMAGENET_STD, np.float32), p2))
    x = (x.astype(jnp.float32) / 255.0 - mean) / std
    x = self.embedding(x) + pos
    cls = jnp.broadcast_to(self.cls.astype(self.dtype), (x.shape[0], 1, self.width))
    x = jnp.concatenate([cls, x], axis=1)
    return layers.constrain(x, layers.RESIDUAL_AXES)

  def representation(self, images: jax.Array, *, train: bool = False, mask_ratio: float = 0.0,
                     mask_type: str = "random") -> jax.Array:
    """The pooled, normalised tokens [B, width] the projection head maps (pre-logits)."""
    x = self.encoder(self.tokens(images, train=train, mask_ratio=mask_ratio,
                                 mask_type=mask_type))
    # Mean over patch tokens only (cls excluded), in float32, then LayerNorm.
    pooled = jnp.mean(x[:, 1:].astype(jnp.float32), axis=1).astype(self.dtype)
    return layers.constrain(self.encoder_norm(pooled), ("batch", "embed"))

  def __call__(self, images: jax.Array, *, train: bool, mask_ratio: float = 0.0,
               mask_type: str = "random") -> jax.Array:
    """Encodes images [B, H, W, 3] (0..255) → features [B, out_dim] (masking: ``tokens``)."""
    pooled = self.representation(images, train=train, mask_ratio=mask_ratio,
                                 mask_type=mask_type)
    return layers.constrain(self.head(pooled), ("batch", "proj"))
