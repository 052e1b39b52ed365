"""SIGTERM during training: a checkpoint is written and the process exits 0; a rerun resumes."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from clipa_t5x import preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_handle_signals_sets_the_flag_and_restores_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.handle_signals():
    assert not preemption.requested()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)
    assert preemption.requested()
  assert not preemption.requested()
  assert signal.getsignal(signal.SIGTERM) is before


def test_handle_signals_is_a_no_op_off_the_main_thread():
  seen = []

  def body():
    with preemption.handle_signals():
      seen.append(preemption.requested())
  thread = threading.Thread(target=body)
  thread.start()
  thread.join()
  assert seen == [False]


def _command(model_dir, data_dir, steps):
  return [
      sys.executable, "-m", "clipa_t5x.train", "--gin_file=gin/runs/demo_cpu.gin",
      f"--gin.MODEL_DIR='{model_dir}'", "--gin.configs.get_config.name='Ti/8'",
      "--gin.STAGES=[@pretrain/runner.Stage()]", "--gin.EVALUATORS=[]",
      "--gin.pretrain/runner.Stage.task_feature_lengths={'image': 16, 'text': 8}",
      "--gin.pretrain/runner.Stage.batch_size=16",
      f"--gin.pretrain/runner.Stage.train_steps={steps}",
      "--gin.pretrain/optimizers.OptimizerConfig.warmup_steps=1",
      "--gin.CHECKPOINT_PERIOD=100000", "--gin.runner.run.log_every=1",
      f"--gin.demo_data.DemoData.data_dir='{data_dir}'",
      "--gin.demo_data.DemoData.num_train=256", "--gin.demo_data.DemoData.num_eval=60",
      "--gin.demo_data.DemoData.image_size=32", "--gin.demo_data.DemoData.num_train_shards=2",
  ]


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero_then_resumes(tmp_path):
  model_dir, data_dir = tmp_path / "run", tmp_path / "data"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(_command(model_dir, data_dir, 100000), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  output = []
  for line in proc.stdout:  # wait until training is under way
    output.append(line)
    if re.search(r"\[pretrain\] step [3-9]\d*/", line):
      break
  proc.send_signal(signal.SIGTERM)
  sent = time.time()
  rest, _ = proc.communicate(timeout=120)
  output.append(rest)
  text = "".join(output)
  assert proc.returncode == 0, text[-3000:]
  assert time.time() - sent < 120
  match = re.search(r"stopped at step (\d+)", text)
  assert match, text[-3000:]
  step = int(match.group(1))
  assert os.path.isdir(model_dir / "pretrain" / f"checkpoint_{step}")
  assert os.path.isdir(model_dir / "pretrain" / "data_iterators" / f"step_{step}")
  # The same command (here with a reachable end) resumes from that checkpoint.
  again = subprocess.run(_command(model_dir, data_dir, step + 2) + ["--allow_config_change"],
                         cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resuming from {model_dir / 'pretrain'} step {step}" in again.stdout


def _losses(model_dir):
  """step -> loss, the last logged value of each step (a resumed run logs some twice)."""
  import json  # pylint: disable=import-outside-toplevel
  lines = (model_dir / "pretrain" / "train_metrics.jsonl").read_text().splitlines()
  return {row["step"]: row["loss"] for row in map(json.loads, lines)}


@pytest.mark.slow
def test_kill_9_then_rerun_reproduces_the_uninterrupted_losses(tmp_path):
  data_dir = tmp_path / "data"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  steps = 10
  command = lambda model_dir: _command(model_dir, data_dir, steps) + [
      "--gin.CHECKPOINT_PERIOD=3", "--gin.pretrain/runner.Stage.mask_ratio=0.25"]
  reference = subprocess.run(command(tmp_path / "reference"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
  assert reference.returncode == 0, reference.stderr[-3000:]

  killed_dir = tmp_path / "killed"
  proc = subprocess.Popen(command(killed_dir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    if re.search(r"\[pretrain\] step [7-9]/", line):
      break
  proc.kill()  # SIGKILL: no handler, no last save
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  again = subprocess.run(command(killed_dir), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert re.search(r"resuming from .* step [36]\b", again.stdout), again.stdout[-2000:]
  expected, got = _losses(tmp_path / "reference"), _losses(killed_dir)
  assert sorted(got) == list(range(1, steps + 1))
  for step in range(1, steps + 1):
    assert got[step] == pytest.approx(expected[step], rel=1e-5), step
