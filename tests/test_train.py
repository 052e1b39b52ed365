"""Tests of the command line ``python -m clipa_t5x.train``.

Configuration mistakes must end the run with one ``error: ...`` line on
stderr (no traceback) and, where they can be found from the config alone,
before anything is compiled: checked in this process (``entry_points.run``).
``--help`` and the slow end-to-end run of the CPU demo recipe (tiny model and
data set) run as a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import gin
import pytest

import entry_points
from clipa_t5x import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "--gin_file=gin/runs/demo_cpu.gin"


def _cli(*args: str, tmp_path, timeout: float = 300) -> subprocess.CompletedProcess:
  """Runs the training CLI from the repository root; returns the finished process."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             # Never touch the user's cached demo data, whatever a test does.
             CLIPA_DEMO_DATA=str(tmp_path / "default_demo_data"))
  return subprocess.run([sys.executable, "-m", "clipa_t5x.train", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def train_error(tmp_path, monkeypatch):
  """``train_error(*args)``: the one error line ``train.main`` ends with, run in this process."""
  # Never touch the user's cached demo data, whatever a test does.
  monkeypatch.setenv("CLIPA_DEMO_DATA", str(tmp_path / "default_demo_data"))
  return lambda *args: entry_points.error_line(entry_points.run(train, *args))


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
def test_misspelled_binding_names_the_binding(tmp_path, train_error, binding, name):
  line = train_error(DEMO, _model_dir(tmp_path / "run"), binding)
  assert name in line and "bindings" in line
  assert not os.path.exists(tmp_path / "run")  # nothing written


def test_misspelled_parameter_in_a_gin_file_names_the_file(tmp_path, train_error):
  path = tmp_path / "my_run.gin"
  path.write_text(textwrap.dedent("""\
      from __gin__ import dynamic_registration
      from clipa_t5x import runner

      include 'runs/demo_cpu.gin'

      runner.run.log_evry = 3
      """))
  line = train_error(f"--gin_file={path}", _model_dir(tmp_path / "run"))
  assert str(path) in line and "log_evry" in line and "line 6" in line


def test_missing_gin_file_is_named(tmp_path, train_error):
  assert "runs/no_such_run.gin" in train_error("--gin_file=runs/no_such_run.gin",
                                               _model_dir(tmp_path / "run"))


def test_missing_model_dir_is_named(train_error):
  assert "MODEL_DIR" in train_error(DEMO)


def _before_compiling(capfd, *args):
  """The error line of a run that must stop before compiling (absl logs go to fd 2)."""
  result = entry_points.run(train, *args)
  assert "compiled" not in result[1] + result[2] + "".join(capfd.readouterr())
  return entry_points.error_line(result)


def test_unwritable_model_dir_fails_before_compiling(tmp_path, train_error, capfd):
  blocker = tmp_path / "a_file"
  blocker.write_text("")  # tests run as root: a path under a file is never writable
  line = _before_compiling(capfd, DEMO, _model_dir(blocker / "run"))
  assert "MODEL_DIR" in line and str(blocker / "run") in line


def test_image_size_not_divisible_by_patch_fails_before_compiling(tmp_path, train_error, capfd):
  line = _before_compiling(
      capfd, DEMO, _model_dir(tmp_path / "run"),
      "--gin.pretrain/runner.Stage.task_feature_lengths={'image': 30, 'text': 8}")
  assert "image size 30" in line and "patch size 8" in line and "'pretrain'" in line
  assert not os.path.exists(tmp_path / "run" / "pretrain")


def test_unquoted_string_binding_shows_the_quoted_form(tmp_path, train_error):
  # The shell eats the only quotes of --gin.MODEL_DIR='runs/my_run'; gin alone says
  # "Unable to parse value. (line 1)".
  line = train_error(DEMO, f"--gin.MODEL_DIR={tmp_path}/my_run")
  assert f"MODEL_DIR = {tmp_path}/my_run" in line
  assert f"--gin.MODEL_DIR=\"'{tmp_path}/my_run'\"" in line
  assert not os.path.exists(tmp_path / "my_run")


@pytest.mark.parametrize("size, expected", [(0, "must be a positive integer, got 0"),
                                            (-8, "must be a positive integer, got -8")])
def test_batch_size_error_names_the_stage_setting(tmp_path, train_error, size, expected):
  line = train_error(DEMO, _model_dir(tmp_path / "run"),
                     f"--gin.pretrain/runner.Stage.batch_size={size}")
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
      # 256 images hold fewer than 10 of some classes: probe 1 and 2 shots.
      "--gin.evaluators.FewShotEvalConfig.shots=[1, 2]",
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
  # The demo's resolution table: each stage's model at each stage's resolution.
  with open(model_dir / "resolution_table.json") as f:
    table = json.load(f)
  assert [(r["stage"], r["image_size"], r["trained_at"]) for r in table] == [
      ("pretrain", 16, 16), ("pretrain", 32, 16), ("finetune", 16, 32), ("finetune", 32, 32)]

  # The summary table is the last thing printed.
  lines = [line for line in proc.stdout.splitlines() if line.strip()]
  assert lines[-4].split()[:3] == ["stage", "image", "tokens"]
  assert set(lines[-3]) == {"-", " "}
  assert lines[-2].split()[:3] == ["pretrain", "4", "8"]
  assert lines[-1].split()[:3] == ["finetune", "11", "16"]
  assert "[finetune] initialised from" in proc.stdout
