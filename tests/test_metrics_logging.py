"""Tests of clipa_t5x.metrics_logging: JSONL, TensorBoard events, progress line."""

import glob
import io
import json
import logging
import os
import re
import sys
import types

import numpy as np
import pytest

from clipa_t5x import metrics_logging


def _read_events(log_dir):
  """(step, tag) -> value from every TensorBoard event file under ``log_dir``."""
  import tensorflow as tf  # heavy: only here
  values = {}
  for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents*"), recursive=True):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                  else float(value.simple_value))
        values[(event.step, value.tag)] = number
  return values


def test_jsonl_one_object_per_write(tmp_path):
  jsonl = tmp_path / "sub" / "metrics.jsonl"
  logger = metrics_logging.MetricsLogger(str(tmp_path / "tb"), str(jsonl), enabled=True)
  logger.write(10, {"loss": np.float32(1.5), "lr": 3e-4})
  logger.write(20, {"loss": 1.25, "accuracy": np.array(0.5)})
  logger.close()
  lines = jsonl.read_text().splitlines()
  assert len(lines) == 2
  first, second = (json.loads(line) for line in lines)
  assert first == {"step": 10, "loss": 1.5, "lr": 3e-4}
  assert second == {"step": 20, "loss": 1.25, "accuracy": 0.5}
  assert isinstance(first["step"], int)


def test_jsonl_appends_across_loggers(tmp_path):
  jsonl = tmp_path / "metrics.jsonl"
  for step in (1, 2):
    logger = metrics_logging.MetricsLogger(str(tmp_path / "tb"), str(jsonl), enabled=True)
    logger.write(step, {"x": step})
    logger.close()
  assert [json.loads(line)["step"] for line in jsonl.read_text().splitlines()] == [1, 2]


def test_tensorboard_event_file(tmp_path):
  log_dir = tmp_path / "train"
  logger = metrics_logging.MetricsLogger(str(log_dir), str(tmp_path / "m.jsonl"), enabled=True)
  logger.write(3, {"loss": 2.0, "temperature": 14.25})
  logger.write(4, {"loss": 1.5})
  logger.flush()
  logger.close()
  logger.close()  # closing twice is harmless
  assert glob.glob(os.path.join(str(log_dir), "**", "events.out.tfevents*"), recursive=True)
  values = _read_events(str(log_dir))
  assert values[(3, "loss")] == pytest.approx(2.0)
  assert values[(3, "temperature")] == pytest.approx(14.25)
  assert values[(4, "loss")] == pytest.approx(1.5)


def test_disabled_logger_writes_nothing(tmp_path):
  log_dir, jsonl = tmp_path / "tb", tmp_path / "metrics.jsonl"
  logger = metrics_logging.MetricsLogger(str(log_dir), str(jsonl), enabled=False)
  assert logger.enabled is False
  logger.write(1, {"loss": 1.0})
  logger.flush()
  logger.close()
  assert not jsonl.exists()
  assert not log_dir.exists()
  assert list(tmp_path.iterdir()) == []


def test_tensorboard_false_keeps_jsonl_only(tmp_path):
  log_dir, jsonl = tmp_path / "tb", tmp_path / "metrics.jsonl"
  logger = metrics_logging.MetricsLogger(str(log_dir), str(jsonl), enabled=True,
                                         tensorboard=False)
  logger.write(1, {"loss": 1.0})
  logger.close()
  assert json.loads(jsonl.read_text()) == {"step": 1, "loss": 1.0}
  assert not log_dir.exists()


def test_without_clu_logs_jsonl_and_warns_once(tmp_path, monkeypatch, caplog):
  monkeypatch.setitem(sys.modules, "clu", None)  # import clu -> ImportError
  log_dir, jsonl = tmp_path / "tb", tmp_path / "metrics.jsonl"
  with caplog.at_level(logging.WARNING):
    logger = metrics_logging.MetricsLogger(str(log_dir), str(jsonl), enabled=True)
  logger.write(2, {"loss": 0.5})
  logger.close()
  assert json.loads(jsonl.read_text()) == {"step": 2, "loss": 0.5}
  assert not log_dir.exists()
  assert "no TensorBoard events" in caplog.text


def test_without_clu_tensorboard_true_raises_with_fix(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "clu", None)
  with pytest.raises(ImportError, match="tensorboard=False"):
    metrics_logging.MetricsLogger(str(tmp_path / "tb"), str(tmp_path / "m.jsonl"),
                                  enabled=True, tensorboard=True)


def test_enabled_defaults_to_host_zero(tmp_path):
  logger = metrics_logging.MetricsLogger(str(tmp_path / "tb"), str(tmp_path / "m.jsonl"))
  assert logger.enabled is True  # single process: this is host 0
  logger.close()


@pytest.mark.parametrize("seconds, text", [
    (0, "0:00"), (59.9, "0:59"), (61, "1:01"), (3600, "1:00:00"), (3725, "1:02:05"),
    (-5, "0:00"),
])
def test_format_seconds(seconds, text):
  assert metrics_logging._format_seconds(seconds) == text


class _Clock:
  def __init__(self, now: float):
    self.now = now

  def time(self) -> float:
    return self.now


@pytest.fixture
def clock(monkeypatch):
  fake = _Clock(1000.0)
  monkeypatch.setattr(metrics_logging, "time", types.SimpleNamespace(time=fake.time))
  return fake


def test_progress_line_format_and_eta(clock):
  stream = io.StringIO()
  progress = metrics_logging.ProgressLine("stage1", first_step=0, total_steps=100, stream=stream)
  clock.now += 10.0
  progress.report(10, loss=1.234567, samples_per_second=12345.6)
  line = stream.getvalue()
  assert line.endswith("\n") and line.count("\n") == 1
  # 10 steps in 10 s, 90 steps left: 90 s.
  assert line == ("[stage1] step 10/100  loss 1.2346  12,346 samples/s  elapsed 0:10  "
                  "ETA 1:30\n")


def test_progress_line_eta_from_a_resumed_step(clock):
  stream = io.StringIO()
  progress = metrics_logging.ProgressLine("s", first_step=500, total_steps=10_500, stream=stream)
  clock.now += 100.0
  progress.report(1500, loss=0.5, samples_per_second=3.0)
  # 1000 steps in 100 s; 9000 left: 900 s = 15 min.
  assert re.search(r"step 1500/10500 .* elapsed 1:40  ETA 15:00$", stream.getvalue().strip())


def test_progress_line_unknown_eta_before_the_first_step(clock):
  stream = io.StringIO()
  progress = metrics_logging.ProgressLine("s", first_step=7, total_steps=10, stream=stream)
  progress.report(7, loss=float("nan"), samples_per_second=0.0)
  assert stream.getvalue().strip().endswith("ETA ?")
  assert "loss nan" in stream.getvalue()
