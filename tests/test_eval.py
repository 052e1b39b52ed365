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


# ------------------------------------------------- any checkpoint, no model file
def _tiny_sources(root):
  """Two Ti/8 stages of one run (16 px / 8 tokens, then 32 px / 16), a Mu/8 stage, an official
  .npz of the Ti/8 pretrain weights, and 8 labelled eval images as two tar shards."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.join(REPO, "tests", "interop"))
  import interop_helpers  # pylint: disable=import-outside-toplevel
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x.data import make_shards  # pylint: disable=import-outside-toplevel
  from clipa_t5x.interop import clipa_jax  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import config_io, configs  # pylint: disable=import-outside-toplevel
  out = {}
  for name, variant, size, length, step in (("run/pretrain", "Ti/8", 16, 8, 2),
                                            ("run/finetune", "Ti/8", 32, 16, 3),
                                            ("mu8/pretrain", "Mu/8", 24, 8, 1)):
    stage = str(root / name)
    params = interop_helpers.random_params(variant, size, length, seed=step)
    checkpoints.save_params(stage, params, step=step)
    config_io.write_model_config(stage, configs.get_config(variant), size, length)
    out[name] = params
  out["npz"] = clipa_jax.save(out["run/pretrain"], str(root / "official.npz"))
  for c, cls in enumerate(("cat", "dog")):
    os.makedirs(root / "in" / cls)
    for i in range(4):
      Image.fromarray(np.full((20, 20, 3), 100 * c + 10 * i, np.uint8)).save(
          root / "in" / cls / f"{i}.png")
      (root / "in" / cls / f"{i}.txt").write_text(f"a {cls} number {i}")
  items, classes = make_shards.folder_items(str(root / "in"), labels_from_folders=True)
  make_shards.make_shards(items, str(root / "shards"), samples_per_shard=4, quiet=True,
                          class_names=classes)
  return out


def _evaluate(checkpoint, root, *extra_files, bindings=()):
  from clipa_t5x import gin_utils  # pylint: disable=import-outside-toplevel
  from clipa_t5x.evaluation import evaluators  # pylint: disable=import-outside-toplevel
  gin_utils.parse_gin_flags(["gin/runs/eval_custom_data.gin", *extra_files], [
      f"CHECKPOINT_PATH = '{checkpoint}'", f"EVAL_DATA = '{root}/shards/{{00000..00001}}.tar'",
      "CLASS_NAMES = 'cat,dog'", "EVAL_BATCH_SIZE = 4", *bindings])
  return gin_utils.configured(evaluators.evaluate_checkpoint)()


@pytest.fixture
def tiny_sources(tmp_path, clean_gin, monkeypatch):
  monkeypatch.chdir(REPO)
  return _tiny_sources(tmp_path)


def test_a_model_file_that_disagrees_is_one_line(tmp_path, tiny_sources):
  with pytest.raises(ValueError, match=r"CHECKPOINT_PATH: the model given \(Mu/8\) disagrees "
                                       r"with the one .*run/finetune/checkpoint_3 records"):
    _evaluate(tmp_path / "run", tmp_path, "gin/models/mu8.gin")


@pytest.mark.slow
def test_any_checkpoint_evaluates_with_its_recorded_model(tmp_path, tiny_sources):
  import gin  # pylint: disable=import-outside-toplevel
  expected = {"run": ("Ti/8", 32, 16, 3), "run/pretrain": ("Ti/8", 16, 8, 2),
              "mu8": ("Mu/8", 24, 8, 1), "official.npz": ("Ti/8", 224, 8, 0)}
  for ref, (model, size, length, step) in expected.items():
    gin.clear_config()
    record = _evaluate(tmp_path / ref, tmp_path)
    assert (record["model"], record["image_size"], record["text_length"], record["step"]) == (
        model, size, length, step), ref
    assert record["results"]["user_data/num_examples"] == 8
    assert "user_data_retrieval/image_to_text/R@1" in record["results"]
  # The official .npz and the stage it came from give the same numbers at the same sizes.
  gin.clear_config()
  npz = _evaluate(tmp_path / "official.npz", tmp_path, bindings=["EVAL_IMAGE_SIZE = 16"])
  assert os.path.exists(tmp_path / "official.npz_eval" / "results.json")
  gin.clear_config()
  stage = _evaluate(tmp_path / "run" / "pretrain", tmp_path)
  for key, value in stage["results"].items():
    assert npz["results"][key] == pytest.approx(value, abs=1e-6), key
  # A model file that agrees still works.
  gin.clear_config()
  assert _evaluate(tmp_path / "mu8", tmp_path, "gin/models/mu8.gin")["model"] == "Mu/8"
