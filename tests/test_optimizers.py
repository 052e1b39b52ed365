"""Tests of clipa_t5x.optimizers: schedule, decay mask, one AdamW step by hand."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clipa_t5x import optimizers


# ------------------------------------------------------------------- schedule
def test_schedule_values():
  base, batch, total, warmup = 1e-3, 1024, 110, 10
  schedule = optimizers.learning_rate_schedule(base, batch, total, warmup)
  peak = base * batch / 256
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(peak / 2, rel=1e-6)  # linear warmup
  assert float(schedule(warmup)) == pytest.approx(peak, rel=1e-6)
  midpoint = warmup + (total - warmup) // 2
  assert float(schedule(midpoint)) == pytest.approx(peak / 2, rel=1e-5)
  quarter = warmup + (total - warmup) // 4
  expected = peak * 0.5 * (1 + math.cos(math.pi / 4))
  assert float(schedule(quarter)) == pytest.approx(expected, rel=1e-5)
  assert float(schedule(total)) == pytest.approx(0.0, abs=1e-12)
  assert float(schedule(total + 50)) == pytest.approx(0.0, abs=1e-12)


def test_schedule_without_warmup_starts_at_peak():
  schedule = optimizers.learning_rate_schedule(4e-6, 256, 100, 0)
  assert float(schedule(0)) == pytest.approx(4e-6, rel=1e-6)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("total, warmup, match", [
    (0, 0, "total_steps"),
    (-5, 0, "total_steps"),
    (10, -1, "warmup_steps"),
    (10, 11, "warmup_steps"),
    (10, 10, "warmup_steps"),  # no room left for the cosine decay
])
def test_schedule_invalid_arguments(total, warmup, match):
  with pytest.raises(ValueError, match=match):
    optimizers.learning_rate_schedule(1e-3, 256, total, warmup)


# ----------------------------------------------------------------------- mask
def test_kernel_mask_on_nested_dict():
  params = {
      "img": {"embedding": {"kernel": jnp.zeros((2, 2))},
              "cls": jnp.zeros((1, 1, 2)),
              "encoder": {"block0": {"mlp": {"kernel": jnp.zeros((2, 4)), "bias": jnp.zeros(4)},
                                     "ln": {"scale": jnp.ones(2), "bias": jnp.zeros(2)}}},
              "head": {"kernel": jnp.zeros((2, 3))}},
      "txt": {"token_embedding": {"embedding": jnp.zeros((5, 2))},
              "pos_embedding": jnp.zeros((1, 3, 2))},
      "log_temperature": jnp.zeros(()),
  }
  mask = optimizers.kernel_mask(params)
  flat = {jax.tree_util.keystr(path): value
          for path, value in jax.tree_util.tree_leaves_with_path(mask)}
  decayed = sorted(k for k, v in flat.items() if v)
  assert decayed == sorted([
      "['img']['embedding']['kernel']",
      "['img']['encoder']['block0']['mlp']['kernel']",
      "['img']['head']['kernel']",
  ])
  assert len(flat) == 10


def test_kernel_mask_on_boxed_params():
  def box(value, names):
    return nn.LogicallyPartitioned(value, names)
  params = {
      "dense": {"kernel": box(jnp.zeros((2, 3)), ("embed", "mlp")),
                "bias": box(jnp.zeros(3), ("mlp",))},
      "ln": {"scale": box(jnp.ones(2), ("embed",))},
      "log_temperature": box(jnp.zeros(()), ()),
  }
  mask = optimizers.kernel_mask(params)
  # The mask keeps the boxes, so it has the params' tree structure.
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert mask["dense"]["kernel"].value is True
  assert mask["dense"]["bias"].value is False
  assert mask["ln"]["scale"].value is False
  assert mask["log_temperature"].value is False
  # And after unboxing, the same leaves are selected.
  unboxed = optimizers.kernel_mask(nn.meta.unbox(params))
  assert jax.tree.leaves(unboxed) == jax.tree.leaves(mask)


def test_a_sigmoid_model_decays_neither_its_temperature_nor_its_bias():
  from clipa_t5x.models import clip, configs  # pylint: disable=import-outside-toplevel
  model = clip.ClipaModel(configs.get_config("Mu/8", loss="sigmoid"))
  shapes = jax.eval_shape(lambda: model.get_initial_variables(jax.random.PRNGKey(0), 32, 8))
  mask = optimizers.kernel_mask(nn.meta.unbox(shapes["params"]))
  assert mask["log_temperature"] is False and mask["logit_bias"] is False
  assert any(jax.tree.leaves(mask["img"]))  # the towers' kernels are decayed
  # One AdamW step with a large decay and zero gradient leaves both scalars exactly as they were.
  params = nn.meta.unbox(model.get_initial_variables(jax.random.PRNGKey(0), 32, 8))["params"]
  tx, _ = optimizers.make_optimizer(
      optimizers.OptimizerConfig(base_learning_rate=1.0, weight_decay=10.0), 256, 10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(zeros, state, params)
  assert float(updates["logit_bias"]) == 0.0 and float(updates["log_temperature"]) == 0.0
  assert float(jnp.abs(updates["img"]["head"]["kernel"]).max()) > 0


# ---------------------------------------------------------------------- AdamW
def _numpy_adamw(params, grads_seq, lr_seq, b1, b2, eps, wd, decay):
  """Plain AdamW with bias correction; decay only where ``decay[name]``."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v2 = {k: np.zeros_like(v) for k, v in p.items()}
  for t, (grads, lr) in enumerate(zip(grads_seq, lr_seq), start=1):
    for k in p:
      g = np.asarray(grads[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v2[k] = b2 * v2[k] + (1 - b2) * g * g
      m_hat = m[k] / (1 - b1**t)
      v_hat = v2[k] / (1 - b2**t)
      update = m_hat / (np.sqrt(v_hat) + eps)
      if decay[k]:
        update = update + wd * p[k]
      p[k] = p[k] - lr * update
  return p


def test_two_adamw_steps_match_numpy_and_decay_only_kernels():
  config = optimizers.OptimizerConfig(base_learning_rate=0.05, warmup_steps=0, b1=0.9, b2=0.95,
                                      eps=1e-8, weight_decay=0.2)
  batch, total = 512, 10
  tx, schedule = optimizers.make_optimizer(config, batch_size=batch, total_steps=total)
  rng = np.random.RandomState(0)
  params = {"layer": {"kernel": rng.randn(3, 2).astype(np.float32),
                      "bias": rng.randn(2).astype(np.float32)}}
  grads_seq = [{"layer": {"kernel": rng.randn(3, 2).astype(np.float32),
                          "bias": rng.randn(2).astype(np.float32)}} for _ in range(2)]
  state = tx.init(jax.tree.map(jnp.asarray, params))
  current = jax.tree.map(jnp.asarray, params)
  for grads in grads_seq:
    updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, current)
    current = jax.tree.map(lambda p, u: p + u, current, updates)

  peak = 0.05 * batch / 256
  lrs = [peak, peak * 0.5 * (1 + math.cos(math.pi * 1 / total))]
  np.testing.assert_allclose([float(schedule(0)), float(schedule(1))], lrs, rtol=1e-6)
  flat = lambda tree: {"kernel": tree["layer"]["kernel"], "bias": tree["layer"]["bias"]}
  expected = _numpy_adamw(flat(params), [flat(g) for g in grads_seq], lrs, 0.9, 0.95, 1e-8, 0.2,
                          decay={"kernel": True, "bias": False})
  for name in ("kernel", "bias"):
    np.testing.assert_allclose(np.asarray(current["layer"][name]), expected[name], rtol=1e-5,
                               atol=1e-6, err_msg=name)
  # Counter-check: decaying the bias too would give a visibly different bias.
  wrong = _numpy_adamw(flat(params), [flat(g) for g in grads_seq], lrs, 0.9, 0.95, 1e-8, 0.2,
                       decay={"kernel": True, "bias": True})
  assert np.max(np.abs(wrong["bias"] - expected["bias"])) > 1e-3


def test_zero_gradient_still_decays_kernel_only():
  config = optimizers.OptimizerConfig(base_learning_rate=0.1, weight_decay=0.5)
  tx, _ = optimizers.make_optimizer(config, batch_size=256, total_steps=5)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["kernel"]), -0.1 * 0.5 * np.ones((2, 2)),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(updates["bias"]), np.zeros(2))


def test_grad_clip_norm_clips_the_global_norm():
  # b1=b2=0 and eps=1 make Adam's update g/(|g|+1): sensitive to the gradient's scale.
  def first_update(clip):
    config = optimizers.OptimizerConfig(base_learning_rate=1.0, weight_decay=0.0,
                                        grad_clip_norm=clip, b1=0.0, b2=0.0, eps=1.0)
    tx, _ = optimizers.make_optimizer(config, batch_size=256, total_steps=5)
    params = {"kernel": jnp.zeros(2)}
    updates, _ = tx.update({"kernel": jnp.array([30.0, -40.0])}, tx.init(params), params)
    return np.asarray(updates["kernel"])
  # Global norm 50 clipped to 1: the gradient becomes [0.6, -0.8].
  np.testing.assert_allclose(first_update(1.0), [-0.6 / 1.6, 0.8 / 1.8], rtol=1e-6)
  np.testing.assert_allclose(first_update(None), [-30 / 31, 40 / 41], rtol=1e-6)


# --------------------------------------------------------------------- dtypes
def test_bfloat16_first_moment():
  config = optimizers.OptimizerConfig(mu_dtype="bfloat16")
  tx, _ = optimizers.make_optimizer(config, batch_size=256, total_steps=10)
  params = {"kernel": jnp.ones((2, 2), jnp.float32)}
  state = tx.init(params)
  adam_state = state[0]
  assert adam_state.mu["kernel"].dtype == jnp.bfloat16
  assert adam_state.nu["kernel"].dtype == jnp.float32
  updates, state = tx.update({"kernel": jnp.full((2, 2), 0.5)}, state, params)
  assert state[0].mu["kernel"].dtype == jnp.bfloat16
  assert updates["kernel"].dtype == jnp.float32


def test_default_first_moment_follows_params():
  tx, _ = optimizers.make_optimizer(optimizers.OptimizerConfig(), batch_size=256, total_steps=10)
  state = tx.init({"kernel": jnp.ones((2,), jnp.float32)})
  assert state[0].mu["kernel"].dtype == jnp.float32


@pytest.mark.parametrize("bad", ["bf16", "float16", jnp.bfloat16])
def test_invalid_mu_dtype_raises(bad):
  config = dataclasses.replace(optimizers.OptimizerConfig(), mu_dtype=bad)
  with pytest.raises(ValueError, match="mu_dtype"):
    optimizers.make_optimizer(config, batch_size=256, total_steps=10)


def test_config_is_frozen_with_clipa_defaults():
  config = optimizers.OptimizerConfig()
  assert (config.b1, config.b2, config.weight_decay) == (0.9, 0.95, 0.2)
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.b1 = 0.5  # type: ignore[misc]


# ----------------------------------------------------------------------- Lion
def _numpy_lion(params, grads_seq, lr_seq, b1, b2, wd, decay):
  """The Lion formula: step sign(b1 m + (1 - b1) g) (+ decay), then m = b2 m + (1 - b2) g."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  for grads, lr in zip(grads_seq, lr_seq):
    for k in p:
      g = np.asarray(grads[k], np.float64)
      update = np.sign(b1 * m[k] + (1 - b1) * g)
      if decay[k]:
        update = update + wd * p[k]
      p[k] = p[k] - lr * update
      m[k] = b2 * m[k] + (1 - b2) * g
  return p


def _run(tx, params, grads_seq):
  state = tx.init(jax.tree.map(jnp.asarray, params))
  current = jax.tree.map(jnp.asarray, params)
  for grads in grads_seq:
    updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, current)
    current = optax.apply_updates(current, updates)
  return current, state


def test_three_lion_steps_match_the_formula_and_optax_lion():
  config = optimizers.OptimizerConfig(name="lion", base_learning_rate=0.05, b1=0.9, b2=0.95,
                                      weight_decay=2.0)
  batch, total = 512, 10
  tx, schedule = optimizers.make_optimizer(config, batch_size=batch, total_steps=total)
  rng = np.random.RandomState(0)
  params = {"kernel": rng.randn(3, 2).astype(np.float32), "bias": rng.randn(2).astype(np.float32)}
  grads_seq = [{"kernel": rng.randn(3, 2).astype(np.float32),
                "bias": rng.randn(2).astype(np.float32)} for _ in range(3)]
  current, _ = _run(tx, params, grads_seq)
  lrs = [float(schedule(i)) for i in range(3)]
  expected = _numpy_lion(params, grads_seq, lrs, 0.9, 0.95, 2.0,
                         decay={"kernel": True, "bias": False})
  theirs, _ = _run(optax.lion(schedule, b1=0.9, b2=0.95, weight_decay=2.0,
                              mask=optimizers.kernel_mask), params, grads_seq)
  for name in ("kernel", "bias"):
    np.testing.assert_allclose(np.asarray(current[name]), expected[name], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(current[name]), np.asarray(theirs[name]), rtol=1e-6,
                               atol=1e-7)
  # Counter-check: decaying the bias as well would move it visibly.
  wrong = _numpy_lion(params, grads_seq, lrs, 0.9, 0.95, 2.0, decay={"kernel": True, "bias": True})
  assert np.max(np.abs(wrong["bias"] - expected["bias"])) > 1e-2


def test_lion_keeps_a_bfloat16_moment():
  config = optimizers.OptimizerConfig(name="lion", mu_dtype="bfloat16")
  tx, _ = optimizers.make_optimizer(config, batch_size=256, total_steps=10)
  params = {"kernel": jnp.ones((2, 2), jnp.float32)}
  _, state = _run(tx, params, [{"kernel": np.full((2, 2), 0.5, np.float32)}])
  moments = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) == (2, 2)]
  assert moments and all(m.dtype == jnp.bfloat16 for m in moments)


def test_unknown_optimizer_is_refused():
  config = optimizers.OptimizerConfig(name="sgd")
  with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
    optimizers.make_optimizer(config, batch_size=256, total_steps=10)


def test_fused_is_adamw_only():
  config = optimizers.OptimizerConfig(name="lion", fused=True)
  with pytest.raises(ValueError, match="fused AdamW; it cannot run 'lion'"):
    optimizers.make_optimizer(config, batch_size=256, total_steps=10)


# ----------------------------------------------------- per-parameter multipliers
def test_multipliers_scale_only_the_named_parameters():
  params = {"log_temperature": jnp.zeros(()), "logit_bias": jnp.zeros(()),
            "layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
  grads = {"log_temperature": jnp.asarray(0.3), "logit_bias": jnp.asarray(-2.0),
           "layer": {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full(2, 0.1)}}
  def first_update(multipliers):
    config = optimizers.OptimizerConfig(base_learning_rate=0.01, weight_decay=0.2,
                                        learning_rate_multipliers=multipliers)
    tx, _ = optimizers.make_optimizer(config, batch_size=256, total_steps=10)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates
  plain = first_update(None)
  scaled = first_update({"log_temperature": 10.0, "logit_bias": 4.0})
  np.testing.assert_allclose(float(scaled["log_temperature"]),
                             10.0 * float(plain["log_temperature"]), rtol=1e-6)
  np.testing.assert_allclose(float(scaled["logit_bias"]), 4.0 * float(plain["logit_bias"]),
                             rtol=1e-6)
  assert abs(float(plain["log_temperature"])) > 1e-3  # the scaled updates are not zero
  for name in ("kernel", "bias"):
    np.testing.assert_array_equal(np.asarray(scaled["layer"][name]),
                                  np.asarray(plain["layer"][name]))


def test_multipliers_match_boxed_parameters_by_name():
  box = lambda v: nn.LogicallyPartitioned(v, ())
  params = {"log_temperature": box(jnp.zeros(())), "head": {"kernel": box(jnp.ones(()))}}
  tx = optimizers.scale_by_name({"log_temperature": 3.0})
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert float(updates["log_temperature"].value) == 3.0
  assert float(updates["head"]["kernel"].value) == 1.0


def test_multipliers_naming_no_parameter_are_refused():
  tx = optimizers.scale_by_name({"log_temperatur": 10.0})
  with pytest.raises(ValueError, match=r"names \['log_temperatur'\], which no parameter"):
    tx.init({"log_temperature": jnp.zeros(()), "kernel": jnp.zeros(2)})


def test_multipliers_config_is_hashable_and_validated():
  config = optimizers.OptimizerConfig(learning_rate_multipliers={"b": 2.0, "a": 3.0})
  assert config.learning_rate_multipliers == (("a", 3.0), ("b", 2.0))
  hash(config)
  assert optimizers.OptimizerConfig().learning_rate_multipliers == ()
  with pytest.raises(ValueError, match="factor >= 0"):
    optimizers.OptimizerConfig(learning_rate_multipliers={"a": -1.0})
  with pytest.raises(ValueError, match="fused=False or learning_rate_multipliers=None"):
    optimizers.make_optimizer(
        optimizers.OptimizerConfig(fused=True, learning_rate_multipliers={"a": 2.0}), 256, 10)
