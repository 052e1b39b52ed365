"""Tests for clipa_t5x.models.clip: TwoTower and the ClipaModel wrapper."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from clipa_t5x.losses import INIT_LOG_TEMPERATURE, softmax_contrastive_loss
from clipa_t5x.models import clip, configs

BIG = ["S/16", "B/16", "L/14", "H/14", "bigG/14"]
LOW_RES = {"S/16": 64, "B/16": 64, "L/14": 70, "H/14": 70, "bigG/14": 70, "Ti/8": 64, "Mu/8": 64}
# open_clip docs/model_profile.csv, in millions.
OPEN_CLIP_PARAMS = {"L/14": 414.2, "H/14": 968.2, "bigG/14": 2517.2}


@functools.lru_cache(maxsize=None)
def _abstract(name, image_size=224, text_length=32):
  """Shapes of the boxed initial variables, never materialised."""
  return _abstract_variables(clip.make_model(name), image_size, text_length)


def _abstract_variables(model, image_size, text_length):
  return jax.eval_shape(
      functools.partial(model.get_initial_variables, image_size=image_size,
                        text_length=text_length), jax.random.key(0))


def _is_box(x):
  return isinstance(x, nn.LogicallyPartitioned)


# Tracing the 24- to 48-block towers takes 5-20 s of CPU each: the full suite traces them.
_SLOW_TRACE = ("L/14", "H/14", "bigG/14")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_TRACE else n
    for n in sorted(configs.VARIANTS)])
def test_feature_shapes_of_every_variant(name):
  model = clip.make_model(name)
  embed = model.config.embed_dim
  params = nn.meta.unbox(_abstract(name))["params"]
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.uint8)
  tokens = jax.ShapeDtypeStruct((2, 32), jnp.int32)
  zimg, ztxt, t = jax.eval_shape(
      lambda p, i, x: model.module.apply({"params": p}, i, x, train=False), params, images,
      tokens)
  assert zimg.shape == (2, embed) and ztxt.shape == (2, embed) and t.shape == ()
  assert zimg.dtype == ztxt.dtype == jnp.float32
  # Same parameters at the low pre-training resolution (sin-cos needs no resize).
  low = LOW_RES[name]
  zlow = jax.eval_shape(lambda p, i: model.encode_images(p, i), params,
                        jax.ShapeDtypeStruct((2, low, low, 3), jnp.uint8))
  assert zlow.shape == (2, embed)
  # Pre-training text length 8 (pos_embedding initialised at length 8).
  params8 = nn.meta.unbox(_abstract_variables(model, low, 8))["params"]
  assert params8["txt"]["pos_embedding"].shape == (1, 8, model.config.text.width)
  z8 = jax.eval_shape(lambda p, x: model.encode_texts(p, x), params8,
                      jax.ShapeDtypeStruct((2, 8), jnp.int32))
  assert z8.shape == (2, embed)


def _count(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(variables)))


@pytest.mark.parametrize("name", BIG)
def test_parameter_counts(name):
  n = _count(_abstract(name)) / 1e6
  print(f"{name}: {n:.2f}M parameters")
  if name in OPEN_CLIP_PARAMS:
    # open_clip also stores a learned image pos-emb; we recompute sin-cos.
    assert abs(n - OPEN_CLIP_PARAMS[name]) / OPEN_CLIP_PARAMS[name] < 0.01


def test_parameter_count_formula_for_ti8():
  """Independent count for a tiny model: every tensor written out by hand."""
  c = configs.get_config("Ti/8")
  def blocks(t):
    w, m = t.width, t.mlp_dim
    per = 4 * (w * w + w) + (w * m + m) + (m * w + w) + 4 * w
    return t.depth * per
  img = (8 * 8 * 3 * 64) + 64 + blocks(c.image) + 2 * 64 + 64 * c.embed_dim
  txt = 32000 * 64 + 32 * 64 + blocks(c.text) + 2 * 64 + 64 * c.embed_dim
  assert _count(_abstract("Ti/8")) == img + txt + 1


@pytest.mark.parametrize("name", ["Ti/8", "H/14"])
def test_every_leaf_is_logically_partitioned_with_right_rank(name):
  variables = _abstract(name)
  leaves = jax.tree.leaves(variables, is_leaf=_is_box)
  assert len(leaves) > 10
  allowed = {None, "embed", "mlp", "heads", "kv", "vocab", "proj", "length"}
  for leaf in leaves:
    assert _is_box(leaf), leaf
    assert len(leaf.names) == len(leaf.value.shape)
    assert set(leaf.names) <= allowed
    assert leaf.value.dtype == jnp.float32
  specs = nn.get_partition_spec(variables)["params"]
  assert specs["log_temperature"] == P()
  assert specs["img"]["cls"] == P(None, None, "embed")
  assert specs["img"]["embedding"]["kernel"] == P(None, None, None, "embed")
  assert specs["img"]["head"]["kernel"] == P("embed", "proj")
  assert specs["txt"]["head"]["kernel"] == P("embed", "proj")


# ------------------------------------------------------------------- Ti/8 numerics


@functools.lru_cache(maxsize=None)
def _ti_variables():
  return clip.make_model("Ti/8").get_initial_variables(jax.random.key(0), 32, 8)


def _ti(dtype="float32", **kw):
  """A Ti/8 model and the (shared) variables: params do not depend on dtype/mask/remat."""
  return clip.make_model("Ti/8", dtype=dtype, **kw), _ti_variables()


def _batch(batch=4, seed=0):
  rs = np.random.RandomState(seed)
  text = rs.randint(1000, 30000, (batch, 8))
  text[:, 0] = 101
  text[:, 5:] = 0
  return {"image": jnp.asarray(rs.randint(0, 256, (batch, 32, 32, 3)), jnp.uint8),
          "text": jnp.asarray(text, jnp.int32)}


def test_initial_variables_and_temperature():
  model, variables = _ti()
  assert set(variables) == {"params"}
  params = nn.meta.unbox(variables)["params"]
  assert set(params) == {"img", "txt", "log_temperature"}
  np.testing.assert_allclose(params["log_temperature"], INIT_LOG_TEMPERATURE, rtol=1e-6)
  assert params["txt"]["pos_embedding"].shape == (1, 8, 64)


@pytest.mark.slow
def test_loss_fn_is_finite_and_matches_the_loss_of_encoded_features():
  model, variables = _ti()
  params = nn.meta.unbox(variables)["params"]
  batch = _batch()
  loss, metrics = jax.jit(model.loss_fn)(params, batch, jax.random.key(1))
  assert np.isfinite(loss) and loss > 0
  assert set(metrics) >= {"loss", "temperature", "i2t_accuracy", "t2i_accuracy"}
  zimg = model.encode_images(params, batch["image"])
  ztxt = model.encode_texts(params, batch["text"])
  want, _ = softmax_contrastive_loss(zimg, ztxt, params["log_temperature"])
  np.testing.assert_allclose(loss, want, rtol=1e-5)  # mask_ratio 0: train == eval
  np.testing.assert_allclose(model.eval_fn(params, batch)[0], want, rtol=1e-5)


@pytest.mark.slow
def test_gradients_are_finite_and_reach_every_parameter():
  model, variables = _ti()
  params = nn.meta.unbox(variables)["params"]
  grads = jax.jit(jax.grad(lambda p: model.loss_fn(p, _batch(), jax.random.key(1))[0]))(params)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  for path, g in flat:
    assert np.all(np.isfinite(g)), path
    name = jax.tree_util.keystr(path)
    if "embedding']['embedding" in name:
      continue  # only rows of the ids in the batch get gradient
    assert np.any(g != 0), name


def test_encoders_return_unit_norm_features():
  model, variables = _ti()
  params = nn.meta.unbox(variables)["params"]
  batch = _batch()
  for z in (model.encode_images(params, batch["image"]), model.encode_texts(params, batch["text"])):
    assert z.shape == (4, 64) and z.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)


def test_masked_training_changes_loss_per_rng_and_only_with_an_rng():
  model, variables = _ti()
  params = nn.meta.unbox(variables)["params"]  # masking adds no params
  batch = _batch()
  l1 = model.loss_fn(params, batch, jax.random.key(1), mask_ratio=0.5)[0]
  l1b = model.loss_fn(params, batch, jax.random.key(1), mask_ratio=0.5)[0]
  l2 = model.loss_fn(params, batch, jax.random.key(2), mask_ratio=0.5)[0]
  l0 = model.loss_fn(params, batch, jax.random.key(1))[0]
  lg = model.loss_fn(params, _batch(), jax.random.key(1), mask_ratio=0.75, mask_type="grid")[0]
  assert np.isfinite(l1) and l1 == l1b and l1 != l2 and l1 != l0 and np.isfinite(lg)
  np.testing.assert_allclose(model.loss_fn(params, batch, None, mask_ratio=0.5)[0], l0, rtol=1e-6)


def test_bf16_model_runs():
  model, variables = _ti("bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.meta.unbox(
      jax.eval_shape(functools.partial(model.get_initial_variables, image_size=32,
                                       text_length=8), jax.random.key(0)))))
  params = nn.meta.unbox(variables)["params"]
  loss, _ = jax.jit(model.loss_fn)(params, _batch(), jax.random.key(1))
  assert np.isfinite(loss)
  z = model.encode_images(params, _batch()["image"])
  assert z.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-3)
  model32, _ = _ti()
  np.testing.assert_allclose(loss, model32.loss_fn(params, _batch(), jax.random.key(1))[0],
                             rtol=0.05)


def test_remat_policy_is_plumbed_and_keeps_the_loss():
  """Gradients under remat are compared in test_layers; here only the wiring."""
  model, variables = _ti()
  remat = clip.make_model("Ti/8", remat_policy="dots_saveable")
  params = nn.meta.unbox(variables)["params"]
  assert jax.tree.structure(nn.meta.unbox(_abstract("Ti/8"))) == jax.tree.structure(
      nn.meta.unbox(_abstract_variables(remat, 224, 32)))
  np.testing.assert_allclose(remat.loss_fn(params, _batch(), None)[0],
                             model.loss_fn(params, _batch(), None)[0], rtol=1e-6)


def test_sharded_loss_on_a_4_device_mesh_matches():
  """Params sharded by their logical names, batch over 'data': same loss."""
  model, variables = _ti()
  params = nn.meta.unbox(variables)["params"]
  batch = _batch()
  want = model.loss_fn(params, batch, None)[0]
  mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = [("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
           ("kv", None), ("embed", None), ("proj", None), ("length", None)]
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(variables), mesh, rules)["params"]
  params = jax.device_put(params, shardings)
  batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    got = jax.jit(model.loss_fn)(params, batch, None)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bad_inputs_raise():
  model, variables = _ti()
  params = nn.meta.unbox(variables)["params"]
  with pytest.raises(ValueError, match="'text'"):
    model.loss_fn(params, {"image": _batch()["image"]}, None)
  with pytest.raises(ValueError, match="ClipaConfig"):
    clip.ClipaModel("Ti/8")
  with pytest.raises(ValueError, match="(?i)text length 32 differs"):
    model.encode_texts(params, jnp.zeros((1, 32), jnp.int32))


@pytest.mark.parametrize("impl", ["xla", "chunked", "dot_product_attention"])
@pytest.mark.slow
def test_attention_impl_is_plumbed_and_keeps_loss_and_gradients(impl):
  """Both towers take the config's attention_impl; params do not depend on it."""
  _, variables = _ti()
  model = clip.make_model("Ti/8", attention_impl="xla")
  other = clip.make_model("Ti/8", attention_impl=impl)
  params = nn.meta.unbox(variables)["params"]
  assert jax.tree.structure(nn.meta.unbox(_abstract("Ti/8"))) == jax.tree.structure(
      nn.meta.unbox(_abstract_variables(other, 224, 32)))
  loss = lambda m: jax.jit(jax.value_and_grad(
      lambda p: m.loss_fn(p, _batch(), jax.random.key(1))[0]))(params)
  (want, g_want), (got, g_got) = loss(model), loss(other)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_want), jax.tree.leaves(g_got)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_make_model_builds_wrapper():
  model = clip.make_model("Ti/8", dtype="bfloat16")
  assert isinstance(model, clip.ClipaModel)
  assert model.config == configs.get_config("Ti/8", dtype="bfloat16")
  assert model.module.config is model.config


# ------------------------------------------------------------- sigmoid loss


def _sigmoid_ti(**kw):
  model = clip.make_model("Ti/8", loss="sigmoid", **kw)
  return model, model.get_initial_variables(jax.random.key(0), 32, 8)


def test_sigmoid_model_has_a_logit_bias_with_siglip_initial_values():
  model, variables = _sigmoid_ti()
  params = nn.meta.unbox(variables)["params"]
  assert set(params) == {"img", "txt", "log_temperature", "logit_bias"}
  np.testing.assert_allclose(params["log_temperature"], np.log(10.0), rtol=1e-6)
  np.testing.assert_allclose(params["logit_bias"], -10.0)
  # A scalar with no logical axes, partitioned (replicated) like the temperature.
  specs = nn.get_partition_spec(variables)["params"]
  assert specs["logit_bias"] == specs["log_temperature"] == P()
  loss, metrics = jax.jit(model.loss_fn)(params, _batch(), None)
  assert np.isfinite(loss)
  assert float(metrics["logit_bias"]) == -10.0 and float(metrics["temperature"]) == \
      pytest.approx(10.0)


def test_sigmoid_initial_values_are_settable():
  _, variables = _sigmoid_ti(init_log_temperature=1.5, init_logit_bias=-3.0)
  params = nn.meta.unbox(variables)["params"]
  np.testing.assert_allclose(params["log_temperature"], 1.5)
  np.testing.assert_allclose(params["logit_bias"], -3.0)


def test_softmax_params_do_not_fit_a_sigmoid_model():
  model, _ = _sigmoid_ti()
  softmax_params = nn.meta.unbox(_ti_variables())["params"]
  with pytest.raises(ValueError, match="lack \\['logit_bias'\\]"):
    model.loss_fn(softmax_params, _batch(), None)


def test_unknown_loss_is_refused_in_the_config():
  with pytest.raises(ValueError, match="ClipaConfig.loss='hinge'"):
    configs.get_config("Ti/8", loss="hinge")
