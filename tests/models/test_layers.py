"""Tests for clipa_t5x.models.layers against plain numpy references."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from clipa_t5x.models import layers

B, L, W, HEADS, MLP = 2, 5, 16, 4, 32


def _x(seed=0, shape=(B, L, W)):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


def _np(tree):
  return jax.tree.map(np.asarray, nn.meta.unbox(tree))


def _randomise(params, seed=1):
  """Replaces every leaf (zeros/ones included) by random values."""
  leaves, treedef = jax.tree.flatten(params)
  rs = np.random.RandomState(seed)
  return jax.tree.unflatten(
      treedef, [jnp.asarray(0.3 * rs.randn(*np.shape(x)), jnp.float32) for x in leaves])


def np_layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu)**2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_attention(x, p, heads):
  b, n, w = x.shape
  d = w // heads
  out = np.zeros_like(x, dtype=np.float64)
  for h in range(heads):
    q = x @ p["query"]["kernel"][:, h, :] + p["query"]["bias"][h]
    k = x @ p["key"]["kernel"][:, h, :] + p["key"]["bias"][h]
    v = x @ p["value"]["kernel"][:, h, :] + p["value"]["bias"][h]
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(d)
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    out += (probs @ v) @ p["out"]["kernel"][h]
  return out + p["out"]["bias"]


def np_mlp(x, p):
  h = np_gelu_tanh(x @ p["fc_in"]["kernel"] + p["fc_in"]["bias"])
  return h @ p["fc_out"]["kernel"] + p["fc_out"]["bias"]


def np_block(x, p, heads):
  x = x + np_attention(np_layer_norm(x, p["norm_attn"]), p["attention"], heads)
  return x + np_mlp(np_layer_norm(x, p["norm_mlp"]), p["mlp"])


def test_mlp_matches_numpy_with_tanh_gelu():
  m = layers.MlpBlock(mlp_dim=MLP)
  x = _x()
  params = _randomise(m.init(jax.random.key(0), x)["params"])
  got = m.apply({"params": params}, x)
  np.testing.assert_allclose(got, np_mlp(np.asarray(x, np.float64), _np(params)),
                             rtol=1e-4, atol=1e-4)


def test_attention_matches_numpy_and_has_no_mask():
  m = layers.MultiHeadAttention(heads=HEADS)
  x = _x()
  params = _randomise(m.init(jax.random.key(0), x)["params"])
  got = m.apply({"params": params}, x)
  np.testing.assert_allclose(got, np_attention(np.asarray(x, np.float64), _np(params), HEADS),
                             rtol=1e-4, atol=1e-4)
  # Bidirectional: changing the last token changes the first output.
  x2 = x.at[:, -1].add(1.0)
  assert not np.allclose(m.apply({"params": params}, x2)[:, 0], got[:, 0])


def test_encoder_block_is_pre_ln_and_matches_numpy():
  m = layers.EncoderBlock(heads=HEADS, mlp_dim=MLP)
  x = _x()
  params = _randomise(m.init(jax.random.key(0), x)["params"])
  got = m.apply({"params": params}, x)
  np.testing.assert_allclose(got, np_block(np.asarray(x, np.float64), _np(params), HEADS),
                             rtol=1e-4, atol=1e-4)


def test_encoder_stacks_named_blocks_without_final_norm():
  m = layers.Encoder(depth=3, heads=HEADS, mlp_dim=MLP)
  x = _x()
  params = _randomise(m.init(jax.random.key(0), x)["params"])
  assert sorted(params) == ["encoderblock_0", "encoderblock_1", "encoderblock_2"]
  want = np.asarray(x, np.float64)
  for i in range(3):
    want = np_block(want, _np(params[f"encoderblock_{i}"]), HEADS)
  np.testing.assert_allclose(m.apply({"params": params}, x), want, rtol=1e-4, atol=1e-4)


def test_layer_norm_eps_and_float32_statistics():
  ln = layers.layer_norm(jnp.bfloat16)
  # A large offset with tiny spread: bf16 statistics would lose the signal.
  x = (1000.0 + jnp.arange(8, dtype=jnp.float32) * 0.5)[None]
  params = ln.init(jax.random.key(0), x)["params"]
  assert ln.epsilon == 1e-6
  y = ln.apply({"params": params}, x)
  assert y.dtype == jnp.bfloat16
  want = np_layer_norm(np.asarray(x, np.float64), {"scale": 1.0, "bias": 0.0})
  np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=2e-2)


def test_every_param_is_boxed_with_matching_rank_and_expected_names():
  m = layers.EncoderBlock(heads=HEADS, mlp_dim=MLP)
  variables = m.init(jax.random.key(0), _x())
  leaves = jax.tree.leaves(variables, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(v, nn.LogicallyPartitioned) for v in leaves)
  for v in leaves:
    assert len(v.names) == v.value.ndim
    assert v.value.dtype == jnp.float32
  specs = nn.get_partition_spec(variables)["params"]
  assert specs["attention"]["query"]["kernel"] == P("embed", "heads", "kv")
  assert specs["attention"]["query"]["bias"] == P("heads", "kv")
  assert specs["attention"]["out"]["kernel"] == P("heads", "kv", "embed")
  assert specs["attention"]["out"]["bias"] == P("embed")
  assert specs["mlp"]["fc_in"]["kernel"] == P("embed", "mlp")
  assert specs["mlp"]["fc_in"]["bias"] == P("mlp")
  assert specs["mlp"]["fc_out"]["kernel"] == P("mlp", "embed")
  assert specs["norm_attn"]["scale"] == P("embed")


def test_default_init_is_xavier_uniform_with_zero_biases():
  m = layers.MlpBlock(mlp_dim=256)
  params = _np(m.init(jax.random.key(0), jnp.zeros((1, 1, 128)))["params"])
  kernel = params["fc_in"]["kernel"]
  limit = np.sqrt(6 / (128 + 256))
  assert np.abs(kernel).max() <= limit
  np.testing.assert_allclose(kernel.std(), limit / np.sqrt(3), rtol=0.05)
  assert not params["fc_in"]["bias"].any() and not params["fc_out"]["bias"].any()


@pytest.mark.parametrize("policy", ["full", "dots_saveable"])
def test_remat_keeps_values_gradients_and_param_tree(policy):
  x = _x()
  plain = layers.Encoder(depth=1, heads=HEADS, mlp_dim=MLP)
  remat = layers.Encoder(depth=1, heads=HEADS, mlp_dim=MLP, remat_policy=policy)
  params = _randomise(plain.init(jax.random.key(0), x)["params"])
  assert jax.tree.structure(nn.meta.unbox(remat.init(jax.random.key(0), x))) == (
      jax.tree.structure(nn.meta.unbox(plain.init(jax.random.key(0), x))))

  def loss(mod, p):
    return jnp.sum(mod.apply({"params": p}, x)**2)

  np.testing.assert_allclose(loss(remat, params), loss(plain, params), rtol=1e-5)
  g_plain = jax.jit(jax.grad(lambda p: loss(plain, p)))(params)
  g_remat = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unknown_remat_policy_raises():
  with pytest.raises(ValueError, match="remat_policy"):
    layers.remat_block_class("sometimes")


def test_bf16_compute_keeps_float32_params_and_is_close():
  x = _x()
  m32 = layers.EncoderBlock(heads=HEADS, mlp_dim=MLP)
  m16 = layers.EncoderBlock(heads=HEADS, mlp_dim=MLP, dtype=jnp.bfloat16)
  variables = m16.init(jax.random.key(0), x)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nn.meta.unbox(variables)))
  params = _randomise(variables["params"])
  y16 = m16.apply({"params": params}, x.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), m32.apply({"params": params}, x),
                             rtol=0.05, atol=0.1)


def test_canonical_dtype():
  assert layers.canonical_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError, match="dtype"):
    layers.canonical_dtype("floaty")


def test_init_and_apply_under_a_mesh_with_logical_rules():
  """Constraint names resolve; init (N-D boxed kernels included) works under a mesh."""
  mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = [("batch", "data"), ("heads", "model"), ("mlp", "model"), ("embed", None),
           ("length", None), ("kv", None)]
  m = layers.EncoderBlock(heads=HEADS, mlp_dim=MLP)
  x = _x(shape=(4, L, W))
  plain_init = m.init(jax.random.key(0), x)
  params = _randomise(plain_init["params"])
  want = m.apply({"params": params}, x)
  unboxed = nn.meta.unbox(params)  # outside the mesh: eager unboxing would constrain
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    meshed_init = jax.jit(m.init)(jax.random.key(0), x)
    got_unboxed = jax.jit(lambda p, x: m.apply({"params": p}, x))(unboxed, x)
  for a, b in zip(jax.tree.leaves(meshed_init), jax.tree.leaves(plain_init)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_allclose(got_unboxed, want, rtol=1e-5, atol=1e-5)


def test_dense_general_xavier_fans_use_the_flattened_kernel():
  m = layers.DenseGeneral(features=(8, 32), in_names=("embed",), out_names=("heads", "kv"))
  x = jnp.zeros((1, 256))
  params = _np(m.init(jax.random.key(0), x)["params"])
  kernel = params["kernel"]
  assert kernel.shape == (256, 8, 32)
  limit = np.sqrt(6 / (256 + 8 * 32))  # fan_in = 256, fan_out = heads*kv
  assert np.abs(kernel).max() <= limit
  np.testing.assert_allclose(kernel.std(), limit / np.sqrt(3), rtol=0.05)
  out = layers.DenseGeneral(features=(256,), in_names=("heads", "kv"), out_names=("embed",))
  y = _x(shape=(2, 3, 8, 32))
  p = _randomise(out.init(jax.random.key(0), y)["params"])
  want = np.einsum("blhd,hde->ble", np.asarray(y), np.asarray(nn.meta.unbox(p)["kernel"]))
  np.testing.assert_allclose(out.apply({"params": p}, y), want + np.asarray(nn.meta.unbox(p)["bias"]),
                             rtol=1e-4, atol=1e-4)



def test_dense_general_without_projection_returns_its_float32_params():
  m = layers.DenseGeneral(features=(4, 8), in_names=("embed",), out_names=("heads", "kv"),
                          dtype=jnp.bfloat16)
  x = _x(shape=(2, 3, 16))
  p = _randomise(m.init(jax.random.key(0), x)["params"])
  kernel, bias = m.apply({"params": p}, x, project=False)
  assert kernel.dtype == bias.dtype == jnp.float32
  np.testing.assert_array_equal(kernel, nn.meta.unbox(p)["kernel"])
  np.testing.assert_array_equal(bias, nn.meta.unbox(p)["bias"])


def test_attention_keeps_separate_query_key_value_params():
  m = layers.MultiHeadAttention(heads=HEADS)
  params = _np(m.init(jax.random.key(0), _x())["params"])
  assert set(params) == {"query", "key", "value", "out"}
  for name in ("query", "key", "value"):
    assert params[name]["kernel"].shape == (W, HEADS, W // HEADS)
    assert params[name]["bias"].shape == (HEADS, W // HEADS)

# ------------------------------------------------------- attention_impl ---
def _qkv(b=6, n=7, h=HEADS, d=8, seed=3, dtype=jnp.float32):
  rs = np.random.RandomState(seed)
  q, k, v = (jnp.asarray(rs.randn(b, n, h, d), dtype) for _ in range(3))
  return q * jnp.asarray(d**-0.5, dtype), k, v


def _core_value_and_grads(impl, q, k, v, **kw):
  """Output and d(sum(out * probe))/d(q, k, v) of one attention core."""
  probe = jnp.asarray(np.random.RandomState(9).randn(*q.shape), jnp.float32)
  f = lambda q, k, v: jnp.sum(layers.attention_core(q, k, v, impl, **kw).astype(jnp.float32)
                              * probe)
  out = jax.jit(lambda q, k, v: layers.attention_core(q, k, v, impl, **kw))(q, k, v)
  return out, jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("impl, kw", [
    ("xla", {}),
    ("chunked", {}),              # derived chunk (the whole batch here: one chunk)
    ("chunked", {"chunk_size": 1}),
    ("chunked", {"chunk_size": 2}),
    ("chunked", {"chunk_size": 3}),
    ("dot_product_attention", {}),
    ("auto", {}),
])
def test_every_attention_impl_matches_numpy_forward_and_gradients(impl, kw):
  q, k, v = _qkv()
  qn, kn, vn = (np.asarray(t, np.float64) for t in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", qn, kn)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = np.einsum("bhqk,bkhd->bqhd", p, vn)
  out, grads = _core_value_and_grads(impl, q, k, v, **kw)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  _, ref_grads = _core_value_and_grads("xla", q, k, v)
  for got, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
def test_cudnn_attention_matches_xla_in_bf16():
  q, k, v = _qkv(b=4, n=197, h=4, d=64, dtype=jnp.bfloat16)
  out, grads = _core_value_and_grads("cudnn", q, k, v)
  ref, ref_grads = _core_value_and_grads("xla", q, k, v)
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                             atol=2e-2)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=5e-2)


def test_attention_impls_agree_in_bf16():
  q, k, v = _qkv(dtype=jnp.bfloat16)
  ref, ref_grads = _core_value_and_grads("xla", q, k, v)
  for impl, kw in (("chunked", {"chunk_size": 2}), ("dot_product_attention", {})):
    out, grads = _core_value_and_grads(impl, q, k, v, **kw)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               atol=2e-2)
    for got, want in zip(grads, ref_grads):
      np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                 atol=5e-2)


def test_auto_attention_resolves_per_platform():
  assert layers.resolve_attention_impl("auto", "cpu") == "chunked"
  assert layers.resolve_attention_impl("auto", "gpu") == "dot_product_attention"
  assert layers.resolve_attention_impl("auto", "cuda") == "dot_product_attention"
  assert layers.resolve_attention_impl("auto", "tpu") == "xla"
  assert layers.resolve_attention_impl("chunked", "gpu") == "chunked"
  assert layers.resolve_attention_impl("auto") == layers.resolve_attention_impl(
      "auto", jax.default_backend())
  with pytest.raises(ValueError, match="attention_impl.*flash"):
    layers.resolve_attention_impl("flash")


def test_attention_chunk_size_divides_the_batch_within_the_budget():
  # Mu/8 image tower: 197 tokens, 4 heads: 621 KB of float32 logits a sample.
  c = layers.attention_chunk_size(128, 4, 197, 197)
  assert 128 % c == 0 and 4 * 4 * 197 * 197 * c <= layers.ATTENTION_CHUNK_BYTES
  assert 4 * 4 * 197 * 197 * 2 * c > layers.ATTENTION_CHUNK_BYTES  # the largest such
  assert layers.attention_chunk_size(128, 4, 32, 32) == 128   # short text: one chunk
  assert layers.attention_chunk_size(7, 4, 197, 197) in (1, 7)  # a prime batch
  assert layers.attention_chunk_size(2, 64, 1024, 1024) == 1
  with pytest.raises(ValueError, match="does not divide"):
    layers.attention_core(*_qkv(b=6), "chunked", chunk_size=4)


@pytest.mark.parametrize("impl", ["chunked", "dot_product_attention"])
@pytest.mark.slow
def test_encoder_with_each_attention_impl_matches_xla(impl):
  x = _x(shape=(6, L, W))
  ref = layers.Encoder(depth=2, heads=HEADS, mlp_dim=MLP, attention_impl="xla")
  other = layers.Encoder(depth=2, heads=HEADS, mlp_dim=MLP, attention_impl=impl,
                         remat_policy="full")
  params = _randomise(ref.init(jax.random.key(0), x)["params"])
  assert jax.tree.structure(nn.meta.unbox(other.init(jax.random.key(0), x))) == (
      jax.tree.structure(nn.meta.unbox(ref.init(jax.random.key(0), x))))

  def loss(mod, p):
    return jnp.sum(mod.apply({"params": p}, x)**2)

  np.testing.assert_allclose(loss(other, params), loss(ref, params), rtol=1e-5)
  g_ref = jax.jit(jax.grad(lambda p: loss(ref, p)))(params)
  g_other = jax.jit(jax.grad(lambda p: loss(other, p)))(params)
  for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_other)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_chunked_attention_under_a_mesh_matches(monkeypatch):
  """The chunk axis is walked in order; the batch inside a chunk stays sharded."""
  monkeypatch.setattr(layers, "ATTENTION_CHUNK_BYTES", 4 * HEADS * L * L * 2)  # 4 chunks of 2
  mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = [("batch", "data"), ("heads", "model"), ("mlp", "model"), ("embed", None),
           ("length", None), ("kv", None)]
  m = layers.MultiHeadAttention(heads=HEADS, attention_impl="chunked")
  x = _x(shape=(8, L, W))
  params = nn.meta.unbox(_randomise(m.init(jax.random.key(0), x)["params"]))
  want = layers.MultiHeadAttention(heads=HEADS, attention_impl="xla").apply(
      {"params": params}, x)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    got = jax.jit(lambda p, x: m.apply({"params": p}, x))(params, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------ opt-in fused kernels ---
@pytest.mark.parametrize("dtype,atol", [(jnp.float32, 2e-4), (jnp.bfloat16, 8e-2)])
@pytest.mark.parametrize("options", [{"norm_impl": "pallas"}, {"mlp_impl": "fused_gelu"},
                                     {"norm_impl": "pallas", "mlp_impl": "fused_gelu"}])
@pytest.mark.slow
def test_fused_kernel_options_match_the_xla_block(options, dtype, atol):
  """Same parameters, same output and gradients (to the dtype's rounding)."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 48)).astype(dtype)
  make = lambda **kw: layers.EncoderBlock(heads=4, mlp_dim=96, dtype=dtype,
                                          attention_impl="xla", **kw)
  ref, fused = make(norm_impl="xla", mlp_impl="xla"), make(**options)
  params = ref.init(jax.random.key(1), x)
  fused_params = fused.init(jax.random.key(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(fused_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(fused_params)):
    np.testing.assert_array_equal(a, b)
  g = jax.random.normal(jax.random.key(2), x.shape)
  loss = lambda m: (lambda p, x: jnp.sum(m.apply(p, x).astype(jnp.float32) * g))
  f32 = lambda t: np.asarray(t, np.float32)
  np.testing.assert_allclose(f32(fused.apply(params, x)), f32(ref.apply(params, x)),
                             atol=atol, rtol=atol)
  got = jax.grad(loss(fused), argnums=(0, 1))(params, x)
  want = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    size = max(1.0, float(np.max(np.abs(f32(b)))))
    np.testing.assert_allclose(f32(a), f32(b), atol=atol * size, rtol=atol)


def test_auto_kernel_options_follow_the_platform_table(monkeypatch):
  from clipa_t5x import xla_flags
  monkeypatch.setitem(xla_flags.MODEL_DEFAULTS, "gpu", {"norm_impl": "pallas"})
  assert layers.resolve_kernel_option("norm_impl", "auto", backend="gpu") == "pallas"
  assert layers.resolve_kernel_option("mlp_impl", "auto", backend="gpu") == "xla"
  assert layers.resolve_kernel_option("norm_impl", "auto", backend="cpu") == "xla"
  assert layers.resolve_kernel_option("norm_impl", "xla", backend="gpu") == "xla"
  monkeypatch.setenv(xla_flags.DISABLE_ENV, "0")
  assert layers.resolve_kernel_option("norm_impl", "auto", backend="gpu") == "xla"
  with pytest.raises(ValueError, match="Unknown norm_impl 'triton'"):
    layers.resolve_kernel_option("norm_impl", "triton")
