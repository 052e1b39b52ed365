"""The partitioned train step: learns, and gives the same numbers on any mesh."""

import json

import jax
import numpy as np
import pytest

from clipa_t5x import metrics_logging
from clipa_t5x import partitioning
from clipa_t5x import train_state
from clipa_t5x import trainer as trainer_lib
import helpers  # tests/helpers.py


def _run(partitioner, steps, batches, tmp_path, mask_ratio=0.0, name="run", **setup):
  model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner, **setup)
  state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                         helpers.TEXT_LENGTH, partitioner, shardings)
  trainer = trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, global_batch_size=8,
                                flops_per_example=1e6, mask_ratio=mask_ratio)
  trainer.compile(state, batches[0], jax.random.key(1))
  jsonl = tmp_path / f"{name}.jsonl"
  logger = metrics_logging.MetricsLogger(str(tmp_path / name), str(jsonl))
  state = trainer.train(state, iter(batches * steps), jax.random.key(1), steps, logger,
                        log_every=1)
  logger.close()
  rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
  return state, rows


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(tmp_path):
  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  state, rows = _run(partitioner, 12, [helpers.random_batch(seed=0)], tmp_path)
  losses = [r["loss"] for r in rows]
  assert int(state.step) == 12 and len(rows) == 12
  assert losses[-1] < 0.5 * losses[0], losses
  for key in ("learning_rate", "temperature", "grad_norm", "samples_per_second", "step_time",
              "examples_seen", "i2t_accuracy", "t2i_accuracy", "achieved_tflops_per_second"):
    assert key in rows[-1]
  assert rows[-1]["examples_seen"] == 12 * 8


@pytest.mark.slow  # trains on two meshes: the longest test of the fast suite otherwise
def test_2x2_mesh_gives_the_same_losses_as_one_device(tmp_path):
  batches = [helpers.random_batch(seed=s) for s in range(3)]
  one = partitioning.PjitPartitioner(num_partitions=1, devices=jax.devices()[:1])
  mesh = partitioning.PjitPartitioner(num_partitions=2)
  assert dict(mesh.mesh.shape) == {"data": 2, "model": 2}
  _, rows_one = _run(one, 3, batches, tmp_path, mask_ratio=0.5, name="one")
  _, rows_mesh = _run(mesh, 3, batches, tmp_path, mask_ratio=0.5, name="mesh")
  np.testing.assert_allclose([r["loss"] for r in rows_one], [r["loss"] for r in rows_mesh],
                             rtol=2e-5)
  np.testing.assert_allclose([r["grad_norm"] for r in rows_one],
                             [r["grad_norm"] for r in rows_mesh], rtol=2e-4)


def test_compile_rejects_a_wrong_host_batch():
  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner)
  state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                         helpers.TEXT_LENGTH, partitioner, shardings)
  trainer = trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, global_batch_size=8)
  with pytest.raises(ValueError, match="rows, expected 8"):
    trainer.compile(state, helpers.random_batch(batch_size=6), jax.random.key(1))


def test_step_on_device_is_step_on_a_presharded_batch():
  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner)
  trainer = trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, global_batch_size=8)
  batch = helpers.random_batch(seed=3)
  states = [train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                           helpers.TEXT_LENGTH, partitioner, shardings)
            for _ in range(2)]
  trainer.compile(states[0], batch, jax.random.key(1))
  assert "HloModule" in trainer.compiled_text()
  _, from_host = trainer.step(states[0], batch, jax.random.key(1))
  _, on_device = trainer.step_on_device(states[1], partitioner.shard_batch(batch),
                                        jax.random.key(1))
  assert float(from_host["loss"]) == float(on_device["loss"])
  assert float(from_host["grad_norm"]) == float(on_device["grad_norm"])


class _NanAfterModel:
  """A linear 'model' whose loss is NaN on batches marked with text[0, 0] == -1."""

  def get_initial_variables(self, rng, image_size, text_length):
    del rng, image_size, text_length
    return {"params": {"w": jax.numpy.ones((3,))}}

  def loss_fn(self, params, batch, rng, mask_ratio=0.0, mask_type="random"):
    del rng, mask_ratio, mask_type
    loss = jax.numpy.sum(params["w"] ** 2) * jax.numpy.mean(batch["image"].astype("float32"))
    loss = jax.numpy.where(batch["text"][0, 0] == -1, jax.numpy.nan, loss)
    return loss, {"loss": loss}


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nonfinite_steps_leave_the_state_unchanged_and_are_reported(tmp_path, policy):
  import optax  # pylint: disable=import-outside-toplevel
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  model, tx = _NanAfterModel(), optax.sgd(0.1)
  _, _, shardings = train_state.abstract_train_state(model, tx, 4, 2, partitioner)
  state = train_state.create_train_state(model, tx, jax.random.key(0), 4, 2, partitioner,
                                         shardings)
  good = {"image": np.ones((8, 4, 4, 3), np.uint8), "text": np.zeros((8, 2), np.int32)}
  bad = {"image": good["image"], "text": np.full((8, 2), -1, np.int32)}
  trainer = trainer_lib.Trainer(model, tx, lambda s: 0.1, partitioner, shardings, 8,
                                nonfinite_policy=policy)
  logger = metrics_logging.MetricsLogger(str(tmp_path), str(tmp_path / "m.jsonl"))
  state = trainer.train(state, iter([good]), jax.random.key(1), 1, logger, log_every=1)
  before = np.asarray(state.params["w"])
  if policy == "stop":
    with pytest.raises(trainer_lib.NonFiniteError, match="NaN/Inf"):
      trainer.train(state, iter([bad, good]), jax.random.key(1), 2, logger, log_every=1)
    return
  state = trainer.train(state, iter([bad]), jax.random.key(1), 1, logger, log_every=1)
  np.testing.assert_array_equal(np.asarray(state.params["w"]), before)  # skipped
  assert int(state.step) == 2
  rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
  assert rows[-1]["nonfinite_steps"] == 1 and rows[0]["nonfinite_steps"] == 0
  with pytest.raises(ValueError, match="nonfinite_policy"):
    trainer_lib.Trainer(model, tx, lambda s: 0.1, partitioner, shardings, 8,
                        nonfinite_policy="ignore")


@pytest.mark.slow
def test_sigmoid_loss_with_lion_trains_on_4_devices_as_on_one(tmp_path):
  """LOSS='sigmoid' + OPTIMIZER='lion' through the trainer: the ring on 4 devices, same run."""
  batches = [helpers.random_batch(seed=s) for s in range(2)]
  one = partitioning.PjitPartitioner(num_partitions=1, devices=jax.devices()[:1])
  four = partitioning.PjitPartitioner(num_partitions=1)
  assert four.data_parallel_size == 4
  setup = {"loss": "sigmoid", "optimizer": "lion"}
  _, rows_one = _run(one, 6, batches, tmp_path, name="one", **setup)
  state, rows_four = _run(four, 6, batches, tmp_path, name="four", **setup)
  np.testing.assert_allclose([r["loss"] for r in rows_one], [r["loss"] for r in rows_four],
                             rtol=2e-5)
  assert rows_four[-1]["loss"] < rows_four[0]["loss"]
  assert "logit_bias" in rows_four[-1]
  # The bias learns (from its initial -10).
  assert float(state.params["logit_bias"]) != -10.0
