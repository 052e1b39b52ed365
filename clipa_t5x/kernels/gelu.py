"""GELU (tanh form) whose backward keeps only the pre-activation, in its own dtype.

The autodiff of ``nn.gelu(h, approximate=True)`` saves several intermediates
of the MLP's widest activation ([tokens, mlp]: the cube, the tanh, ...) and
walks them in several passes in the backward. ``gelu`` here saves ``h``
alone (bf16 under bf16 compute), evaluates the function and its derivative
in float32 registers, and writes the output and the input gradient in one
pass each; XLA fuses the Dense's bias add into the forward. Values agree with
``nn.gelu(h, approximate=True)`` to bf16 rounding (the math is float32 here,
in the compute dtype there).
"""

import math

import jax
import jax.numpy as jnp

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


def _tanh_inner(z: jax.Array) -> jax.Array:
  return jnp.tanh(_C * (z + _A * z * z * z))


@jax.custom_vjp
def gelu(h: jax.Array) -> jax.Array:
  """``0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))``, in ``h``'s dtype."""
  z = h.astype(jnp.float32)
  return (0.5 * z * (1.0 + _tanh_inner(z))).astype(h.dtype)


def _gelu_fwd(h):
  return gelu(h), h


def _gelu_bwd(h, g):
  z = h.astype(jnp.float32)
  t = _tanh_inner(z)
  dt = (1.0 - t * t) * _C * (1.0 + 3.0 * _A * z * z)
  grad = 0.5 * (1.0 + t) + 0.5 * z * dt
  return ((g.astype(jnp.float32) * grad).astype(h.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)
