"""Tests for clipa_t5x.models.vit: sin-cos positions, patch masking, the image tower."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipa_t5x.models import vit

WIDTH, PATCH = 64, 8


def loop_posemb(h, w, width, temperature=10000.0):
  """Independent reference: one patch and one frequency at a time."""
  quarter = width // 4
  out = np.zeros((h * w, width))
  for row in range(h):
    for col in range(w):
      i = row * w + col
      for k in range(quarter):
        omega = 1.0 / temperature**(k / (quarter - 1))
        out[i, k] = np.sin(col * omega)
        out[i, quarter + k] = np.cos(col * omega)
        out[i, 2 * quarter + k] = np.sin(row * omega)
        out[i, 3 * quarter + k] = np.cos(row * omega)
  return out


@pytest.mark.parametrize("h, w, width", [(5, 5, 64), (16, 16, 32), (3, 7, 16)])
def test_posemb_matches_loop_reference(h, w, width):
  got = vit.posemb_sincos_2d(h, w, width)
  assert got.shape == (h * w, width) and got.dtype == np.float32
  np.testing.assert_allclose(got, loop_posemb(h, w, width), atol=1e-6)


def test_posemb_first_patch_and_distinct_rows():
  pe = vit.posemb_sincos_2d(5, 5, 64)
  # (0, 0): sin parts 0, cos parts 1.
  np.testing.assert_allclose(pe[0], np.r_[np.zeros(16), np.ones(16), np.zeros(16), np.ones(16)])
  assert len({row.tobytes() for row in pe}) == 25


@pytest.mark.parametrize("width", [30, 4])
def test_posemb_rejects_bad_width(width):
  with pytest.raises(ValueError, match="multiple of 4"):
    vit.posemb_sincos_2d(4, 4, width)


# ----------------------------------------------------------------- index helpers


@pytest.mark.parametrize("n, ratio, keep", [(25, 0.0, 25), (25, 0.3, 17), (256, 0.3, 179),
                                            (256, 0.4, 153), (10, 0.9, 1), (16, 0.5, 8)])
def test_num_kept_is_floor(n, ratio, keep):
  assert vit.num_kept(n, ratio) == keep


def test_num_kept_rejects_empty():
  with pytest.raises(ValueError, match="keeps no patch"):
    vit.num_kept(4, 0.9)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9])
def test_random_indices_are_distinct_and_vary(ratio):
  idx = np.asarray(vit.random_keep_indices(jax.random.key(0), 8, 64, ratio))
  assert idx.shape == (8, vit.num_kept(64, ratio))
  for row in idx:
    assert len(set(row)) == len(row) and row.min() >= 0 and row.max() < 64
  assert len({tuple(sorted(r)) for r in idx}) > 1


def test_grid_indices_one_per_window_with_common_offset():
  idx = np.asarray(vit.grid_keep_indices(jax.random.key(3), 16, 6, 8))
  assert idx.shape == (16, 12)
  offsets = set()
  for row in idx:
    r, c = row // 8, row % 8
    windows = {(a // 2, b // 2) for a, b in zip(r, c)}
    assert len(windows) == 12  # exactly one per 2x2 window
    offs = {(a % 2, b % 2) for a, b in zip(r, c)}
    assert len(offs) == 1  # same offset inside a sample
    offsets |= offs
  assert len(offsets) > 1  # differs across samples


def test_grid_indices_need_even_grid():
  with pytest.raises(ValueError, match="even patch grid"):
    vit.grid_keep_indices(jax.random.key(0), 2, 5, 5)


@pytest.mark.parametrize("gh, gw, ratio", [(8, 8, 0.75), (8, 8, 0.5), (5, 5, 0.4), (10, 2, 0.55),
                                           (16, 16, 0.3)])
def test_block_indices_are_one_contiguous_block(gh, gw, ratio):
  keep = vit.num_kept(gh * gw, ratio)
  rows, cols = vit.block_shape(gh, gw, keep)
  assert rows <= gh and cols <= gw and rows * cols >= keep > (rows - 1) * cols
  idx = np.asarray(vit.block_keep_indices(jax.random.key(1), 16, gh, gw, ratio))
  assert idx.shape == (16, keep)
  for row in idx:
    r, c = row // gw, row % gw
    top, left = r.min(), c.min()
    assert r.max() - top < rows and c.max() - left < cols  # inside the block box
    # The first `keep` cells of the block in row-major order.
    want = [(top + i // cols) * gw + left + i % cols for i in range(keep)]
    assert sorted(row) == want
  if (gh, gw) != (rows, cols):
    assert len({tuple(r) for r in idx}) > 1  # positions vary across samples


def test_mask_patches_gathers_rows():
  tokens = jnp.arange(2 * 16 * 3, dtype=jnp.float32).reshape(2, 16, 3)
  out = vit.mask_patches(tokens, jax.random.key(0), grid_hw=(4, 4), mask_ratio=0.75,
                         mask_type="grid")
  assert out.shape == (2, 4, 3)
  for b in range(2):
    for tok in np.asarray(out[b]):
      assert any(np.array_equal(tok, t) for t in np.asarray(tokens[b]))
  with pytest.raises(ValueError, match="0.75"):
    vit.mask_patches(tokens, jax.random.key(0), grid_hw=(4, 4), mask_ratio=0.5, mask_type="grid")
  with pytest.raises(ValueError, match="mask_type"):
    vit.mask_patches(tokens, jax.random.key(0), grid_hw=(4, 4), mask_ratio=0.5, mask_type="x")


@pytest.mark.parametrize("ratio, mask_type, match", [
    (0.3, "stripes", "mask_type"), (1.0, "random", "mask_ratio"), (-0.1, "random", "mask_ratio"),
    (0.5, "grid", "0.75")])
def test_check_masking_rejects_bad_settings(ratio, mask_type, match):
  with pytest.raises(ValueError, match=match):
    vit.check_masking(ratio, mask_type)


def test_check_masking_accepts_good_settings():
  for ratio, mask_type in ((0.0, "random"), (0.3, "block"), (0.75, "grid"), (0.0, "grid")):
    vit.check_masking(ratio, mask_type)


# --------------------------------------------------------------------- the tower


def _tower(**kw):
  return vit.VisionTransformer(width=WIDTH, depth=1, heads=4, mlp_dim=128, patch_size=PATCH,
                               out_dim=32, **kw)


def _images(batch=2, size=32, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randint(0, 256, (batch, size, size, 3)), jnp.uint8)


@functools.lru_cache(maxsize=None)
def _variables():
  return _tower().init(jax.random.key(0), _images(1), train=False)


def _tokens(module, images, train, rng=None, **mask):
  rngs = {"mask": rng} if rng is not None else {}
  return module.apply(_variables(), images, train=train, rngs=rngs,
                      method=vit.VisionTransformer.tokens, **mask)


def test_tokens_are_normalised_patch_embedding_plus_posemb_and_zero_cls():
  images = _images(2, 32)
  tokens = np.asarray(_tokens(_tower(), images, train=False))
  assert tokens.shape == (2, 1 + 16, WIDTH)
  np.testing.assert_array_equal(tokens[:, 0], 0.0)  # zero cls, no position added
  params = nn.meta.unbox(_variables())["params"]
  assert "bias" not in params["embedding"]
  kernel = np.asarray(params["embedding"]["kernel"])  # [p, p, 3, W]
  x = (np.asarray(images, np.float64) / 255 - vit.IMAGENET_MEAN) / vit.IMAGENET_STD
  pe = loop_posemb(4, 4, WIDTH)
  for b in range(2):
    for r in range(4):
      for c in range(4):
        patch = x[b, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]
        want = np.einsum("ijc,ijcw->w", patch, kernel) + pe[r * 4 + c]
        np.testing.assert_allclose(tokens[b, 1 + r * 4 + c], want, rtol=1e-4, atol=1e-4)


def test_float_and_uint8_images_agree():
  images = _images()
  m = _tower()
  np.testing.assert_allclose(m.apply(_variables(), images, train=False),
                             m.apply(_variables(), images.astype(jnp.float32), train=False),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_type, ratio, size", [
    ("random", 0.5, 32), ("random", 0.75, 32), ("random", 0.3, 48),
    ("grid", 0.75, 32), ("grid", 0.75, 48),
    ("block", 0.5, 32), ("block", 0.5, 40), ("block", 0.3, 48)])
def test_masked_tokens_keep_their_own_positions(mask_type, ratio, size):
  m = _tower()
  images = jnp.broadcast_to(_images(1, size), (4, size, size, 3))  # same image, 4 masks
  full = np.asarray(_tokens(m, images, train=False))
  masked = np.asarray(_tokens(m, images, train=True, rng=jax.random.key(7), mask_ratio=ratio,
                              mask_type=mask_type))
  n = (size // PATCH)**2
  keep = n // 4 if mask_type == "grid" else vit.num_kept(n, ratio)
  assert full.shape[1] == 1 + n and masked.shape[1] == 1 + keep
  kept_sets = []
  for b in range(4):
    np.testing.assert_array_equal(masked[b, 0], full[b, 0])  # cls kept first
    positions = []
    for tok in masked[b, 1:]:
      hits = np.where(np.all(np.isclose(full[b, 1:], tok, atol=1e-6), axis=1))[0]
      assert len(hits) == 1
      positions.append(int(hits[0]))
    assert len(set(positions)) == keep  # distinct original positions
    kept_sets.append(frozenset(positions))
  assert len(set(kept_sets)) > 1  # samples get different masks


def test_masking_is_deterministic_per_rng():
  m = _tower()
  images = _images(4)
  a = _tokens(m, images, train=True, rng=jax.random.key(1), mask_ratio=0.5)
  b = _tokens(m, images, train=True, rng=jax.random.key(1), mask_ratio=0.5)
  c = _tokens(m, images, train=True, rng=jax.random.key(2), mask_ratio=0.5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_no_masking_when_not_training():
  m = _tower()
  images = _images(2)
  # No 'mask' rng needed and all 16 patches present.
  assert _tokens(m, images, train=False, mask_ratio=0.5).shape == (2, 17, WIDTH)
  np.testing.assert_array_equal(m.apply(_variables(), images, train=False, mask_ratio=0.5),
                                m.apply(_variables(), images, train=False))


def test_training_with_mask_needs_rng():
  with pytest.raises(ValueError, match="'mask' rng"):
    _tower().apply(_variables(), _images(), train=True, mask_ratio=0.5)


def test_pooling_is_mean_of_patch_tokens_then_layernorm_then_head():
  m = _tower()
  images = _images(3)
  encoded = m.apply(_variables(), images,
                    method=lambda mod, im: mod.encoder(mod.tokens(im, train=False)))
  params = nn.meta.unbox(_variables())["params"]
  pooled = np.asarray(encoded, np.float64)[:, 1:].mean(1)  # cls excluded
  mu, var = pooled.mean(-1, keepdims=True), pooled.var(-1, keepdims=True)
  ln = params["encoder_norm"]
  normed = (pooled - mu) / np.sqrt(var + 1e-6) * np.asarray(ln["scale"]) + np.asarray(ln["bias"])
  want = normed @ np.asarray(params["head"]["kernel"])
  assert "bias" not in params["head"]
  np.testing.assert_allclose(m.apply(_variables(), images, train=False), want,
                             rtol=1e-4, atol=1e-5)


def test_no_layernorm_before_the_blocks_and_param_names():
  params = nn.meta.unbox(_variables())["params"]
  assert set(params) == {"embedding", "cls", "encoder", "encoder_norm", "head"}
  assert params["cls"].shape == (1, 1, WIDTH) and not np.any(params["cls"])


def test_init_scales():
  m = vit.VisionTransformer(width=256, depth=1, heads=4, mlp_dim=512, patch_size=16, out_dim=128)
  params = jax.tree.map(np.asarray, nn.meta.unbox(
      m.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3), jnp.uint8), train=False)["params"]))
  head = params["head"]["kernel"]
  np.testing.assert_allclose(head.std(), 256**-0.5, rtol=0.05)
  conv = params["embedding"]["kernel"]  # xavier over fan_in = p*p*3, fan_out = p*p*W
  limit = np.sqrt(6 / (16 * 16 * 3 + 16 * 16 * 256))
  assert np.abs(conv).max() <= limit and conv.std() > 0.9 * limit / np.sqrt(3)
  qkv = params["encoder"]["encoderblock_0"]["attention"]["query"]["kernel"]
  limit = np.sqrt(6 / (256 + 256))
  assert np.abs(qkv).max() <= limit
  np.testing.assert_allclose(qkv.std(), limit / np.sqrt(3), rtol=0.05)
  assert not params["encoder"]["encoderblock_0"]["mlp"]["fc_in"]["bias"].any()


def test_any_resolution_runs_with_the_same_params():
  m = _tower()
  for size in (16, 40, 64):
    assert m.apply(_variables(), _images(1, size), train=False).shape == (1, 32)


@pytest.mark.parametrize("shape", [(1, 30, 32, 3), (1, 32, 20, 3)])
def test_indivisible_image_size_raises_at_trace_time(shape):
  m = _tower()
  with pytest.raises(ValueError, match=r"not divisible by the patch size 8.*resize"):
    jax.eval_shape(lambda im: m.init(jax.random.key(0), im, train=False),
                   jax.ShapeDtypeStruct(shape, jnp.uint8))


def test_bad_image_rank_raises():
  with pytest.raises(ValueError, match="height, width, 3"):
    _tower().apply(_variables(), jnp.zeros((32, 32, 3), jnp.uint8), train=False)


def test_bf16_runs_and_is_close_to_float32():
  images = _images(2)
  y32 = _tower().apply(_variables(), images, train=False)
  y16 = _tower(dtype=jnp.bfloat16).apply(_variables(), images, train=False)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=0.1, atol=0.1)
