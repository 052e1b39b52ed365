"""Tests of clipa_t5x.interop.clipa_jax: the official CLIPA JAX .npz layout, read strictly."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop_helpers  # noqa: E402

from clipa_t5x.interop import clipa_jax  # noqa: E402
from clipa_t5x.interop import open_clip as oc  # noqa: E402
from clipa_t5x.models import configs  # noqa: E402


def _official_shapes(variant, text_length=32):
  config = configs.get_config(variant)
  return {clipa_jax.to_official(k): (1,) if k == "log_temperature" else s
          for k, s in oc.clipa_param_shapes(config, text_length).items()}


def test_official_names():
  names = set(_official_shapes("Ti/8"))
  for name in ("t", "img/cls", "img/embedding/kernel", "img/encoder_norm/scale",
               "img/head/kernel", "txt/Embed_0/embedding", "txt/pos_embedding",
               "txt/head/kernel",
               "img/Transformer/encoderblock_1/MultiHeadDotProductAttention_0/query/kernel",
               "img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/out/bias",
               "txt/Transformer/encoderblock_0/LayerNorm_0/scale",
               "txt/Transformer/encoderblock_1/LayerNorm_1/bias",
               "img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel",
               "txt/Transformer/encoderblock_1/MlpBlock_0/Dense_1/bias"):
    assert name in names, name
  for name in names:
    assert clipa_jax.to_official(clipa_jax.to_ours(name)) == name


@pytest.mark.parametrize("variant", sorted(configs.VARIANTS))
def test_every_variant_is_read_off_its_shapes(variant):
  config, length = clipa_jax.config_from_shapes(_official_shapes(variant, 8))
  assert (config, length) == (configs.get_config(variant), 8)


def test_round_trip_and_prefixes(tmp_path):
  params = interop_helpers.random_params("Ti/8", 16, 8, seed=2)
  path = clipa_jax.save(params, str(tmp_path / "bare.npz"))
  loaded, config, length = clipa_jax.load(path)
  assert (config, length) == (configs.get_config("Ti/8"), 8)
  interop_helpers.assert_identical(params, loaded)
  with np.load(path) as data:
    arrays = {k: data[k] for k in data.files}
  assert arrays["t"].shape == (1,)
  for prefix in ("params/", "opt/target/"):
    np.savez(tmp_path / "wrapped.npz", **{prefix + k: v for k, v in arrays.items()},
             **{"opt/state/count": np.zeros(())})
    loaded, _, _ = clipa_jax.load(str(tmp_path / "wrapped.npz"))
    interop_helpers.assert_identical(params, loaded)


def _strict_error(shapes):
  with pytest.raises(ValueError) as e:
    clipa_jax.config_from_shapes(shapes)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_strict_reading_names_the_arrays():
  good = _official_shapes("Ti/8")
  extra = dict(good, **{"img/MAPHead_0/probe": (1, 1, 64)})
  assert "unused array(s)" in _strict_error(extra) and "MAPHead_0/probe" in _strict_error(extra)
  missing = {k: v for k, v in good.items() if k != "txt/encoder_norm/bias"}
  assert "missing" in _strict_error(missing) and "txt/encoder_norm/bias" in _strict_error(missing)
  wrong = dict(good, **{"img/Transformer/encoderblock_1/MlpBlock_0/Dense_1/kernel": (255, 64)})
  message = _strict_error(wrong)
  assert "Dense_1/kernel" in message and "(255, 64)" in message and "(256, 64)" in message
  learned = dict(good, **{"img/pos_embedding": (1, 5, 64)})
  assert "learned image position embedding" in _strict_error(learned)
  gap = {k: v for k, v in good.items() if "img/Transformer/encoderblock_0/" not in k}
  assert "not numbered" in _strict_error(gap)
  no_head = {k: v for k, v in good.items() if k != "img/head/kernel"}
  assert "'img/head/kernel' is missing" in _strict_error(no_head)


def test_not_a_two_tower_tree(tmp_path):
  np.savez(tmp_path / "vit.npz", **{"params/Transformer/encoder_norm/scale": np.ones(3)})
  with pytest.raises(ValueError, match="not an official CLIPA JAX checkpoint"):
    clipa_jax.read_shapes(str(tmp_path / "vit.npz"))
