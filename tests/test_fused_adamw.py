"""fused_adamw against optimizers.make_optimizer's optax chain, and the state converters."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clipa_t5x import fused_adamw, optimizers


def _params():
  rs = np.random.RandomState(0)
  f = lambda *s: jnp.asarray(rs.randn(*s), jnp.float32)
  return {"img": {"block": {"kernel": f(6, 5), "bias": f(5)}, "norm": {"scale": f(5)}},
          "txt": {"kernel": f(3, 4, 2)}, "log_temperature": f()}


def _grads(step):
  rs = np.random.RandomState(100 + step)
  return jax.tree.map(lambda p: jnp.asarray(rs.randn(*p.shape), jnp.float32), _params())


def _run(tx, steps=4):
  params, state = _params(), tx.init(_params())
  step = jax.jit(lambda g, s, p: tx.update(g, s, p))
  for i in range(steps):
    updates, state = step(_grads(i), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize("extra", [{}, {"mu_dtype": "bfloat16"}, {"grad_clip_norm": 0.5}])
def test_fused_update_equals_the_optax_chain(extra):
  config = optimizers.OptimizerConfig(base_learning_rate=1e-2, warmup_steps=2, eps=1e-6,
                                      **extra)
  make = lambda **kw: optimizers.make_optimizer(dataclasses.replace(config, **kw), 256, 10)[0]
  want, optax_state = _run(make())
  got, fused_state = _run(make(fused=True))
  assert isinstance(fused_state, fused_adamw.FusedAdamWState)
  tol = 2e-3 if extra.get("mu_dtype") else 1e-6
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
  assert not np.allclose(got["img"]["block"]["kernel"], _params()["img"]["block"]["kernel"])
  # The converted optax state holds the same moments.
  converted = fused_adamw.to_optax_state(fused_state, got, make(), optimizers.kernel_mask)
  assert jax.tree.structure(converted) == jax.tree.structure(optax_state)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(optax_state)):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=tol, atol=tol)


def test_weight_decay_only_on_kernels():
  tx = fused_adamw.fused_adamw(1.0, weight_decay=0.5, decay_mask=optimizers.kernel_mask)
  params = _params()
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["txt"]["kernel"], -0.5 * params["txt"]["kernel"], rtol=1e-6)
  np.testing.assert_array_equal(updates["img"]["block"]["bias"], 0.0)
  np.testing.assert_array_equal(updates["log_temperature"], 0.0)


def test_state_round_trip_is_exact():
  tx = optimizers.make_optimizer(optimizers.OptimizerConfig(mu_dtype="bfloat16"), 256, 10)[0]
  params, optax_state = _run(tx, steps=3)
  fused = fused_adamw.from_optax_state(optax_state, params, optimizers.kernel_mask)
  assert fused.mu.dtype == jnp.bfloat16 and int(fused.count) == 3
  back = fused_adamw.to_optax_state(fused, params, tx, optimizers.kernel_mask)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(optax_state)):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  again = fused_adamw.from_optax_state(back, params, optimizers.kernel_mask)
  for a, b in zip(fused, again):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_layout_puts_decayed_arrays_first():
  lay = fused_adamw.layout(_params(), optimizers.kernel_mask)
  assert lay.total == 30 + 5 + 5 + 24 + 1
  assert lay.num_decayed == 30 + 24
  flat = fused_adamw.flatten(_params(), lay)
  back = fused_adamw.unflatten(flat, lay, _params())
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(_params())):
    np.testing.assert_array_equal(a, b)


def test_update_without_params_is_a_clear_error():
  tx = fused_adamw.fused_adamw(1e-3)
  with pytest.raises(ValueError, match="needs the parameters"):
    tx.update(_params(), tx.init(_params()))
