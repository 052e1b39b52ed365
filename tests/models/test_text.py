"""Tests for clipa_t5x.models.text (the CLIPA text tower)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from clipa_t5x.models import text

W, L = 64, 8


def _tower(**kw):
  return text.TextTransformer(width=W, depth=2, heads=4, mlp_dim=256, vocab_size=32000,
                              out_dim=32, **kw)


@functools.lru_cache(maxsize=None)
def _variables(length=L):
  return _tower().init(jax.random.key(0), jnp.zeros((1, length), jnp.int32))


def _caption(*ids, length=L):
  row = [101, *ids] + [0] * (length - 1 - len(ids))
  return jnp.asarray([row], jnp.int32)


def _apply(tokens, **kw):
  return np.asarray(_tower(**kw).apply(_variables(tokens.shape[1]), tokens))


def test_output_shape_and_param_tree():
  tokens = jnp.concatenate([_caption(2003, 1037), _caption(4937)])
  assert _apply(tokens).shape == (2, 32)
  params = nn.meta.unbox(_variables())["params"]
  assert set(params) == {"embedding", "pos_embedding", "encoder", "encoder_norm", "head"}
  assert params["embedding"]["embedding"].shape == (32000, W)
  assert params["pos_embedding"].shape == (1, L, W)
  assert "bias" not in params["head"]


def test_logical_names():
  specs = nn.get_partition_spec(_variables())["params"]
  assert specs["embedding"]["embedding"] == P("vocab", "embed")
  assert specs["pos_embedding"] == P(None, "length", "embed")
  assert specs["head"]["kernel"] == P("embed", "proj")
  leaves = jax.tree.leaves(_variables(), is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
  assert all(isinstance(v, nn.LogicallyPartitioned) and len(v.names) == v.value.ndim
             for v in leaves)


def test_pos_embedding_length_follows_init_input():
  assert nn.meta.unbox(_variables(32))["params"]["pos_embedding"].shape == (1, 32, W)


def test_length_mismatch_raises_clear_error():
  with pytest.raises(ValueError, match="pos_embedding length 8.*resize"):
    _tower().apply(_variables(8), jnp.zeros((1, 32), jnp.int32))


def test_bad_token_array_raises():
  with pytest.raises(ValueError, match="integer"):
    _tower().apply(_variables(), jnp.zeros((1, L), jnp.float32))


def test_pooling_is_layernormed_last_position():
  tokens = jnp.concatenate([_caption(2003, 1037), _caption(4937, 2006, 1996)])
  m = _tower()
  _, state = m.apply(_variables(), tokens, capture_intermediates=True)
  encoded = np.asarray(state["intermediates"]["encoder"]["__call__"][0], np.float64)
  params = nn.meta.unbox(_variables())["params"]
  last = encoded[:, -1]
  mu, var = last.mean(-1, keepdims=True), last.var(-1, keepdims=True)
  ln = params["encoder_norm"]
  want = ((last - mu) / np.sqrt(var + 1e-6) * np.asarray(ln["scale"]) + np.asarray(ln["bias"])
          ) @ np.asarray(params["head"]["kernel"])
  np.testing.assert_allclose(_apply(tokens), want, rtol=1e-4, atol=1e-5)


def test_last_position_and_pads_matter_no_mask():
  base = _caption(2003, 1037)
  out = _apply(base)
  np.testing.assert_array_equal(_apply(base), out)  # deterministic
  # The last slot is a pad here; changing it changes the pooled output.
  assert not np.allclose(_apply(base.at[0, -1].set(2000)), out)
  # A pad in the middle is attended too (no padding mask).
  assert not np.allclose(_apply(base.at[0, 4].set(2000)), out)
  # Not causal: the first position's encoding sees the last token.
  m = _tower()
  enc = lambda t: m.apply(_variables(), t, capture_intermediates=True)[1][
      "intermediates"]["encoder"]["__call__"][0]
  assert not np.allclose(enc(base.at[0, -1].set(2000))[0, 0], enc(base)[0, 0])


def test_init_statistics_open_clip_style():
  m = text.TextTransformer(width=256, depth=1, heads=4, mlp_dim=1024, vocab_size=32000,
                           out_dim=128)
  params = jax.tree.map(np.asarray, nn.meta.unbox(
      m.init(jax.random.key(0), jnp.zeros((1, 32), jnp.int32))["params"]))
  blk = params["encoder"]["encoderblock_0"]
  proj_std = 256**-0.5 * 24**-0.5
  checks = [
      (params["embedding"]["embedding"], 0.02),
      (params["pos_embedding"], 0.01),
      (blk["attention"]["query"]["kernel"], 256**-0.5),
      (blk["attention"]["value"]["kernel"], 256**-0.5),
      (blk["attention"]["out"]["kernel"], proj_std),
      (blk["mlp"]["fc_in"]["kernel"], 512**-0.5),
      (blk["mlp"]["fc_out"]["kernel"], proj_std),
      (params["head"]["kernel"], 256**-0.5),
  ]
  for value, std in checks:
    np.testing.assert_allclose(value.std(), std, rtol=0.06)
    assert abs(value.mean()) < 0.1 * std
  assert not blk["attention"]["query"]["bias"].any() and not blk["mlp"]["fc_out"]["bias"].any()


def test_bf16_runs_with_float32_params():
  tokens = _caption(2003, 1037)
  y16 = _tower(dtype=jnp.bfloat16).apply(_variables(), tokens)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), _apply(tokens), rtol=0.1, atol=0.1)


def test_remat_matches():
  tokens = _caption(2003, 1037)
  np.testing.assert_allclose(_apply(tokens, remat_policy="full"), _apply(tokens), rtol=1e-6)
