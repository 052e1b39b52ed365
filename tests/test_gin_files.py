"""Every shipped gin file parses and wires a runnable recipe (no training)."""

import glob
import os

import pytest

from clipa_t5x import gin_utils
from clipa_t5x import runner
from clipa_t5x.models import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FILES = sorted(glob.glob(os.path.join(ROOT, "gin", "models", "*.gin")))
PARTITIONING_FILES = sorted(glob.glob(os.path.join(ROOT, "gin", "partitioning", "*.gin")))


pytestmark = pytest.mark.usefixtures("clean_gin")  # fixtures in conftest.py


def _run(files, bindings, tmp_path):
  gin_utils.parse_gin_flags(files, [f"MODEL_DIR = '{tmp_path}'"] + bindings)
  return gin_utils.configured(runner.run)()


def test_demo_cpu_wires_two_stages(captured, tmp_path):
  rows = _run(["gin/runs/demo_cpu.gin"], [], tmp_path)
  stages = [c[0] for c in captured]
  assert [s.name for s in stages] == ["pretrain", "finetune"]
  assert dict(stages[0].task_feature_lengths) == {"image": 32, "text": 8}
  assert dict(stages[1].task_feature_lengths)["text"] == 32
  assert stages[1].mask_ratio > 0
  assert captured[1][1] == os.path.join(str(tmp_path), "pretrain")  # hand-off from pretrain
  kwargs = captured[0][2]
  assert kwargs["model_config"] == configs.get_config("Mu/8")
  assert kwargs["evaluators"][0].task == "demo_shapes_eval"
  assert [r["stage"] for r in rows] == ["pretrain", "finetune"]
  assert os.path.exists(tmp_path / "summary.json")


@pytest.mark.parametrize("model_file", MODEL_FILES, ids=os.path.basename)
@pytest.mark.parametrize("partitioning_file", PARTITIONING_FILES, ids=os.path.basename)
def test_single_stage_run_with_t5x_macros(captured, tmp_path, model_file, partitioning_file):
  _run(["gin/runs/pretrain.gin", model_file, partitioning_file],
       ["MIXTURE_OR_TASK_NAME = 'demo_shapes'", "TASK_FEATURE_LENGTHS = {'image': 224, 'text': 32}",
        "TRAIN_STEPS = 10", "BATCH_SIZE = 8"], tmp_path)
  (stage, previous_dir, kwargs), = captured
  assert previous_dir is None
  assert stage.mixture_or_task_name == "demo_shapes" and stage.train_steps == 10
  assert stage.image_size == 224 and stage.text_length == 32 and stage.batch_size == 8
  name = {"ti8": "Ti/8", "mu8": "Mu/8", "s16": "S/16", "b16": "B/16", "l14": "L/14",
          "h14": "H/14", "bigg14": "bigG/14"}[os.path.basename(model_file)[:-4]]
  assert kwargs["model_config"] == configs.get_config(name)
  assert kwargs["partitioner"].mesh.axis_names == ("data", "model")


def test_required_macros_are_reported(tmp_path):
  with pytest.raises(ValueError, match="TRAIN_STEPS|MIXTURE_OR_TASK_NAME|TASK_FEATURE_LENGTHS"):
    _run(["gin/runs/pretrain.gin", "models/ti8.gin", "partitioning/data_parallel.gin"], [],
         tmp_path)
