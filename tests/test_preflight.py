"""Tests of clipa_t5x.preflight: every stage is checked before the first one trains."""

import dataclasses
import os
import subprocess
import sys

import pytest

import entry_points
from clipa_t5x import checkpoints
from clipa_t5x import memory
from clipa_t5x import optimizers
from clipa_t5x import partitioning
from clipa_t5x import preflight
from clipa_t5x import runner
from clipa_t5x import train
from clipa_t5x.models import configs
from tasks import datacomp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_config():
  return configs.get_config("Ti/8")


@pytest.fixture(scope="module")
def partitioner():
  return partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules())


@pytest.fixture
def shards(tmp_path):
  """A train glob that matches one (never read) shard, registered as ``datacomp1b``."""
  (tmp_path / "shards").mkdir()
  (tmp_path / "shards" / "000.tar").write_bytes(b"")
  return datacomp.task(train_pattern=str(tmp_path / "shards" / "*.tar"))


def _stage(task, name="pretrain", image=16, text=8, batch=8, steps=10, **kwargs):
  return runner.Stage(name=name, mixture_or_task_name=task,
                      task_feature_lengths={"image": image, "text": text}, batch_size=batch,
                      train_steps=steps, **kwargs)


def _no_training(*args, **kwargs):
  raise AssertionError("a stage started training before every stage was checked")


# Each problem is put in the last stage only; the run must stop before the first step.
LAST_STAGE_PROBLEMS = {
    "patch size": (dict(image=30), r"image size 30 is not divisible by the patch size 8"),
    "warmup": (dict(steps=5, optimizer=optimizers.OptimizerConfig(warmup_steps=5)),
               r"warmup_steps=5 must lie in \[0, total_steps=5\)"),
    "micro-batches": (dict(batch=8, num_microbatches=3), r"num_microbatches=3"),
    "batch vs devices": (dict(batch=6), r"not divisible by the data-parallel size 4"),
    "masking": (dict(mask_ratio=1.0), r"mask_ratio"),
    "init_from": (dict(init_from=checkpoints.RestoreCheckpointConfig(path="/nonexistent/run")),
                  r"no complete checkpoint under '/nonexistent/run'"),
    "memory": (dict(batch=1 << 20, image=64, text=32),
               r"needs about .* per device .* to fit: .*num_microbatches"),
}


@pytest.mark.parametrize("problem", sorted(LAST_STAGE_PROBLEMS))
def test_a_problem_in_the_last_stage_stops_the_run_before_the_first_step(
    problem, tmp_path, shards, model_config, partitioner, monkeypatch):
  monkeypatch.setattr(runner, "train_stage", _no_training)
  kwargs, match = LAST_STAGE_PROBLEMS[problem]
  stages = [_stage(shards, "pretrain"), _stage(shards, "middle"),
            _stage(shards, "finetune", **kwargs)]
  with pytest.raises(ValueError, match=match) as info:
    runner.run(model_dir=str(tmp_path / "run"), stages=stages, model_config=model_config,
               partitioner=partitioner)
  assert str(info.value).startswith("stage 'finetune'")
  assert "\n" not in str(info.value)
  assert not os.path.exists(tmp_path / "run" / "pretrain")


def test_missing_train_data_in_the_last_stage_stops_the_run(tmp_path, shards, model_config,
                                                            partitioner, monkeypatch):
  monkeypatch.setattr(runner, "train_stage", _no_training)
  good = [_stage(shards, "pretrain")]  # built while datacomp1b still points at the shard
  empty = datacomp.task(text_reduction="syntax", train_pattern=str(tmp_path / "none" / "*.tar"))
  with pytest.raises(ValueError, match=r"stage 'finetune': task 'datacomp1b_syntax' finds no "
                                       r"'train' files in .*none"):
    runner.run(model_dir=str(tmp_path / "run"), model_config=model_config,
               partitioner=partitioner, stages=good + [_stage(empty, "finetune")])


def test_unset_data_path_is_reported_with_its_setting(tmp_path, model_config, partitioner,
                                                      monkeypatch):
  monkeypatch.delenv("CLIPA_DATACOMP1B_PATTERN", raising=False)
  name = datacomp.task(train_pattern=None)
  with pytest.raises(ValueError, match=r"No data path for datacomp1b.*DATACOMP1B_DATA"):
    preflight.check_run([_stage(name)], model_config, partitioner)


def test_a_finished_stage_is_not_checked_for_data_or_memory(tmp_path, shards, model_config,
                                                            partitioner):
  (tmp_path / "run" / "pretrain").mkdir(parents=True)
  (tmp_path / "run" / "pretrain" / "stage_summary.json").write_text("{}")
  gone = datacomp.task(text_reduction="syntax", train_pattern=str(tmp_path / "gone" / "*.tar"))
  reports = preflight.check_run([_stage(gone, "pretrain", batch=1 << 20)], model_config,
                                partitioner, str(tmp_path / "run"))
  assert reports[0].skipped and not reports[0].fits


def test_check_only_prints_the_memory_table_and_trains_nothing(tmp_path, shards, model_config,
                                                                partitioner, monkeypatch, capsys):
  monkeypatch.setattr(runner, "train_stage", _no_training)
  rows = runner.run(model_dir=str(tmp_path / "run"), stages=[_stage(shards), _stage(
      shards, "finetune", image=32, mask_ratio=0.5)], model_config=model_config,
                    partitioner=partitioner, check_only=True)
  assert rows == []
  out = capsys.readouterr().out
  assert "memory per device: mesh data=4 x model=1" in out
  lines = [line.split() for line in out.splitlines()]
  assert [row[0] for row in lines if row and row[-1] == "yes"] == ["pretrain", "finetune"]
  assert not os.path.exists(tmp_path / "run")  # --check writes nothing


def test_reports_use_the_same_estimate_as_the_planner(shards, model_config, partitioner):
  stage = _stage(shards, batch=64, image=32, mask_ratio=0.25, num_microbatches=2,
                 optimizer=optimizers.OptimizerConfig(mu_dtype="bfloat16"))
  (report,) = preflight.check_run([stage], model_config, partitioner)
  expected = memory.estimate(model_config, image_size=32, text_length=8, batch_size=64,
                             mesh=memory.mesh_shape(4, 1, partitioner.logical_axis_rules),
                             mask_ratio=0.25, num_microbatches=2, mu_dtype="bfloat16")
  assert report.estimate == expected
  assert report.capacity and "host RAM" in report.where


def test_init_source_reads_a_checkpoint(tmp_path):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  checkpoints.save_params(str(tmp_path / "ckpt"), {"w": jnp.ones(3)}, step=7)
  assert preflight.init_source(None) is None and preflight.init_source("scratch") is None
  where = preflight.init_source(checkpoints.RestoreCheckpointConfig(path=str(tmp_path / "ckpt")))
  assert where.endswith("step 7")
  with pytest.raises((ValueError, FileNotFoundError)):
    preflight.init_source(str(tmp_path / "no_such_model"))


def test_train_data_files_counts_each_tasks_files(shards):
  ((task, _, count),) = preflight.train_data_files(shards, "train")
  assert (task, count) == ("datacomp1b", 1)


# ------------------------------------------------------------- the command line
# Errors that come before any work run train's main in this process (``_train_error``). A
# fresh process (``_train``) where that cannot show it: a batch that would not fit (if the
# check failed, the OOM killer would take the test worker: the point is exit 2, not 137) and
# ``--check`` as a user runs it (one CPU device, not this session's four).
def _train(*args, tmp_path, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             CLIPA_DEMO_DATA=str(tmp_path / "default_demo_data"))
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user runs it
  return subprocess.run([sys.executable, "-m", "clipa_t5x.train", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _last_error(proc):
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  return [line for line in proc.stderr.splitlines() if line.strip()][-1]


def _train_error(*args):
  """The one error line of ``clipa_t5x.train``'s main on ``args``, run in this process."""
  result = entry_points.run(train, *args)
  assert "Traceback" not in result[2], result[2]
  return entry_points.error_line(result)


def test_issue_29_misspelt_macros_stop_before_any_work(tmp_path):
  """The H/14 recipe at toy scale with FINETUNE_224_* instead of FT224_*."""
  line = _train_error("--gin_file=runs/clipav2_h14_84_224.gin", "--gin_file=models/mu8.gin",
                      f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.EVALUATORS=[]",
                      f"--gin.DATACOMP1B_DATA='{tmp_path}/*.tar'", "--gin.PRETRAIN_BATCH_SIZE=16",
                      "--gin.FINETUNE_224_BATCH_SIZE=16", "--gin.FINETUNE_224_STEPS=2")
  assert "FINETUNE_224_BATCH_SIZE -> FT224_BATCH_SIZE" in line
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_a_batch_that_cannot_fit_stops_with_one_line_not_the_oom_killer(tmp_path):
  """The demo's fine-tune at batch 2^18: ~100x this machine's RAM; stopped before stage 1."""
  proc = _train("--gin_file=gin/runs/demo_cpu.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                "--gin.finetune/runner.Stage.batch_size=262144", tmp_path=tmp_path)
  line = _last_error(proc)  # exit 2, not 137
  assert "stage 'finetune' needs about" in line and "host RAM available" in line
  assert "num_microbatches" in line and "remat_policy = 'full'" in line
  assert not os.path.exists(tmp_path / "run" / "pretrain" / "train_metrics.jsonl")


@pytest.mark.slow
def test_check_prints_the_plan_and_memory_and_exits_zero(tmp_path):
  proc = _train("--check", "--gin_file=gin/runs/demo_cpu.gin",
                f"--gin.MODEL_DIR='{tmp_path / 'run'}'", tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert "train GFLOPs" in proc.stdout and "memory per device" in proc.stdout
  assert "check: every stage passed" in proc.stdout
  assert not os.path.exists(tmp_path / "run")
  bad = _train("--check", "--gin_file=gin/runs/demo_cpu.gin",
               f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
               "--gin.finetune/optimizers.OptimizerConfig.warmup_steps=600", tmp_path=tmp_path)
  assert "stage 'finetune': OptimizerConfig: warmup_steps=600" in _last_error(bad)


@pytest.mark.slow
def test_two_process_check_script_runs_check_as_two_hosts():
  """scripts/two_process_check.sh: `train --check` as 2 processes x 2 CPU devices on localhost."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHON"] = sys.executable
  proc = subprocess.run(["bash", "scripts/two_process_check.sh"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert proc.stdout.count("check: every stage passed") == 2
  # The mesh spans both processes: 4 devices in all.
  assert "memory per device: mesh data=4 x model=1" in proc.stdout
