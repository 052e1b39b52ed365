"""Tests of clipa_t5x.flops: open_clip's published profile and an XLA cross-check."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from clipa_t5x import flops
from clipa_t5x.models.configs import get_config
from clipa_t5x.models.clip import ClipaModel

GIGA = 1e9


# open_clip docs/model_profile.csv, forward GFLOPs per sample at 224 px / 32 tokens.
def test_h14_matches_open_clip_profile():
  result = flops.per_example_flops(get_config("H/14"), image_size=224, text_length=32)
  assert result["image_forward"] / GIGA == pytest.approx(334.59, rel=0.02)
  assert result["text_forward"] / GIGA == pytest.approx(19.43, rel=0.02)
  assert result["forward"] / GIGA == pytest.approx(354.02, rel=0.02)


def test_l14_matches_open_clip_profile():
  result = flops.per_example_flops(get_config("L/14"), image_size=224, text_length=32)
  assert result["forward"] / GIGA == pytest.approx(167.5, rel=0.02)


def test_bigg14_total():
  result = flops.per_example_flops(get_config("bigG/14"), image_size=224, text_length=32)
  assert result["forward"] / GIGA == pytest.approx(1007.9, rel=0.02)


def test_parts_add_up_and_train_is_three_forwards():
  result = flops.per_example_flops(get_config("B/16"), image_size=224, text_length=32,
                                   mask_ratio=0.5)
  assert result["forward"] == result["image_forward"] + result["text_forward"]
  assert result["train"] == 3 * result["forward"]


@pytest.mark.parametrize("image_size, patch, ratio, expected", [
    (224, 14, 0.0, 256),
    (224, 14, 0.75, 64),
    (224, 16, 0.3, int(196 * 0.7)),   # 137
    (112, 14, 0.5, 32),
    (84, 14, 0.3, int(36 * 0.7)),     # 25: truncated, not rounded
])
def test_image_tokens_under_masking(image_size, patch, ratio, expected):
  assert flops.image_tokens(image_size, patch, ratio) == expected


def test_masking_reduces_only_the_encoder_cost():
  config = get_config("H/14")
  full = flops.image_forward_flops(config, 224, 0.0)
  masked = flops.image_forward_flops(config, 224, 0.75)
  tower = config.image
  # Patch embedding sees all 256 patches either way; the blocks see 65 vs 257 tokens.
  blocks = functools.partial(flops.transformer_forward_flops, width=tower.width,
                             depth=tower.depth, mlp_dim=tower.mlp_dim)
  assert full - masked == pytest.approx(blocks(257) - blocks(65), rel=1e-12)
  assert masked < 0.3 * full


def test_transformer_forward_flops_by_hand():
  # One block, 2 tokens, width 4, mlp 8: 2·2·(4·16 + 2·4·8) + 4·2·2·4 = 512 + 64.
  assert flops.transformer_forward_flops(tokens=2, width=4, depth=1, mlp_dim=8) == 576
  assert flops.transformer_forward_flops(tokens=2, width=4, depth=3, mlp_dim=8) == 3 * 576


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  # jax 0.12 returns a dict; older versions returned a one-element list of dicts.
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


@pytest.mark.parametrize("image_size", [32, 64])
def test_analytic_image_flops_match_xla_cost_analysis(image_size):
  """The analytic count vs XLA's count of the compiled Ti/8 image tower.

  XLA counts the same matmul/conv FLOPs (2 per multiply-add) plus every
  elementwise op (normalisation, LayerNorm, softmax, GELU, bias adds). For
  Ti/8 (width 64) those extras are about 4% of the total; at real widths they
  fall well below 1%. So XLA must count at least the analytic figure and at
  most 10% more.
  """
  config = get_config("Ti/8")
  model = ClipaModel(config)
  variables = jax.eval_shape(
      functools.partial(model.get_initial_variables, image_size=image_size, text_length=8),
      jax.random.key(0))
  params = nn.meta.unbox(variables["params"])
  batch = 2
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.uint8)
  xla = _xla_flops(model.encode_images, params, images)
  analytic = batch * flops.image_forward_flops(config, image_size)
  print(f"Ti/8 @ {image_size}px, batch {batch}: analytic {analytic:.4g}, XLA {xla:.4g}, "
        f"ratio {xla / analytic:.4f}")
  assert analytic <= xla <= 1.10 * analytic


def test_analytic_text_flops_match_xla_cost_analysis():
  config = get_config("Ti/8")
  model = ClipaModel(config)
  length, batch = 16, 2
  variables = jax.eval_shape(
      functools.partial(model.get_initial_variables, image_size=32, text_length=length),
      jax.random.key(0))
  params = nn.meta.unbox(variables["params"])
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  xla = _xla_flops(model.encode_texts, params, tokens)
  analytic = batch * flops.text_forward_flops(config, length)
  print(f"Ti/8 text, {length} tokens, batch {batch}: analytic {analytic:.4g}, XLA {xla:.4g}, "
        f"ratio {xla / analytic:.4f}")
  assert analytic <= xla <= 1.10 * analytic


def test_the_loss_adds_two_batch_embed_flops_per_pair():
  config = get_config("H/14")
  towers = flops.per_example_flops(config, 84, 8)
  with_loss = flops.per_example_flops(config, 84, 8, batch_size=65_536)
  assert towers["loss_forward"] == 0.0
  assert with_loss["loss_forward"] == 2 * 65_536 * 1024
  assert with_loss["forward"] == towers["forward"] + 2 * 65_536 * 1024
  assert with_loss["train"] == pytest.approx(3 * with_loss["forward"])
  assert 0.002 < with_loss["loss_forward"] / with_loss["forward"] < 0.003
  # Same count for either loss: the same B x B logits, only the pointwise part differs.
  sigmoid = get_config("H/14", loss="sigmoid")
  assert flops.per_example_flops(sigmoid, 84, 8, batch_size=65_536) == with_loss
