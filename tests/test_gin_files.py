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


@pytest.fixture
def default_registrations():
  """Registers the demo and DataComp Tasks at their default locations again afterwards."""
  yield
  from clipa_t5x.tasks import datacomp, demo  # pylint: disable=import-outside-toplevel
  demo.register()
  datacomp.register()


def _files_of(task_name, split):
  """The files a registered Task's source lists for ``split`` (the demo data is made)."""
  import seqio  # pylint: disable=import-outside-toplevel
  return seqio.get_mixture_or_task(task_name).source.list_shards(split)


SMALL_DEMO = ["demo_data.DemoData.num_train = 16", "demo_data.DemoData.num_eval = 20",
              "demo_data.DemoData.num_train_shards = 2"]


def test_demo_data_location_is_a_gin_argument(captured, tmp_path, default_registrations):
  """DEMO_DATA reaches every demo Task the run names; runner.run needs no hook for it."""
  from clipa_t5x.demo import generate as demo_generate  # pylint: disable=import-outside-toplevel
  data_dir = tmp_path / "demo_data"
  _run(["gin/runs/demo_cpu.gin"], [f"demo_data.DemoData.data_dir = '{data_dir}'", *SMALL_DEMO],
       tmp_path / "run")
  stages = [c[0] for c in captured]
  assert [s.mixture_or_task_name for s in stages] == ["demo_shapes_syntax", "demo_shapes"]
  assert captured[0][2]["evaluators"][0].task == "demo_shapes_eval"
  assert not data_dir.exists()  # registering lists no files
  for name, split, count in (("demo_shapes_syntax", "train", 2), ("demo_shapes", "train", 2),
                             ("demo_shapes_eval", "eval", 1)):
    files = _files_of(name, split)
    assert len(files) == count and {os.path.dirname(f) for f in files} == {str(data_dir)}
  assert demo_generate.read_manifest(str(data_dir))["params"]["num_train"] == 16


def test_eval_demo_binds_the_data_location(tmp_path, default_registrations):
  data_dir = str(tmp_path / "demo_data")
  gin_utils.parse_gin_flags(["gin/runs/eval_demo.gin"],
                            ["CHECKPOINT_PATH = '/nowhere'",
                             f"demo_data.DemoData.data_dir = '{data_dir}'", *SMALL_DEMO])
  zeroshot, retrieval = gin_utils.query_macro("EVALUATORS")
  assert zeroshot.task == "demo_shapes_eval"
  assert {os.path.dirname(f) for f in _files_of("demo_shapes_eval", "eval")} == {data_dir}
  assert retrieval.source is not None


@pytest.mark.parametrize("run_file", ["clipav2_h14_70_224", "clipav2_l14_84_224_336"])
def test_datacomp_location_is_one_macro(captured, tmp_path, run_file, default_registrations):
  import seqio  # pylint: disable=import-outside-toplevel
  _run([f"gin/runs/{run_file}.gin"],
       ["DATACOMP1B_DATA = '/data/dc/*.tar'", "EVALUATORS = []"], tmp_path)
  stages = [c[0] for c in captured]
  assert stages[0].mixture_or_task_name == "datacomp1b_syntax"
  assert {s.mixture_or_task_name for s in stages[1:]} == {"datacomp1b"}
  for name in ("datacomp1b_syntax", "datacomp1b"):
    assert seqio.get_mixture_or_task(name).source.corpus.pattern() == ("/data/dc/*.tar",)


def test_no_gin_file_needs_a_before_run_hook():
  for path in glob.glob(os.path.join(ROOT, "gin", "**", "*.gin"), recursive=True):
    with open(path, encoding="utf-8") as f:
      text = f.read()
    assert "before_run" not in text and ".configure" not in text, path
