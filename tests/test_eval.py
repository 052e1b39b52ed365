"""Tests of the eval command line ``python -m clipa_t5x.eval``.

Configuration errors are checked in this process (``entry_points.run``); ``--help`` and
the slow test run it as a subprocess.

The slow test trains Ti/8 for two steps on tiny demo data with ``runner.run``
(zero-shot + retrieval evaluators), then evaluates its checkpoint with the CLI
at the training resolution (same numbers as the run's own final eval) and at
another resolution and text length.
"""

import json
import os
import subprocess
import sys

import pytest

import entry_points
from clipa_t5x import eval as eval_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_KWARGS = dict(num_train=64, num_eval=24, image_size=32, num_train_shards=1)


def _cli(*args, tmp_path, timeout=400):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             CLIPA_DEMO_DATA=str(tmp_path / "default_demo_data"))
  return subprocess.run([sys.executable, "-m", "clipa_t5x.eval", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_help_exits_zero(tmp_path):
  proc = _cli("--help", tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert "python -m clipa_t5x.eval" in proc.stdout and "CHECKPOINT_PATH" in proc.stdout


def _error_line(*args):
  return entry_points.error_line(entry_points.run(eval_cli, *args))


def test_missing_checkpoint_path_is_one_line():
  assert "CHECKPOINT_PATH" in _error_line("--gin_file=runs/eval_demo.gin")


def test_nonexistent_checkpoint_is_one_line(tmp_path):
  line = _error_line("--gin_file=runs/eval_demo.gin",
                     f"--gin.CHECKPOINT_PATH='{tmp_path / 'nope'}'")
  assert "does not exist" in line and "nope" in line


@pytest.mark.slow
def test_train_then_evaluate_checkpoint(tmp_path):
  train = f"""
import os
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
from clipa_t5x import checkpoints, partitioning, runner
from clipa_t5x.demo import data as demo_data
from clipa_t5x.evaluation import datasets
from clipa_t5x.models import configs
from clipa_t5x.tasks import demo
data = demo_data.DemoData({str(tmp_path / 'data')!r}, **{DEMO_KWARGS!r})
p = partitioning.PjitPartitioner(
    num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules())
stage = runner.Stage(name="pretrain", mixture_or_task_name=demo.task("truncate", data),
                     task_feature_lengths={{"image": 16, "text": 8}}, batch_size=16,
                     train_steps=2)
evals = [runner.ZeroShotEvalConfig(name="demo_shapes", task=demo.eval_task(data),
                                   class_names=demo_data.class_names, templates=["a {{c}}."],
                                   batch_size=8),
         runner.RetrievalEvalConfig(name="demo_shapes_retrieval", batch_size=8,
             source=datasets.WebDatasetRetrieval(lambda: demo_data.eval_files(data),
                                                 caption_key="txt"))]
runner.run(model_dir={str(tmp_path / 'model')!r}, stages=[stage],
           model_config=configs.get_config("Ti/8"), partitioner=p, evaluators=evals,
           checkpoint_config=checkpoints.SaveCheckpointConfig(period=2))
"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", train], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  stage_dir = tmp_path / "model" / "pretrain"
  with open(stage_dir / "eval_metrics.jsonl") as f:
    trained = [json.loads(line) for line in f if line.strip()][-1]

  demo_flags = [f"--gin.demo_data.DemoData.data_dir='{tmp_path / 'data'}'"] + [
      f"--gin.demo_data.DemoData.{k}={v}" for k, v in DEMO_KWARGS.items()]
  common = ["--gin_file=runs/eval_demo.gin", "--gin_file=models/ti8.gin",
            "--gin.evaluators.ZeroShotEvalConfig.templates=['a {c}.']",
            "--gin.evaluators.ZeroShotEvalConfig.batch_size=8",
            "--gin.evaluators.RetrievalEvalConfig.batch_size=8", *demo_flags]
  # 1) At the training resolution: the run's own final numbers, default output dir.
  proc = _cli(*common, f"--gin.CHECKPOINT_PATH='{stage_dir}'", "--gin.EVAL_IMAGE_SIZE=16",
              "--gin.EVAL_TEXT_LENGTH=8", tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(stage_dir / "eval_2" / "results.json") as f:
    record = json.load(f)
  assert record["step"] == 2 and record["image_size"] == 16 and record["text_length"] == 8
  results = record["results"]
  for key in ("demo_shapes/top1", "demo_shapes/top5", "demo_shapes_retrieval/image_to_text/R@1",
              "demo_shapes_retrieval/text_to_image/R@10"):
    assert results[key] == pytest.approx(trained[key], abs=1e-6), key
  assert results["demo_shapes/num_examples"] == 24
  assert results["demo_shapes_retrieval/num_captions"] == 24
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(stage_dir / "eval_2"))
  table = proc.stdout.splitlines()
  assert any(line.split()[:2] == ["demo_shapes", "top1"] for line in table)

  # 2) A specific checkpoint at another resolution and text length, own output dir.
  out = tmp_path / "eval_out"
  proc = _cli(*common, f"--gin.CHECKPOINT_PATH='{stage_dir / 'checkpoint_2'}'",
              "--gin.EVAL_IMAGE_SIZE=32", "--gin.EVAL_TEXT_LENGTH=16",
              f"--gin.EVAL_OUTPUT_DIR='{out}'", tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "results.json") as f:
    record = json.load(f)
  assert record["image_size"] == 32 and record["text_length"] == 16
  assert 0.0 <= record["results"]["demo_shapes_retrieval/image_to_text/R@5"] <= 1.0
