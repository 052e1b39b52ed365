"""Tests of clipa_t5x.model_dir: the MODEL_DIR layout helpers."""

import os
import subprocess
import sys

from clipa_t5x import model_dir


def test_checkpoint_name_and_step_of_invert_each_other():
  assert model_dir.checkpoint_name(1200) == "checkpoint_1200"
  assert model_dir.step_of("/runs/x/pretrain/checkpoint_1200") == 1200
  assert model_dir.step_of("/runs/x/pretrain/checkpoint_1200/") == 1200
  assert model_dir.step_of("gs://bucket/run/ft/checkpoint_0") == 0
  for other in ["/runs/x/pretrain", "/runs/x/checkpoint_", "/runs/x/checkpoint_12a",
                "/runs/x/corrupt_checkpoint_5_1700000000", "/runs/x/checkpoint_5.orbax-tmp"]:
    assert model_dir.step_of(other) is None, other


def test_set_aside_and_eval_folder_names():
  name = model_dir.corrupt_checkpoint_name(5, 1700000000)
  assert name == "corrupt_checkpoint_5_1700000000" and model_dir.step_of(name) is None
  assert model_dir.eval_dir_name(1200) == "eval_1200"


def test_stage_dir_of():
  assert model_dir.stage_dir_of("/runs/x/pretrain/checkpoint_7") == "/runs/x/pretrain"
  assert model_dir.stage_dir_of("/runs/x/pretrain/") == "/runs/x/pretrain"
  assert model_dir.stage_dir_of("gs://b/run/ft/checkpoint_7") == "gs://b/run/ft"
  assert model_dir.stage_dir_of("checkpoint_7") == "."


def test_checkpoint_dirs_lists_only_step_folders(tmp_path):
  for name in ["checkpoint_10", "checkpoint_20", "corrupt_checkpoint_5_1", "logs"]:
    (tmp_path / name).mkdir()
  (tmp_path / "checkpoint_30").write_text("a file, not a checkpoint folder")
  assert sorted(model_dir.checkpoint_dirs(str(tmp_path))) == ["checkpoint_10", "checkpoint_20"]
  assert model_dir.checkpoint_dirs(str(tmp_path / "missing")) == []


def test_importing_it_pulls_in_no_framework():
  """convert.py relies on this: torch must be importable after it (TF first crashes)."""
  code = ("import sys, clipa_t5x.model_dir; "
          "print(sorted(m for m in ('tensorflow', 'jax', 'torch') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == "[]"
