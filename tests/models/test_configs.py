"""Tests for clipa_t5x.models.configs."""
import dataclasses
import os

import pytest

from clipa_t5x.models import configs
from clipa_t5x.models.clip import ClipaModel

# (image w/d/mlp/heads/patch, text w/d/mlp/heads, embed) from reference §3.
EXPECTED = {
    "S/16": ((384, 12, 1536, 6, 16), (384, 12, 1536, 6), 384),
    "B/16": ((768, 12, 3072, 12, 16), (512, 12, 2048, 8), 512),
    "L/14": ((1024, 24, 4096, 16, 14), (768, 12, 3072, 12), 768),
    "H/14": ((1280, 32, 5120, 16, 14), (1024, 24, 4096, 16), 1024),
    "bigG/14": ((1664, 48, 8192, 16, 14), (1280, 32, 5120, 20), 1280),
    "Ti/8": ((64, 2, 256, 4, 8), (64, 2, 256, 4), 64),
    "Mu/8": ((128, 4, 512, 4, 8), (128, 4, 512, 4), 128),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variant_sizes(name):
  cfg = configs.get_config(name)
  (iw, idp, imlp, ih, patch), (tw, tdp, tmlp, th), embed = EXPECTED[name]
  assert (cfg.image.width, cfg.image.depth, cfg.image.mlp_dim, cfg.image.heads) == (iw, idp, imlp, ih)
  assert cfg.image.patch_size == patch
  assert (cfg.text.width, cfg.text.depth, cfg.text.mlp_dim, cfg.text.heads) == (tw, tdp, tmlp, th)
  assert cfg.text.vocab_size == 32000
  assert cfg.embed_dim == embed
  assert (cfg.dtype, cfg.remat_policy) == ("float32", "none")
  assert not hasattr(cfg, "mask_ratio") and not hasattr(cfg, "mask_type")  # training settings


def test_variant_names_are_exactly_the_expected_ones():
  assert set(configs.VARIANTS) == set(EXPECTED)


def test_unknown_variant_lists_known_names():
  with pytest.raises(ValueError, match="known variants.*H/14"):
    configs.get_config("X/99")


def test_overrides_replace_fields_and_keep_base():
  cfg = configs.get_config("H/14", dtype="bfloat16", remat_policy="full")
  assert (cfg.dtype, cfg.remat_policy) == ("bfloat16", "full")
  assert configs.VARIANTS["H/14"].dtype == "float32"  # base untouched


def test_tower_override_by_dict_and_by_object():
  cfg = configs.get_config("Ti/8", image={"patch_size": 4}, text={"depth": 3})
  assert cfg.image.patch_size == 4 and cfg.image.width == 64
  assert cfg.text.depth == 3 and cfg.text.vocab_size == 32000
  tower = configs.TowerConfig(width=32, depth=1, heads=2, mlp_dim=64, patch_size=8)
  assert configs.get_config("Ti/8", image=tower).image is tower


def test_configs_are_frozen():
  cfg = configs.get_config("Ti/8")
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.dtype = "bfloat16"


@pytest.mark.parametrize("overrides, pattern", [
    ({"dtype": "float8"}, "dtype"),
    ({"remat_policy": "some"}, "remat_policy"),
    ({"mask_ratio": 0.3}, "Unknown ClipaConfig override"),
    ({"embed_dim": 0}, "embed_dim"),
    ({"colour": 1}, "Unknown ClipaConfig override"),
    ({"image": {"patchsize": 8}}, "Unknown image override"),
    ({"image": {"heads": 5}}, "not divisible by heads"),
    ({"image": {"patch_size": None}}, "patch_size"),
    ({"text": {"vocab_size": None}}, "vocab_size"),
])
def test_bad_overrides_raise_clear_errors(overrides, pattern):
  with pytest.raises(ValueError, match=pattern):
    configs.get_config("Ti/8", **overrides)


def test_attention_impl_is_a_validated_field_defaulting_to_auto():
  from clipa_t5x.models import layers
  assert configs.ATTENTION_IMPLS == layers.ATTENTION_IMPLS
  assert configs.get_config("Ti/8").attention_impl == "auto"
  for impl in configs.ATTENTION_IMPLS:
    assert configs.get_config("Ti/8", attention_impl=impl).attention_impl == impl
  cfg = dataclasses.replace(configs.get_config("B/16"), attention_impl="cudnn")
  assert cfg.attention_impl == "cudnn"
  with pytest.raises(ValueError, match="attention_impl"):
    configs.get_config("Ti/8", attention_impl="flash")


@pytest.mark.usefixtures("clean_gin")
def test_gin_binds_attention_impl_on_a_model_file():
  gin = pytest.importorskip("gin")
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  gin.parse_config_files_and_bindings(
      [os.path.join(root, "gin", "models", "mu8.gin")],
      ["configs.get_config.attention_impl = 'xla'"])
  config = gin.get_configurable(configs.get_config)()  # name from mu8.gin
  assert config == configs.get_config("Mu/8", attention_impl="xla")
