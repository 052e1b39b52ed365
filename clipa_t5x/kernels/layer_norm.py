"""LayerNorm and residual-add + LayerNorm as Pallas kernels, with their gradients.

A pre-LN block computes ``s = x + y`` (the residual stream) and then
``LayerNorm(s)``. XLA runs these as separate passes over the [tokens, width]
activations, forward and backward; here one kernel reads ``x`` and ``y`` once
and writes ``s`` and the normalised output, and one backward kernel reads
``s``, the output's gradient and the residual's gradient once and writes the
input gradient plus per-program partial sums of the scale and bias gradients.

Each program handles ``block_rows`` rows; a row is loaded whole as a
power-of-two vector (Triton needs power-of-two tiles) with the columns past
the width masked off, so any width works. Statistics are float32; the output
is in ``out_dtype``; ``s`` keeps ``x``'s dtype, rounded the way XLA's add
rounds it. On a backend other than a GPU the kernels run in Pallas' interpret
mode (slow; for tests).

Numerics match ``clipa_t5x.models.layers._layer_norm_f32`` to float rounding
(tests/kernels/test_layer_norm.py).
"""

import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

try:  # the Triton flavour of Pallas: masked loads and stores, compiler params
  from jax.experimental.pallas import triton as plgpu
except ImportError:  # pragma: no cover  (a jax without the Triton lowering)
  plgpu = None

# Largest tile (rows x padded width) one program holds, in elements.
TILE_ELEMENTS = 4096


def _interpret() -> bool:
  return jax.default_backend() not in ("gpu", "cuda")


def _tile(width: int) -> Tuple[int, int]:
  """(rows per program, padded row length), both powers of two."""
  cols = pl.next_power_of_2(width)
  return max(1, TILE_ELEMENTS // cols), cols


def _params(cols: int):
  if plgpu is None or _interpret():
    return None
  make = getattr(plgpu, "CompilerParams", None) or getattr(plgpu, "TritonCompilerParams")
  return make(num_warps=min(8, max(2, cols // 256)), num_stages=1)


def _indices(n_rows: int, width: int, block_rows: int, cols: int):
  rows = pl.program_id(0) * block_rows + jnp.arange(block_rows)
  col = jnp.arange(cols)
  row_ok, col_ok = rows < n_rows, col < width
  return rows, col, row_ok, col_ok, row_ok[:, None] & col_ok[None, :]


def _load(ref, idx, mask):
  return plgpu.load(ref.at[idx], mask=mask, other=0.0).astype(jnp.float32)


def _fwd_kernel(*refs, n_rows, width, block_rows, cols, eps, has_y):
  if has_y:
    x_ref, y_ref, scale_ref, bias_ref, s_ref, o_ref, mean_ref, rstd_ref = refs
  else:
    x_ref, scale_ref, bias_ref, o_ref, mean_ref, rstd_ref = refs
  rows, col, row_ok, col_ok, mask = _indices(n_rows, width, block_rows, cols)
  idx = (rows[:, None], col[None, :])
  s = _load(x_ref, idx, mask)
  if has_y:
    # Round the sum to the residual stream's dtype, as XLA's add does, and
    # normalise the rounded value, as the unfused path does.
    s = (s + _load(y_ref, idx, mask)).astype(s_ref.dtype)
    plgpu.store(s_ref.at[idx], s, mask=mask)
    s = s.astype(jnp.float32)
  mean = jnp.sum(s, axis=1) / width
  centred = jnp.where(mask, s - mean[:, None], 0.0)
  rstd = jax.lax.rsqrt(jnp.sum(centred * centred, axis=1) / width + eps)
  scale = plgpu.load(scale_ref.at[col], mask=col_ok, other=0.0).astype(jnp.float32)
  bias = plgpu.load(bias_ref.at[col], mask=col_ok, other=0.0).astype(jnp.float32)
  out = centred * rstd[:, None] * scale[None, :] + bias[None, :]
  plgpu.store(o_ref.at[idx], out.astype(o_ref.dtype), mask=mask)
  plgpu.store(mean_ref.at[rows], mean, mask=row_ok)
  plgpu.store(rstd_ref.at[rows], rstd, mask=row_ok)


def _bwd_kernel(*refs, n_rows, width, block_rows, cols, has_gs):
  if has_gs:
    (s_ref, g_ref, gs_ref, scale_ref, mean_ref, rstd_ref,
     ds_ref, dscale_ref, dbias_ref) = refs
  else:
    s_ref, g_ref, scale_ref, mean_ref, rstd_ref, ds_ref, dscale_ref, dbias_ref = refs
  rows, col, row_ok, col_ok, mask = _indices(n_rows, width, block_rows, cols)
  idx = (rows[:, None], col[None, :])
  mean = plgpu.load(mean_ref.at[rows], mask=row_ok, other=0.0)
  rstd = plgpu.load(rstd_ref.at[rows], mask=row_ok, other=0.0)
  normed = jnp.where(mask, (_load(s_ref, idx, mask) - mean[:, None]) * rstd[:, None], 0.0)
  g = _load(g_ref, idx, mask)
  scale = plgpu.load(scale_ref.at[col], mask=col_ok, other=0.0).astype(jnp.float32)
  g_normed = g * scale[None, :]
  # The closed form of the LayerNorm gradient (as layers._layer_norm_bwd).
  mean_g = jnp.sum(g_normed, axis=1) / width
  mean_gn = jnp.sum(g_normed * normed, axis=1) / width
  ds = rstd[:, None] * (g_normed - mean_g[:, None] - normed * mean_gn[:, None])
  if has_gs:
    ds = ds + _load(gs_ref, idx, mask)
  plgpu.store(ds_ref.at[idx], ds.astype(ds_ref.dtype), mask=mask)
  pid = pl.program_id(0)
  plgpu.store(dscale_ref.at[pid, col], jnp.sum(g * normed, axis=0), mask=col_ok)
  plgpu.store(dbias_ref.at[pid, col], jnp.sum(g, axis=0), mask=col_ok)


def _forward(x2, y2, scale, bias, eps, out_dtype):
  n_rows, width = x2.shape
  block_rows, cols = _tile(width)
  grid = (pl.cdiv(n_rows, block_rows),)
  has_y = y2 is not None
  stats = [jax.ShapeDtypeStruct((n_rows,), jnp.float32)] * 2
  out_shape = ([jax.ShapeDtypeStruct(x2.shape, x2.dtype)] if has_y else []) + [
      jax.ShapeDtypeStruct(x2.shape, out_dtype)] + stats
  kernel = functools.partial(_fwd_kernel, n_rows=n_rows, width=width, block_rows=block_rows,
                             cols=cols, eps=eps, has_y=has_y)
  call = pl.pallas_call(kernel, out_shape=out_shape, grid=grid, interpret=_interpret(),
                        compiler_params=_params(cols),
                        name="add_layer_norm_fwd" if has_y else "layer_norm_fwd")
  args = (x2, y2, scale, bias) if has_y else (x2, scale, bias)
  outs = call(*args)
  if has_y:
    return outs
  return (x2,) + tuple(outs)


def _backward(s2, g2, gs2, scale, mean, rstd):
  n_rows, width = s2.shape
  block_rows, cols = _tile(width)
  programs = pl.cdiv(n_rows, block_rows)
  has_gs = gs2 is not None
  partial = jax.ShapeDtypeStruct((programs, width), jnp.float32)
  out_shape = [jax.ShapeDtypeStruct(s2.shape, s2.dtype), partial, partial]
  kernel = functools.partial(_bwd_kernel, n_rows=n_rows, width=width, block_rows=block_rows,
                             cols=cols, has_gs=has_gs)
  call = pl.pallas_call(kernel, out_shape=out_shape, grid=(programs,), interpret=_interpret(),
                        compiler_params=_params(cols), name="layer_norm_bwd")
  args = (s2, g2, gs2, scale, mean, rstd) if has_gs else (s2, g2, scale, mean, rstd)
  ds, dscale, dbias = call(*args)
  return ds, jnp.sum(dscale, axis=0), jnp.sum(dbias, axis=0)


def _rows(x: jax.Array) -> jax.Array:
  return x.reshape((-1, x.shape[-1]))


# ------------------------------------------------------------- LayerNorm ---
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-6,
               out_dtype: Optional[jnp.dtype] = None) -> jax.Array:
  """LayerNorm over the last axis (float32 statistics), as one Pallas kernel.

  Args:
    x: [..., width] in any float dtype.
    scale, bias: [width], float32.
    eps: added to the variance.
    out_dtype: the output dtype (default ``x.dtype``).
  """
  return _layer_norm_fwd(x, scale, bias, eps, out_dtype)[0]


def _layer_norm_fwd(x, scale, bias, eps, out_dtype):
  out_dtype = out_dtype or x.dtype
  _, out, mean, rstd = _forward(_rows(x), None, scale, bias, eps, out_dtype)
  return out.reshape(x.shape), (x, scale, mean, rstd)


def _layer_norm_bwd(eps, out_dtype, res, g):
  del eps, out_dtype
  x, scale, mean, rstd = res
  dx, dscale, dbias = _backward(_rows(x), _rows(g), None, scale, mean, rstd)
  return dx.reshape(x.shape), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


# ------------------------------------------------- residual add + LayerNorm ---
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def add_layer_norm(x: jax.Array, y: jax.Array, scale: jax.Array, bias: jax.Array,
                   eps: float = 1e-6, out_dtype: Optional[jnp.dtype] = None
                   ) -> Tuple[jax.Array, jax.Array]:
  """``s = x + y`` and ``LayerNorm(s)`` in one pass.

  Args:
    x: the residual stream [..., width].
    y: the branch output, same shape (cast to ``x``'s dtype when read).
    scale, bias: [width], float32.
    eps: added to the variance.
    out_dtype: the normalised output's dtype (default ``x.dtype``).

  Returns:
    ``(s, LayerNorm(s))``; ``s`` in ``x``'s dtype.
  """
  return _add_layer_norm_fwd(x, y, scale, bias, eps, out_dtype)[0]


def _add_layer_norm_fwd(x, y, scale, bias, eps, out_dtype):
  out_dtype = out_dtype or x.dtype
  s, out, mean, rstd = _forward(_rows(x), _rows(y), scale, bias, eps, out_dtype)
  # A zero-size array carries y's dtype to the backward (residuals must be arrays).
  return ((s.reshape(x.shape), out.reshape(x.shape)),
          (s, scale, mean, rstd, jnp.zeros((0,), y.dtype)))


def _add_layer_norm_bwd(eps, out_dtype, res, grads):
  del eps, out_dtype
  s, scale, mean, rstd, y_like = res
  g_s, g_out = grads
  shape = g_out.shape
  ds, dscale, dbias = _backward(s, _rows(g_out), _rows(g_s), scale, mean, rstd)
  ds = ds.reshape(shape)
  return ds, ds.astype(y_like.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


add_layer_norm.defvjp(_add_layer_norm_fwd, _add_layer_norm_bwd)
