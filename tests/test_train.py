"""Tests of the command line ``python -m clipa_t5x.train``, run as a subprocess.

Configuration mistakes must end the process with one ``error: ...`` line on
stderr (no traceback) and, where they can be found from the config alone,
before anything is compiled. The slow test runs the CPU demo recipe end to end
on a tiny model and data set.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import gin
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "--gin_file=gin/runs/demo_cpu.gin"


def _cli(*args: str, tmp_path, timeout: float = 300) -> subprocess.CompletedProcess:
  """Runs the training CLI from the repository root; returns the finished process."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             # Never touch the user's cached demo data, whatever a test does.
             CLIPA_DEMO_DATA=str(tmp_path / "default_demo_data"))
  return subprocess.run([sys.executable, "-m", "clipa_t5x.train", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
  """The one error line the CLI must end with, after checking the process failed cleanly."""
  assert proc.returncode != 0, proc.stdout
  assert "Traceback" not in proc.stderr, proc.stderr
  last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
  assert last.startswith("error: "), proc.stderr
  return last


def _model_dir(path) -> str:
  return f"--gin.MODEL_DIR='{path}'"


def test_help_exits_zero_and_shows_usage(tmp_path):
  proc = _cli("--help", tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr
  for text in ("--gin_file", "--gin_search_paths", "--gin_bindings",
               "python -m clipa_t5x.train",  # the module docstring's usage
               "MODEL_DIR/config.gin"):
    assert text in proc.stdout, text


@pytest.mark.parametrize("binding, name", [
    ("--gin.runner.run.modeldir='x'", "modeldir"),
    ("--gin.pretrain/runner.Stage.trian_steps=3", "trian_steps"),
])
def test_misspelled_binding_names_the_binding(tmp_path, binding, name):
  proc = _cli(DEMO, _model_dir(tmp_path / "run"), binding, tmp_path=tmp_path)
  line = _error_line(proc)
  assert name in line and "bindings" in line
  assert not os.path.exists(tmp_path / "run")  # nothing written


def test_misspelled_parameter_in_a_gin_file_names_the_file(tmp_path):
  path = tmp_path / "my_run.gin"
  path.write_text(textwrap.dedent("""\
      from __gin__ import dynamic_registration
      from clipa_t5x import runner

      include 'runs/demo_cpu.gin'

      runner.run.log_evry = 3
      """))
  proc = _cli(f"--gin_file={path}", _model_dir(tmp_path / "run"), tmp_path=tmp_path)
  line = _error_line(proc)
  assert str(path) in line and "log_evry" in line and "line 6" in line


def test_missing_gin_file_is_named(tmp_path):
  proc = _cli("--gin_file=runs/no_such_run.gin", _model_dir(tmp_path / "run"),
              tmp_path=tmp_path)
  assert "runs/no_such_run.gin" in _error_line(proc)


def test_missing_model_dir_is_named(tmp_path):
  proc = _cli(DEMO, tmp_path=tmp_path)
  assert "MODEL_DIR" in _error_line(proc)


def test_unwritable_model_dir_fails_before_compiling(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")  # tests run as root: a path under a file is never writable
  start = time.time()
  proc = _cli(DEMO, _model_dir(blocker / "run"), tmp_path=tmp_path)
  assert time.time() - start < 60
  line = _error_line(proc)
  assert "MODEL_DIR" in line and str(blocker / "run") in line
  assert "compiled" not in proc.stdout + proc.stderr


def test_image_size_not_divisible_by_patch_fails_before_compiling(tmp_path):
  start = time.time()
  proc = _cli(DEMO, _model_dir(tmp_path / "run"),
              "--gin.pretrain/runner.Stage.task_feature_lengths={'image': 30, 'text': 8}",
              tmp_path=tmp_path)
  assert time.time() - start < 60
  line = _error_line(proc)
  assert "image size 30" in line and "patch size 8" in line and "'pretrain'" in line
  assert "compiled" not in proc.stdout + proc.stderr
  assert not os.path.exists(tmp_path / "run" / "pretrain")


def test_unquoted_string_binding_shows_the_quoted_form(tmp_path):
  # The shell eats the only quotes of --gin.MODEL_DIR='runs/my_run'; gin alone says
  # "Unable to parse value. (line 1)".
  proc = _cli(DEMO, f"--gin.MODEL_DIR={tmp_path}/my_run", tmp_path=tmp_path)
  line = _error_line(proc)
  assert f"MODEL_DIR = {tmp_path}/my_run" in line
  assert f"--gin.MODEL_DIR=\"'{tmp_path}/my_run'\"" in line
  assert not os.path.exists(tmp_path / "my_run")


@pytest.mark.parametrize("size, expected", [(0, "must be a positive integer, got 0"),
                                            (-8, "must be a positive integer, got -8")])
def test_batch_size_error_names_the_stage_setting(tmp_path, size, expected):
  proc = _cli(DEMO, _model_dir(tmp_path / "run"), f"--gin.pretrain/runner.Stage.batch_size={size}",
              tmp_path=tmp_path)
  line = _error_line(proc)
  assert "Stage.batch_size" in line and expected in line and "'pretrain'" in line
  assert "DatasetConfig" not in line


@pytest.mark.slow
def test_demo_recipe_end_to_end(tmp_path):
  model_dir = tmp_path / "model"
  data_dir = tmp_path / "demo_data"
  stage_args = []
  for stage, image, text in (("pretrain", 16, 8), ("finetune", 32, 16)):
    stage_args += [
        f"--gin.{stage}/runner.Stage.task_feature_lengths={{'image': {image}, 'text': {text}}}",
        f"--gin.{stage}/runner.Stage.batch_size=32",
        f"--gin.{stage}/runner.Stage.train_steps=3",
        f"--gin.{stage}/optimizers.OptimizerConfig.warmup_steps=1",
    ]
  proc = _cli(
      DEMO, _model_dir(model_dir), "--gin.configs.get_config.name='Ti/8'", *stage_args,
      "--gin.runner.ZeroShotEvalConfig.batch_size=20",
      f"--gin.demo_data.DemoData.data_dir='{data_dir}'",
      "--gin.demo_data.DemoData.num_train=256", "--gin.demo_data.DemoData.num_eval=60",
      "--gin.demo_data.DemoData.image_size=32", "--gin.demo_data.DemoData.num_train_shards=2",
      tmp_path=tmp_path, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]

  # The data went where DemoData said, with the bound size.
  with open(data_dir / "manifest.json") as f:
    assert json.load(f)["num_examples"] == {"train": 256, "eval": 60}
  assert not os.path.exists(tmp_path / "default_demo_data")

  # config.gin: the resolved config, with the command-line overrides, parseable again.
  config_text = (model_dir / "config.gin").read_text()
  assert "configs.get_config.name = 'Ti/8'" in config_text
  assert "pretrain/runner.Stage.train_steps = 3" in config_text
  gin.clear_config()
  try:
    gin.parse_config_file(str(model_dir / "config.gin"))
    assert gin.query_parameter("%MODEL_DIR") == str(model_dir)
    assert gin.query_parameter("demo_data.DemoData.num_train") == 256
  finally:
    gin.clear_config()

  with open(model_dir / "summary.json") as f:
    summary = json.load(f)
  assert [(r["stage"], r["image_tokens"], r["text_tokens"]) for r in summary] == [
      ("pretrain", 4, 8), ("finetune", 11, 16)]
  assert all(0.0 <= r["zeroshot_top1"] <= 1.0 for r in summary)

  # The summary table is the last thing printed.
  lines = [line for line in proc.stdout.splitlines() if line.strip()]
  assert lines[-4].split()[:3] == ["stage", "image", "tokens"]
  assert set(lines[-3]) == {"-", " "}
  assert lines[-2].split()[:3] == ["pretrain", "4", "8"]
  assert lines[-1].split()[:3] == ["finetune", "11", "16"]
  assert "[finetune] initialised from" in proc.stdout
