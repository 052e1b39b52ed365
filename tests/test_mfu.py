"""Live accounting: the trainer logs MFU against the device's peak (clipa_t5x.trainer)."""

import json
from unittest import mock

import jax
import pytest

from clipa_t5x import device_profiles
from clipa_t5x import metrics_logging
from clipa_t5x import partitioning
from clipa_t5x import train_state
from clipa_t5x import trainer as trainer_lib
import helpers  # tests/helpers.py

FLOPS_PER_EXAMPLE = 1e6


def _rows(tmp_path, steps=3, **trainer_kwargs):
  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner)
  state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                         helpers.TEXT_LENGTH, partitioner, shardings)
  trainer = trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, global_batch_size=8,
                                flops_per_example=FLOPS_PER_EXAMPLE, **trainer_kwargs)
  batch = helpers.random_batch(seed=0)
  jsonl = tmp_path / "train.jsonl"
  logger = metrics_logging.MetricsLogger(str(tmp_path / "train"), str(jsonl))
  trainer.train(state, iter([batch] * steps), jax.random.key(1), steps, logger, log_every=1)
  logger.close()
  return [json.loads(line) for line in jsonl.read_text().splitlines()]


def _logged(tmp_path, **trainer_kwargs):
  """One log row from ``Trainer._log`` on a fake 2-step, 0.5 s interval: no compilation."""
  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner)
  trainer = trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, global_batch_size=8,
                                flops_per_example=FLOPS_PER_EXAMPLE, **trainer_kwargs)
  jsonl = tmp_path / "log.jsonl"
  logger = metrics_logging.MetricsLogger(str(tmp_path / "log"), str(jsonl))
  with mock.patch.object(trainer_lib.time, "time", return_value=100.5):
    trainer._log(12, {"loss": 1.0}, logger, None, since_time=100.0, since_step=10)  # pylint: disable=protected-access
  logger.close()
  return json.loads(jsonl.read_text().splitlines()[-1])


def test_mfu_formula(tmp_path):
  row = _logged(tmp_path, peak_flops_per_device=1e8)
  achieved = 2 * 8 / 0.5 * FLOPS_PER_EXAMPLE   # 2 steps of 8 examples in 0.5 s
  assert row["achieved_tflops_per_second"] == pytest.approx(achieved / 1e12)
  assert row["mfu"] == pytest.approx(achieved / (1e8 * 4))


@pytest.mark.slow
def test_mfu_while_training(tmp_path):
  rows = _rows(tmp_path, peak_flops_per_device=1e9)
  devices = jax.device_count()
  assert devices == 4  # conftest's fake CPU devices
  for row in rows:
    achieved = row["samples_per_second"] * FLOPS_PER_EXAMPLE
    assert row["achieved_tflops_per_second"] == pytest.approx(achieved / 1e12)
    assert row["mfu"] == pytest.approx(achieved / (1e9 * devices))


def test_cpu_has_no_peak_so_no_mfu(tmp_path):
  assert device_profiles.peak_flops_for_device_kind(jax.devices()[0].device_kind) is None
  row = _logged(tmp_path)
  assert "achieved_tflops_per_second" in row and "mfu" not in row


def test_peak_detected_from_device_kind(tmp_path, monkeypatch):
  fake = device_profiles.DeviceProfile("FakeCPU", 2e9, device_kinds=("cpu",))
  monkeypatch.setattr(device_profiles, "PROFILES", (fake,) + device_profiles.PROFILES)
  row = _logged(tmp_path)
  assert row["mfu"] == pytest.approx(32 * FLOPS_PER_EXAMPLE / (2e9 * jax.device_count()))


def test_bad_peak_is_a_clear_error():
  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner)
  with pytest.raises(ValueError, match="peak_flops_per_device must be positive"):
    trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, 8, peak_flops_per_device=-1.0)
