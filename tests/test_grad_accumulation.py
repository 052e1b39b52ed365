"""Micro-batched gradients equal the full-batch gradient of the contrastive loss."""

import jax
import numpy as np
import pytest

from clipa_t5x import grad_accumulation
from clipa_t5x import partitioning
from clipa_t5x import train_state
import helpers  # tests/helpers.py


@pytest.mark.parametrize("num_microbatches", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_accumulated_gradients_equal_the_full_batch(num_microbatches):
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  model, tx, _, _, _, shardings = helpers.tiny_setup(partitioner)
  state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                         helpers.TEXT_LENGTH, partitioner, shardings)
  batch = helpers.random_batch(8)
  # No masking in this comparison (mask_ratio 0): a micro-batch draws its own mask.
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p: model.loss_fn(p, batch, None), has_aux=True))(state.params)
  (loss_m, metrics_m), grads_m = jax.jit(
      lambda p: grad_accumulation.microbatched_loss_and_grads(
          model, p, batch, jax.random.key(0), num_microbatches))(state.params)
  np.testing.assert_allclose(loss_m, loss, rtol=1e-6)
  np.testing.assert_allclose(metrics_m["i2t_accuracy"], metrics["i2t_accuracy"])
  # float32 sums in another order: a few near-zero entries differ by ~2e-6
  # (measured on an AVX-512 Xeon, jaxlib 0.12); a wrong accumulation is off by far more.
  for a, b in zip(jax.tree.leaves(grads_m), jax.tree.leaves(grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=5e-6)
  # The average of per-micro-batch losses is a different objective.
  pieces = [model.loss_fn(state.params, {k: v[i::num_microbatches] for k, v in batch.items()},
                          None)[0] for i in range(num_microbatches)]
  assert abs(float(np.mean(pieces)) - float(loss)) > 1e-3


def test_trainer_checks_the_microbatch_split():
  from clipa_t5x import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  partitioner = partitioning.PjitPartitioner(num_partitions=1)  # data-parallel size 4
  model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner)
  with pytest.raises(ValueError, match="num_microbatches=4"):
    trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, 8, num_microbatches=4)


@pytest.mark.parametrize("n_devices", [1, 2])
@pytest.mark.slow
def test_sigmoid_accumulated_gradients_equal_the_full_batch(n_devices):
  """The sigmoid loss accumulates exactly too, its ring running over the full batch's features."""
  reference = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  model, tx, _, _, _, shardings = helpers.tiny_setup(reference, loss="sigmoid")
  state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                         helpers.TEXT_LENGTH, reference, shardings)
  params = jax.device_get(state.params)
  assert set(params) == {"img", "txt", "log_temperature", "logit_bias"}
  # A bias near 0 and a temperature of 1 give every pair a sizeable gradient.
  params = {**params, "logit_bias": np.float32(0.0), "log_temperature": np.float32(0.0)}
  batch = helpers.random_batch(8)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p: model.loss_fn(p, batch, None), has_aux=True))(params)
  partitioner = partitioning.PjitPartitioner(num_partitions=1, devices=jax.devices()[:n_devices])
  with partitioner.context():
    (loss_m, metrics_m), grads_m = jax.jit(
        lambda p, b: grad_accumulation.microbatched_loss_and_grads(
            model, p, b, jax.random.key(0), 2))(params, partitioner.shard_batch(batch))
  np.testing.assert_allclose(loss_m, loss, rtol=1e-6)
  assert float(metrics_m["logit_bias"]) == 0.0
  np.testing.assert_allclose(metrics_m["t2i_accuracy"], metrics["t2i_accuracy"])
  for a, b in zip(jax.tree.leaves(grads_m), jax.tree.leaves(grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=5e-6)
  assert abs(float(grads["logit_bias"])) > 1e-3  # the bias gets its gradient
