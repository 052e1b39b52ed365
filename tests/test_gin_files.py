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
  assert dict(stages[1].task_feature_lengths) == {"image": 48, "text": 16}  # larger, whole captions
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


@pytest.fixture(scope="module")
def released(tmp_path_factory):
  """A tiny Ti/8 model as an official .npz, an open_clip folder and a clipa_t5x stage."""
  import sys  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
  import interop_helpers  # pylint: disable=import-outside-toplevel
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x.interop import clipa_jax, open_clip  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import config_io  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("released")
  params = interop_helpers.random_params("Ti/8", 16, 8)
  stage = str(root / "run" / "finetune")
  checkpoints.save_params(stage, params, step=4)
  config_io.write_model_config(stage, configs.get_config("Ti/8"), 16, 8)
  folder = open_clip.export_open_clip(params, configs.get_config("Ti/8"), str(root / "oc"), 16)
  return {"npz": clipa_jax.save(params, str(root / "clipa.npz")), "open_clip": folder,
          "weights": os.path.join(folder, open_clip.WEIGHTS_FILE), "checkpoint": stage}


@pytest.mark.parametrize("source", ["npz", "open_clip", "checkpoint", "weights"])
def test_finetune_released_wires_clipav2_fine_tune(captured, tmp_path, released, source):
  model = ["MODEL = 'Ti/8'"] if source == "weights" else []
  _run(["gin/runs/finetune_released.gin"],
       [f"INIT_FROM = '{released[source]}'", "TRAIN_DATA = '/data/shards/{00000..00009}.tar'",
        "EVALUATORS = []", *model], tmp_path)
  (ft224, previous, kwargs), (ft336, previous_336, _) = captured
  assert kwargs["model_config"] == configs.get_config("Ti/8", remat_policy="full")
  assert (ft224.name, ft224.image_size, ft224.text_length) == ("finetune_224", 224, 32)
  assert (ft336.name, ft336.image_size, ft336.text_length) == ("finetune_336", 336, 32)
  assert (ft224.mask_ratio, ft336.mask_ratio) == (0.3, 0.4)
  assert (ft224.optimizer.base_learning_rate, ft336.optimizer.base_learning_rate) == (4e-7, 1e-7)
  assert ft224.init_from == released[source] and previous is None
  assert ft336.init_from is None and previous_336 == os.path.join(str(tmp_path), "finetune_224")
  assert ft224.mixture_or_task_name.startswith("user_data")
  assert ft336.mixture_or_task_name.startswith("user_data")


def test_finetune_released_names_a_missing_model(captured, tmp_path, released):
  with pytest.raises(ValueError, match="weights file without a model: name it"):
    _run(["gin/runs/finetune_released.gin"],
         [f"INIT_FROM = '{released['weights']}'", "TRAIN_DATA = '/d/x.tar'", "EVALUATORS = []"],
         tmp_path)
  import gin  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  with pytest.raises(ValueError, match="disagrees"):
    _run(["gin/runs/finetune_released.gin"],
         [f"INIT_FROM = '{released['npz']}'", "TRAIN_DATA = '/d/x.tar'", "EVALUATORS = []",
          "MODEL = 'Mu/8'"], tmp_path)


@pytest.mark.parametrize("eval_file", ["eval_custom_data", "eval_imagenet", "eval_zeroshot_suite",
                                       "eval_demo"])
def test_eval_files_take_the_model_from_the_checkpoint(eval_file, tmp_path):
  """No eval file names a model: the checkpoint's recorded one (and its sizes) is used."""
  for i in range(1000):
    os.makedirs(tmp_path / "imagenet1k" / f"n{i:08d}", exist_ok=True)
  bindings = {"eval_custom_data": ["EVAL_DATA = '/d/{0..1}.tar'", "CLASS_NAMES = 'a,b'"],
              "eval_imagenet": [f"IMAGENET_DATA = '{tmp_path / 'imagenet1k'}'"],
              "eval_zeroshot_suite": [f"ZEROSHOT_DATA = '{tmp_path}'"],
              "eval_demo": [f"demo_data.DemoData.data_dir = '{tmp_path / 'demo'}'"]}[eval_file]
  gin_utils.parse_gin_flags([f"gin/runs/{eval_file}.gin"],
                            ["CHECKPOINT_PATH = '/nowhere'", *bindings])
  import gin  # pylint: disable=import-outside-toplevel
  for macro in ("MODEL_CONFIG", "EVAL_IMAGE_SIZE", "EVAL_TEXT_LENGTH"):
    assert gin.query_parameter(f"%{macro}") is None, macro
  assert gin_utils.query_macro("EVALUATORS")


def test_loss_and_optimizer_macros_reach_the_model_and_every_stage(captured, tmp_path):
  _run(["gin/runs/demo_cpu.gin"], ["LOSS = 'sigmoid'", "OPTIMIZER = 'lion'"], tmp_path)
  stages = [c[0] for c in captured]
  assert captured[0][2]["model_config"] == configs.get_config("Mu/8", loss="sigmoid")
  assert [s.optimizer.name for s in stages] == ["lion", "lion"]
  # The demo's own scoped learning rates stay.
  assert stages[0].optimizer.base_learning_rate == 2e-3
  # The few-shot probe runs beside zero-shot.
  assert [type(e).__name__ for e in captured[0][2]["evaluators"]] == [
      "ZeroShotEvalConfig", "FewShotEvalConfig"]


def test_softmax_and_adamw_are_the_defaults(captured, tmp_path):
  _run(["gin/runs/demo_cpu.gin"], [], tmp_path)
  assert captured[0][2]["model_config"].loss == "softmax"
  assert {c[0].optimizer.name for c in captured} == {"adamw"}


def test_lion_gin_sets_the_official_bigg_finetune_settings(captured, tmp_path):
  _run(["gin/runs/clipav2_bigg14_84_224.gin", "gin/optimizers/lion.gin"],
       ["DATACOMP1B_DATA = 'unused'", "EVALUATORS = []"], tmp_path)
  stages = {c[0].name: c[0] for c in captured}
  finetune = stages["finetune_224"].optimizer
  assert (finetune.name, finetune.base_learning_rate, finetune.weight_decay) == (
      "lion", 8e-8, 2.0)
  assert (finetune.b1, finetune.b2, finetune.mu_dtype) == (0.9, 0.95, "bfloat16")
  assert stages["pretrain"].optimizer.name == "lion"


def _reset(captured):
  """Forgets the parsed gin files and the recorded stages, to parse another run file."""
  import gin  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  captured.clear()


def test_demo_sigmoid_is_the_demo_with_the_sigmoid_loss_and_a_warmer_start(captured, tmp_path):
  import math  # pylint: disable=import-outside-toplevel
  _run(["gin/runs/demo_sigmoid.gin"], [], tmp_path)
  demo = captured[:]
  _reset(captured)
  _run(["gin/runs/demo_cpu.gin"], [], tmp_path)
  model = demo[0][2]["model_config"]
  assert (model.loss, model.init_logit_bias) == ("sigmoid", -10.0)
  assert math.isclose(model.init_log_temperature, math.log(20.0))
  # Everything else is the softmax demo's: stages, optimizers, evaluators.
  assert [c[0] for c in demo] == [c[0] for c in captured]
  assert demo[0][2]["evaluators"] == captured[0][2]["evaluators"]


def test_demo_lion_rescales_both_stages_learning_rate_and_decay(captured, tmp_path):
  _run(["gin/runs/demo_cpu.gin"], [], tmp_path)
  adamw = {c[0].name: c[0].optimizer for c in captured}
  _reset(captured)
  _run(["gin/runs/demo_lion.gin"], [], tmp_path)
  lion = {c[0].name: c[0].optimizer for c in captured}
  assert captured[0][2]["model_config"].loss == "softmax"
  assert set(lion) == set(adamw) == {"pretrain", "finetune"}
  for stage in lion:
    assert lion[stage].name == "lion" and adamw[stage].name == "adamw"
    assert lion[stage].base_learning_rate == pytest.approx(adamw[stage].base_learning_rate / 10)
    assert lion[stage].weight_decay == pytest.approx(adamw[stage].weight_decay * 10)
    assert lion[stage].warmup_steps == adamw[stage].warmup_steps
  # Everything but the optimizer is the AdamW demo's: steps, token lengths, evaluators.
  lion_stages = [c[0] for c in captured]
  _reset(captured)
  _run(["gin/runs/demo_cpu.gin"], [], tmp_path)
  adamw_stages = [c[0] for c in captured]
  assert [(s.train_steps, s.task_feature_lengths) for s in lion_stages] == [
      (s.train_steps, s.task_feature_lengths) for s in adamw_stages]
