"""kernels.gelu against flax's tanh GELU: values and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipa_t5x.kernels import gelu


def test_float32_value_and_gradient_match_flax():
  h = 3.0 * jax.random.normal(jax.random.key(0), (4, 33))
  np.testing.assert_allclose(gelu.gelu(h), nn.gelu(h, approximate=True), atol=1e-6, rtol=1e-6)
  g = jax.random.normal(jax.random.key(1), h.shape)
  got = jax.grad(lambda h: jnp.sum(gelu.gelu(h) * g))(h)
  want = jax.grad(lambda h: jnp.sum(nn.gelu(h, approximate=True) * g))(h)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_bfloat16_keeps_the_dtype_and_matches_to_bf16_rounding():
  h = (3.0 * jax.random.normal(jax.random.key(2), (8, 64))).astype(jnp.bfloat16)
  out = gelu.gelu(h)
  assert out.dtype == jnp.bfloat16
  exact = nn.gelu(h.astype(jnp.float32), approximate=True)
  np.testing.assert_allclose(np.asarray(out, np.float32), exact, atol=2e-2, rtol=1e-2)
  grad = jax.grad(lambda h: jnp.sum(gelu.gelu(h).astype(jnp.float32)))(h)
  assert grad.dtype == jnp.bfloat16
  want = jax.grad(lambda h: jnp.sum(nn.gelu(h, approximate=True)))(h.astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(grad, np.float32), want, atol=2e-2, rtol=1e-2)
