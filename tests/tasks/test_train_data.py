"""train_data.task (tasks/train_data.py) and TRAIN_DATA in the recipes' gin files."""

import glob
import os

import pytest
import seqio

import clipa_t5x.tasks  # noqa: F401  (registers the Tasks)
from clipa_t5x import gin_utils
from clipa_t5x import runner
from clipa_t5x.data import mixtures
from clipa_t5x.tasks import laion
from clipa_t5x.tasks import train_data
import helpers  # tests/helpers.py


_helpers = helpers.shard_writers  # tests/helpers.py


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  return _helpers().write_webdataset(str(tmp_path_factory.mktemp("wds")), 2, 4)


@pytest.fixture
def restore_laion():
  yield
  laion.register()


def test_one_source_of_each_kind(shards, restore_laion):
  name = train_data.task(shards, "syntax")
  assert name.startswith("user_data_wds") and name.endswith("_syntax")
  assert mixtures.origin(name) == shards
  assert train_data.task("demo_shapes", "syntax") == "demo_shapes_syntax"  # the stage's variant
  assert train_data.task("demo_shapes_syntax", "truncate") == "demo_shapes_syntax"
  assert train_data.task("laion2b_datacomp1b_mix", "syntax") == "laion2b_datacomp1b_syntax_mix"
  name = train_data.task("laion2b", "syntax", locations={"laion2b": "/data/laion/*.tar"})
  assert name == "laion2b_syntax"
  assert seqio.get_mixture_or_task(name).source.corpus.pattern() == ("/data/laion/*.tar",)


def test_a_mixture_keeps_each_stage_s_reduction(shards, restore_laion):
  value = {shards: 0.3, "laion2b": 0.7}
  locations = {"laion2b": "/data/laion/*.tar"}
  pre = train_data.task(value, "syntax", locations)
  ft = train_data.task(value, "truncate", locations)
  assert pre != ft and pre == train_data.task(value, "syntax", locations)  # deterministic
  pre_tasks = mixtures.source_tasks(seqio.get_mixture_or_task(pre))
  ft_tasks = mixtures.source_tasks(seqio.get_mixture_or_task(ft))
  assert "laion2b_syntax" in pre_tasks and "laion2b" in ft_tasks
  assert all(t.endswith("_syntax") for t in pre_tasks)
  assert not any(t.endswith("_syntax") for t in ft_tasks)
  record = mixtures.data_record(pre)
  assert {s["source"]: s["rate"] for s in record["sources"]} == pytest.approx(
      {shards: 0.3, "laion2b": 0.7})


def test_bad_entries_are_one_line_errors(shards):
  with pytest.raises(ValueError, match=r"'laoin2b' is neither.*did you mean \['laion2b'"):
    train_data.task({shards: 1, "laoin2b": 1})
  with pytest.raises(ValueError, match="give each source once"):
    train_data.task({"demo_shapes": 1, "demo_shapes_syntax": 1}, "syntax")
  with pytest.raises(ValueError, match="text_reduction"):
    train_data.task(shards, "nouns")


def _parse(files, bindings, tmp_path):
  gin_utils.parse_gin_flags(files, [f"MODEL_DIR = '{tmp_path / 'run'}'", *bindings])
  return gin_utils.configured(runner.run)()


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "gin", "runs", "clipav2_*.gin")))
assert len(RECIPES) == 7, RECIPES


@pytest.mark.usefixtures("clean_gin", "restore_laion")
@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_every_recipe_takes_a_mixture_from_one_flag(captured, tmp_path, shards, recipe):
  _parse([recipe], [f"TRAIN_DATA = {{'{shards}': 0.3, 'laion2b': 0.7}}",
                    "LAION2B_DATA = '/data/laion/{00000..00009}.tar'", "EVALUATORS = []"],
         tmp_path)
  names = [c[0].mixture_or_task_name for c in captured]
  assert len(names) in (2, 3) and all(n.startswith("train_mix_") for n in names)
  assert names[0].endswith("_syntax") and len(set(names[1:])) == 1  # the fine-tunes truncate
  sources = mixtures.resolve_sources(names[0])
  assert [(s.source, s.task) for s in sources] == [
      ("laion2b", "laion2b_syntax"), (shards, sources[1].task)]
  assert sources[0].patterns == ("/data/laion/{00000..00009}.tar",)
  assert sources[1].files == 2


@pytest.mark.usefixtures("clean_gin")
def test_recipe_takes_shards_and_a_stage_can_differ(captured, tmp_path, shards):
  _parse(["gin/runs/clipav2_l14_84_224.gin"],
         [f"TRAIN_DATA = '{shards}'", "FT224_DATA = 'demo_shapes'", "EVALUATORS = []"],
         tmp_path)
  names = [c[0].mixture_or_task_name for c in captured]
  assert names[0].startswith("user_data_") and names[0].endswith("_syntax")
  assert names[1] == "demo_shapes"


@pytest.mark.usefixtures("clean_gin")
def test_stages_reading_different_files_get_different_tasks(captured, tmp_path, shards):
  other = _helpers().write_webdataset(str(tmp_path / "other"), 2, 4)
  _parse(["gin/runs/clipav2_h14_84_224_336.gin"],
         [f"TRAIN_DATA = '{shards}'", f"FT336_DATA = '{other}'", "EVALUATORS = []"], tmp_path)
  ft224, ft336 = (c[0].mixture_or_task_name for c in captured[1:])
  assert ft224 != ft336
  assert (mixtures.origin(ft224), mixtures.origin(ft336)) == (shards, other)


@pytest.mark.usefixtures("clean_gin")
def test_pretrain_gin_takes_train_data(captured, tmp_path):
  _parse(["gin/runs/pretrain.gin", "models/ti8.gin", "partitioning/data_parallel.gin"],
         ["TRAIN_DATA = 'demo_shapes'", "TEXT_REDUCTION = 'syntax'",
          "TASK_FEATURE_LENGTHS = {'image': 32, 'text': 8}", "TRAIN_STEPS = 2"], tmp_path)
  assert captured[0][0].mixture_or_task_name == "demo_shapes_syntax"


@pytest.mark.slow
@pytest.mark.usefixtures("clean_gin")
def test_a_mixture_run_records_rates_and_examples_per_source(tmp_path):
  h = _helpers()
  mine = h.write_webdataset(str(tmp_path / "mine"), 2, 8)
  theirs = h.write_tfrecords(str(tmp_path / "theirs"), 2, 8)
  run_dir = tmp_path / "run"
  gin_utils.parse_gin_flags(["gin/runs/custom_data.gin", "models/ti8.gin"], [
      f"MODEL_DIR = '{run_dir}'", f"TRAIN_DATA = {{'{mine}': 1, '{theirs}': 3}}",
      "PRETRAIN_IMAGE_SIZE = 16", "FINETUNE_IMAGE_SIZE = 16", "PRETRAIN_BATCH_SIZE = 8",
      "FINETUNE_BATCH_SIZE = 8", "PRETRAIN_STEPS = 4", "FINETUNE_STEPS = 2",
      "PRETRAIN_WARMUP_STEPS = 1", "FINETUNE_WARMUP_STEPS = 0", "CHECKPOINT_PERIOD = 100"])
  rows = gin_utils.configured(runner.run)()
  with open(run_dir / "summary.json") as f:
    summary = __import__("json").load(f)
  for row, written, steps in zip(rows, summary, (4, 2)):
    assert row["data"] == written["data"]
    sources = {s["source"]: s for s in written["data"]["sources"]}
    assert sources[mine]["rate"] == pytest.approx(0.25)
    assert sources[theirs]["rate"] == pytest.approx(0.75)
    assert sources[mine]["examples"] + sources[theirs]["examples"] == steps * 8
    with open(run_dir / row["stage"] / "model-info.txt") as f:
      info = f.read()
    assert f"rate  25.0%  {mine}" in info and "examples seen" in info
