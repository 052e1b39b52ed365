"""The Pallas LayerNorm kernels (interpret mode on CPU) against the XLA reference."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipa_t5x.kernels import layer_norm as pln
from clipa_t5x.models import layers


def _ref_ln(x, scale, bias, out_dtype):
  return layers._layer_norm_f32(x.astype(jnp.float32), scale, bias, 1e-6).astype(out_dtype)


def _inputs(shape, dtype, seed=0):
  k = jax.random.split(jax.random.key(seed), 5)
  width = shape[-1]
  x = (3.0 * jax.random.normal(k[0], shape) + 1.0).astype(dtype)
  y = jax.random.normal(k[1], shape).astype(dtype)
  scale = 1.0 + 0.1 * jax.random.normal(k[2], (width,))
  bias = 0.1 * jax.random.normal(k[3], (width,))
  g = jax.random.normal(k[4], shape)
  return x, y, scale, bias, g


# Widths that are not powers of two (masked columns) and row counts that leave
# the last program partly empty (masked rows).
@pytest.mark.parametrize("shape", [(3, 5, 48), (2, 7, 64), (1, 3, 100)])
def test_layer_norm_forward_and_gradients_match(shape):
  x, _, scale, bias, g = _inputs(shape, jnp.float32)
  out = pln.layer_norm(x, scale, bias, 1e-6, jnp.float32)
  np.testing.assert_allclose(out, _ref_ln(x, scale, bias, jnp.float32), atol=2e-5, rtol=2e-5)
  loss = lambda f: (lambda *a: jnp.sum(f(*a) * g))
  got = jax.grad(loss(lambda x, s, b: pln.layer_norm(x, s, b, 1e-6, jnp.float32)),
                 argnums=(0, 1, 2))(x, scale, bias)
  want = jax.grad(loss(lambda x, s, b: _ref_ln(x, s, b, jnp.float32)),
                  argnums=(0, 1, 2))(x, scale, bias)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,atol", [(jnp.float32, 1e-4), (jnp.bfloat16, 6e-2)])
def test_add_layer_norm_matches_add_then_layer_norm(dtype, atol):
  x, y, scale, bias, g = _inputs((2, 9, 48), dtype, seed=1)
  g_s = jax.random.normal(jax.random.key(7), x.shape)

  def reference(x, y, s, b):
    r = x + y
    return r, _ref_ln(r, s, b, dtype)

  def fused(x, y, s, b):
    return pln.add_layer_norm(x, y, s, b, 1e-6, dtype)

  got, want = fused(x, y, scale, bias), reference(x, y, scale, bias)
  np.testing.assert_array_equal(np.asarray(got[0], np.float32), np.asarray(want[0], np.float32))
  np.testing.assert_allclose(np.asarray(got[1], np.float32), np.asarray(want[1], np.float32),
                             atol=atol, rtol=atol)

  def loss(f):
    def inner(*a):
      r, o = f(*a)
      return (jnp.sum(r.astype(jnp.float32) * g_s) + jnp.sum(o.astype(jnp.float32) * g))
    return inner
  grads = jax.grad(loss(fused), argnums=(0, 1, 2, 3))(x, y, scale, bias)
  wants = jax.grad(loss(reference), argnums=(0, 1, 2, 3))(x, y, scale, bias)
  for name, a, b in zip(("x", "y", "scale", "bias"), grads, wants):
    assert a.dtype == b.dtype, name
    scale_ = float(jnp.max(jnp.abs(b.astype(jnp.float32))))
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               atol=atol * max(1.0, scale_), rtol=atol, err_msg=name)


def test_tile_is_a_power_of_two_within_budget():
  for width in (64, 100, 768, 1024, 1280, 1664):
    rows, cols = pln._tile(width)
    assert cols >= width and cols & (cols - 1) == 0 and rows & (rows - 1) == 0
    assert rows * cols <= max(pln.TILE_ELEMENTS, cols)


def test_kernels_lower_to_triton_for_a_hopper_gpu(monkeypatch):
  """The Pallas -> Triton lowering (the GPU path) runs on CPU for an abstract sm_90.

  It checks what Triton refuses before any GPU is involved (tile shapes,
  masked loads and stores, indexing), forward and backward, at B/16's width.
  """
  registration = pytest.importorskip("jax._src.pallas.triton.pallas_call_registration")
  info = getattr(registration, "gpu_info_lib", None)
  if info is None:
    pytest.skip("this jax looks the GPU up another way")
  monkeypatch.setattr(info, "get_gpu_info", lambda: types.SimpleNamespace(compute_capability="9.0"))
  monkeypatch.setattr(pln, "_interpret", lambda: False)
  x = jnp.ones((2, 197, 768), jnp.bfloat16)
  scale, bias = jnp.ones(768), jnp.zeros(768)

  def loss(x, y, s, b):
    r, o = pln.add_layer_norm(x, y, s, b, 1e-6, jnp.bfloat16)
    return jnp.sum(r.astype(jnp.float32)) + jnp.sum(pln.layer_norm(o, s, b).astype(jnp.float32))

  lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(x, x, scale, bias).lower(
      lowering_platforms=("cuda",))
  assert lowered.as_text().count("__gpu$xla.gpu.triton") == 4  # 2 forward, 2 backward
