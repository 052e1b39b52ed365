"""Tests of clipa_t5x.losses against an independent float64 numpy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipa_t5x import losses
from clipa_t5x.partitioning import PjitPartitioner
from jax.sharding import NamedSharding, PartitionSpec as P


def _logsumexp(values: np.ndarray) -> float:
  top = max(values)
  return top + math.log(sum(math.exp(v - top) for v in values))


def reference_loss(img: np.ndarray, txt: np.ndarray, log_t: float):
  """Loss and metrics with explicit loops in float64 (row i pairs with i)."""
  img = np.asarray(img, np.float64)
  txt = np.asarray(txt, np.float64)
  b = img.shape[0]
  scale = math.exp(log_t)
  logits = [[scale * float(np.dot(img[i], txt[j])) for j in range(b)] for i in range(b)]
  nll_i2t = [_logsumexp(logits[i]) - logits[i][i] for i in range(b)]
  nll_t2i = [_logsumexp([logits[i][j] for i in range(b)]) - logits[j][j] for j in range(b)]
  i2t_hits = sum(int(np.argmax(logits[i]) == i) for i in range(b))
  t2i_hits = sum(int(np.argmax([logits[i][j] for i in range(b)]) == j) for j in range(b))
  return {
      "loss": 0.5 * (sum(nll_i2t) / b + sum(nll_t2i) / b),
      "temperature": scale,
      "i2t_accuracy": i2t_hits / b,
      "t2i_accuracy": t2i_hits / b,
  }


def _unit_rows(rng: np.random.RandomState, b: int, d: int) -> np.ndarray:
  x = rng.randn(b, d)
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _check_against_reference(img, txt, log_t, rtol=1e-5):
  loss, metrics = losses.softmax_contrastive_loss(
      jnp.asarray(img), jnp.asarray(txt), jnp.asarray(log_t, jnp.float32))
  ref = reference_loss(img, txt, log_t)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(float(loss), ref["loss"], rtol=rtol, atol=1e-7)
  assert set(metrics) == set(ref)
  for name, value in ref.items():
    np.testing.assert_allclose(float(metrics[name]), value, rtol=rtol, err_msg=name)
  return ref


def test_matches_reference_on_random_features():
  rng = np.random.RandomState(0)
  img, txt = _unit_rows(rng, 8, 16), _unit_rows(rng, 8, 16)
  _check_against_reference(img, txt, losses.INIT_LOG_TEMPERATURE)


def test_correlated_pairs_give_low_loss_and_full_accuracy():
  rng = np.random.RandomState(1)
  img = _unit_rows(rng, 6, 32)
  noisy = img + 0.05 * rng.randn(6, 32).astype(np.float32)
  txt = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
  ref = _check_against_reference(img, txt, math.log(10.0))
  assert ref["i2t_accuracy"] == ref["t2i_accuracy"] == 1.0
  assert ref["loss"] < 0.1


def test_non_identity_pairing():
  """Texts that match the *next* image: the diagonal is wrong, the loss is high."""
  rng = np.random.RandomState(2)
  img = _unit_rows(rng, 5, 64)
  txt = np.roll(img, 1, axis=0)  # text i equals image i-1
  ref = _check_against_reference(img, txt, math.log(20.0))
  assert ref["i2t_accuracy"] == ref["t2i_accuracy"] == 0.0
  assert ref["loss"] > math.log(5)  # worse than chance
  # Permuting the pairs jointly keeps the loss: only the pairing matters.
  perm = np.array([3, 0, 4, 1, 2])
  base, _ = losses.softmax_contrastive_loss(jnp.asarray(img), jnp.asarray(txt), jnp.float32(3.0))
  permuted, _ = losses.softmax_contrastive_loss(
      jnp.asarray(img[perm]), jnp.asarray(txt[perm]), jnp.float32(3.0))
  np.testing.assert_allclose(float(base), float(permuted), rtol=1e-6)


@pytest.mark.parametrize("log_t", [0.0, math.log(2.0), losses.INIT_LOG_TEMPERATURE, 4.6])
def test_temperature_scaling(log_t):
  rng = np.random.RandomState(3)
  img, txt = _unit_rows(rng, 4, 8), _unit_rows(rng, 4, 8)
  ref = _check_against_reference(img, txt, log_t)
  assert ref["temperature"] == pytest.approx(math.exp(log_t))


def test_init_log_temperature_is_log_one_over_0_07():
  assert losses.INIT_LOG_TEMPERATURE == pytest.approx(math.log(1 / 0.07), abs=1e-12)


def test_asymmetric_accuracies():
  """Image 1 prefers text 0, but every text prefers its own image."""
  txt = np.eye(3, dtype=np.float32)
  img = np.array([[1.0, 0.0, 0.0], [0.9, 0.5, 0.0], [0.0, 0.0, 1.0]], np.float32)
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  ref = _check_against_reference(img, txt, 1.0)
  assert ref["i2t_accuracy"] == pytest.approx(2 / 3)
  assert ref["t2i_accuracy"] == 1.0


def test_bfloat16_features_are_computed_in_float32():
  rng = np.random.RandomState(4)
  img, txt = _unit_rows(rng, 4, 8), _unit_rows(rng, 4, 8)
  loss, _ = losses.softmax_contrastive_loss(
      jnp.asarray(img, jnp.bfloat16), jnp.asarray(txt, jnp.bfloat16), jnp.float32(2.0))
  assert loss.dtype == jnp.float32
  rounded_img = np.asarray(jnp.asarray(img, jnp.bfloat16).astype(jnp.float32))
  rounded_txt = np.asarray(jnp.asarray(txt, jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(float(loss), reference_loss(rounded_img, rounded_txt, 2.0)["loss"],
                             rtol=1e-5)


def test_l2_normalize():
  x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 1.0]], np.float32)
  y = np.asarray(losses.l2_normalize(jnp.asarray(x)))
  np.testing.assert_allclose(y[0], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_array_equal(y[1], [0.0, 0.0])  # eps keeps the zero row finite
  np.testing.assert_allclose(y[2], [-1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-6)
  columns = np.asarray(losses.l2_normalize(jnp.asarray(x[[0, 2]]), axis=0))
  np.testing.assert_allclose(np.linalg.norm(columns, axis=0), [1.0, 1.0], rtol=1e-6)


def _loss_only(img, txt, log_t):
  return losses.softmax_contrastive_loss(img, txt, log_t)


def test_same_loss_on_a_2x2_mesh_as_on_one_device():
  rng = np.random.RandomState(5)
  img, txt = _unit_rows(rng, 16, 32), _unit_rows(rng, 16, 32)
  log_t = jnp.float32(losses.INIT_LOG_TEMPERATURE)
  single_loss, single_metrics = jax.jit(_loss_only)(jnp.asarray(img), jnp.asarray(txt), log_t)

  partitioner = PjitPartitioner(num_partitions=2)
  assert dict(partitioner.mesh.shape) == {"data": 2, "model": 2}
  batch = partitioner.shard_batch({"image": img, "text": txt})
  assert batch["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  step = partitioner.partition(
      _loss_only,
      in_axis_resources=(partitioner.data_sharding, partitioner.data_sharding,
                         partitioner.replicated),
      out_axis_resources=partitioner.replicated)
  mesh_loss, mesh_metrics = step(batch["image"], batch["text"], log_t)
  np.testing.assert_allclose(float(mesh_loss), float(single_loss), rtol=1e-6)
  for name in single_metrics:
    np.testing.assert_allclose(float(mesh_metrics[name]), float(single_metrics[name]),
                               rtol=1e-6, err_msg=name)
  np.testing.assert_allclose(float(mesh_loss), reference_loss(img, txt, float(log_t))["loss"],
                             rtol=1e-5)


def test_docstring_memory_arithmetic():
  batch, n_data = 65_536, 256
  assert 4 * batch**2 == 16 * 2**30
  assert 4 * batch**2 // n_data == 64 * 2**20


def test_logits_memory_per_device_shrinks_with_the_data_axis():
  """Measures XLA's per-device temporaries: the [B, B] logits split over ``data``.

  The claim checked is the docstring's scaling, ``4·B²/n_data`` bytes of
  logits per device: with 4-way data parallelism, each device's temporaries
  are a quarter of the single-device ones, smaller than one full [B, B]
  float32 buffer (so no device materialises the whole logits), yet at least
  one row shard of it.
  """
  batch, dim = 512, 16
  rng = np.random.RandomState(6)
  img, txt = _unit_rows(rng, batch, dim), _unit_rows(rng, batch, dim)
  log_t = jnp.float32(2.0)
  full_logits_bytes = 4 * batch * batch

  def temp_bytes(partitioner):
    arrays = partitioner.shard_batch({"i": img, "t": txt})
    with partitioner.context():
      compiled = jax.jit(
          lambda a, b, t: losses.softmax_contrastive_loss(a, b, t)[0],
          in_shardings=(partitioner.data_sharding, partitioner.data_sharding,
                        partitioner.replicated)).lower(arrays["i"], arrays["t"], log_t).compile()
    stats = compiled.memory_analysis()
    if stats is None or not hasattr(stats, "temp_size_in_bytes"):
      pytest.skip("memory_analysis() is not available on this backend")
    return stats.temp_size_in_bytes

  single = temp_bytes(PjitPartitioner(num_partitions=1, devices=jax.devices()[:1]))
  sharded_partitioner = PjitPartitioner(num_partitions=1)
  n_data = sharded_partitioner.data_parallel_size
  assert n_data == 4
  sharded = temp_bytes(sharded_partitioner)
  print(f"per-device temp bytes: 1 device {single}, {n_data}-way data {sharded}; "
        f"full logits {full_logits_bytes}")
  assert single >= full_logits_bytes
  assert full_logits_bytes / n_data <= sharded < full_logits_bytes
  assert sharded * n_data <= 1.1 * single


# ------------------------------------------------------------------ sigmoid


def sigmoid_reference(img, txt, log_t, bias):
  """SigLIP's loss and its gradients in float64 numpy, written from the formula.

  z_ij = e^t <x_i, y_j> + b, l_ij = +1 on the diagonal, -1 elsewhere,
  L = sum_ij log(1 + exp(-l_ij z_ij)) / B.
  """
  img, txt = np.asarray(img, np.float64), np.asarray(txt, np.float64)
  b = img.shape[0]
  scale = math.exp(log_t)
  z = scale * img @ txt.T + bias
  labels = 2 * np.eye(b) - 1
  loss = np.logaddexp(0.0, -labels * z).sum() / b
  dz = -labels / (1.0 + np.exp(labels * z)) / b  # dL/dz_ij
  return {
      "loss": loss,
      "d_img": scale * dz @ txt,
      "d_txt": scale * dz.T @ img,
      "d_log_t": float(np.sum(dz * (z - bias))),
      "d_bias": float(np.sum(dz)),
      "i2t_accuracy": np.mean([z[i, i] > np.max(np.delete(z[i], i)) for i in range(b)]),
      "t2i_accuracy": np.mean([z[j, j] > np.max(np.delete(z[:, j], j)) for j in range(b)]),
  }


def _sigmoid_value_and_grads(img, txt, log_t, bias):
  def loss_fn(*args):
    return losses.sigmoid_contrastive_loss(*args)
  return jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3), has_aux=True)(
      img, txt, jnp.float32(log_t), jnp.float32(bias))


def _assert_matches_sigmoid_reference(out, ref, atol=1e-5):
  (loss, metrics), (g_img, g_txt, g_t, g_b) = out
  np.testing.assert_allclose(float(loss), ref["loss"], rtol=1e-5, atol=atol)
  np.testing.assert_allclose(np.asarray(g_img), ref["d_img"], atol=atol)
  np.testing.assert_allclose(np.asarray(g_txt), ref["d_txt"], atol=atol)
  np.testing.assert_allclose(float(g_t), ref["d_log_t"], rtol=1e-5, atol=atol)
  np.testing.assert_allclose(float(g_b), ref["d_bias"], rtol=1e-5, atol=atol)
  assert float(metrics["i2t_accuracy"]) == pytest.approx(ref["i2t_accuracy"])
  assert float(metrics["t2i_accuracy"]) == pytest.approx(ref["t2i_accuracy"])


def _paired_features(seed=0, b=16, d=12, noise=1.0):
  rng = np.random.RandomState(seed)
  img = _unit_rows(rng, b, d)
  txt = img + noise * _unit_rows(rng, b, d)  # partly aligned: accuracies between 0 and 1
  return img, (txt / np.linalg.norm(txt, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("log_t, bias", [(math.log(10.0), -10.0), (2.0, 0.5)])
def test_sigmoid_matches_reference_on_one_device(log_t, bias):
  img, txt = _paired_features()
  ref = sigmoid_reference(img, txt, log_t, bias)
  _assert_matches_sigmoid_reference(_sigmoid_value_and_grads(img, txt, log_t, bias), ref)
  assert 0 < ref["i2t_accuracy"] < 1  # the accuracy checks are not trivial


def test_sigmoid_init_values_are_siglips():
  assert losses.SIGMOID_INIT_LOG_TEMPERATURE == pytest.approx(math.log(10.0))
  assert losses.SIGMOID_INIT_LOGIT_BIAS == -10.0
  assert losses.default_init_log_temperature("sigmoid") == pytest.approx(math.log(10.0))
  assert losses.default_init_log_temperature("softmax") == losses.INIT_LOG_TEMPERATURE


def _ring_mesh(n):
  return PjitPartitioner(num_partitions=1, devices=jax.devices()[:n]).mesh


@pytest.mark.parametrize("n_devices", [1, 2, 4])
def test_sigmoid_ring_equals_the_dense_reference(n_devices):
  img, txt = _paired_features(seed=n_devices)
  log_t, bias = 1.7, -2.0
  ref = sigmoid_reference(img, txt, log_t, bias)
  mesh = _ring_mesh(n_devices)
  sharded = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    out = jax.jit(_sigmoid_value_and_grads)(jax.device_put(img, sharded),
                                            jax.device_put(txt, sharded), log_t, bias)
  _assert_matches_sigmoid_reference(out, ref)


def test_sigmoid_ring_never_builds_the_global_matrix():
  """With 4 devices each holds [4, 4] blocks of a 16-row batch: no [16, 16] or [4, 16] buffer."""
  img, txt = _paired_features(b=16, d=12)
  mesh = _ring_mesh(4)
  sharded = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    lowered = jax.jit(_sigmoid_value_and_grads).lower(
        jax.device_put(img, sharded), jax.device_put(txt, sharded), 1.0, 0.0)
    hlo = lowered.compile().as_text()
  assert "collective-permute" in hlo  # the captions travel round the ring
  assert "f32[4,4]" in hlo
  for shape in ("[16,16]", "[4,16]", "[16,4]", "[16,12]"):
    assert shape not in hlo, shape


def test_sigmoid_on_a_data_and_model_mesh():
  """A 2x2 (data, model) mesh: the ring runs over 'data' only, same values."""
  img, txt = _paired_features(seed=5, b=8)
  ref = sigmoid_reference(img, txt, 0.3, -1.0)
  partitioner = PjitPartitioner(num_partitions=2)
  with partitioner.context():
    out = jax.jit(_sigmoid_value_and_grads)(
        jax.device_put(img, partitioner.data_sharding),
        jax.device_put(txt, partitioner.data_sharding), 0.3, -1.0)
  _assert_matches_sigmoid_reference(out, ref)


def test_sigmoid_batch_must_divide_over_the_ring():
  mesh = _ring_mesh(4)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match="not divisible by the 4 devices"):
    jax.jit(losses.sigmoid_contrastive_loss).trace(
        jnp.zeros((6, 4)), jnp.zeros((6, 4)), 0.0, 0.0)


def test_contrastive_loss_dispatch_and_errors():
  img, txt = _paired_features(b=4, d=6)
  scalars = {"log_temperature": jnp.float32(1.0), "logit_bias": jnp.float32(-1.0)}
  got, _ = losses.contrastive_loss("sigmoid", img, txt, scalars)
  assert float(got) == pytest.approx(sigmoid_reference(img, txt, 1.0, -1.0)["loss"], rel=1e-5)
  got, _ = losses.contrastive_loss("softmax", img, txt, scalars)
  assert float(got) == pytest.approx(reference_loss(img, txt, 1.0)["loss"], rel=1e-5)
  with pytest.raises(ValueError, match="needs parameter"):
    losses.contrastive_loss("sigmoid", img, txt, {"log_temperature": 1.0})
  with pytest.raises(ValueError, match="unknown loss 'hinge'"):
    losses.contrastive_loss("hinge", img, txt, scalars)


def test_loss_names_agree_with_the_model_config():
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  assert configs.LOSSES == losses.LOSSES
