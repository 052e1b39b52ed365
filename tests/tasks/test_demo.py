"""Tests for the demo SeqIO Tasks (tasks/demo.py, installed as clipa_t5x.tasks.demo)."""

import importlib
import importlib.util
import json
import os
import warnings

import numpy as np
import pytest
import seqio

import clipa_t5x.tasks  # noqa: F401  (registers the Tasks)
from clipa_t5x.demo import data as demo_data
from clipa_t5x.demo import generate as demo_generate
from clipa_t5x.data import text_reduction
from clipa_t5x.data.feature_converter import ImageTextFeatureConverter
from clipa_t5x.tasks import demo

LENGTHS = {"image": 32, "text": 8}
SMALL = dict(num_train=64, num_eval=60, image_size=48, num_train_shards=4)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("demo") / "demo_shapes")
  demo.register(demo_data.DemoData(path, **SMALL))
  yield path
  demo.register()  # back to the default location


def _import_again(module):
  """Runs ``module``'s code once more, as a second import under another name would.

  Into a new module object: ``importlib.reload`` would replace the functions of the one in
  ``sys.modules``, and gin, which registered the old ``demo.eval_task`` when a gin file
  named it, refuses the new one ("A different configurable ... already exists") in every
  later test of the process that parses a demo gin file.
  """
  spec = importlib.util.spec_from_file_location(module.__name__, module.__file__)
  spec.loader.exec_module(importlib.util.module_from_spec(spec))


_GIN_NAMING_THE_EVAL_TASK = """
from __gin__ import dynamic_registration
from clipa_t5x.tasks import demo
demo.eval_task.data = None
"""


def test_tasks_registered_and_reimport_is_idempotent(clean_gin):
  import gin  # pylint: disable=import-outside-toplevel
  names = ["demo_shapes", "demo_shapes_syntax", "demo_shapes_random",
           "demo_shapes_block", "demo_shapes_eval"]
  for name in names:
    assert name in seqio.TaskRegistry.names()
  assert "demo_shapes_mix" in seqio.MixtureRegistry.names()
  gin.parse_config(_GIN_NAMING_THE_EVAL_TASK)  # gin registers demo.eval_task
  _import_again(demo)  # raises "duplicate provider" if not idempotent
  gin.clear_config()
  gin.parse_config(_GIN_NAMING_THE_EVAL_TASK)  # the process's demo module is unchanged
  demo.register()
  mix = seqio.get_mixture_or_task("demo_shapes_mix")
  assert sorted(t.name for t in mix.tasks) == ["demo_shapes",
                                               "demo_shapes_syntax"]
  assert demo.class_names()[0] == "red circle" and len(demo.class_names()) == 20


def test_data_dir_precedence(monkeypatch):
  monkeypatch.setenv("CLIPA_DEMO_DATA", "/somewhere/else")
  assert demo_data.DemoData().root() == "/somewhere/else"
  monkeypatch.delenv("CLIPA_DEMO_DATA")
  assert demo_data.DemoData().root().endswith(os.path.join(".cache", "clipa_t5x",
                                                           "demo_shapes"))
  assert demo_data.DemoData("/explicit").root() == "/explicit"


def test_data_is_generated_lazily_when_files_are_listed(tmp_path):
  try:
    data = demo_data.DemoData(str(tmp_path / "lazy"), num_train=8, num_eval=30,
                              image_size=24, num_train_shards=2)
    assert demo.task("syntax", data) == "demo_shapes_syntax"
    source = seqio.get_mixture_or_task("demo_shapes_syntax").source
    assert not (tmp_path / "lazy").exists()  # registering made nothing
    assert [os.path.basename(f) for f in source.list_shards("train")] == [
        "train-00000.tar", "train-00001.tar"]
    assert demo_generate.read_manifest(str(tmp_path / "lazy"))["params"]["image_size"] == 24
    assert demo_data.eval_files(data) == str(tmp_path / "lazy" / "eval-*.tar")
    jpegs, labels = data.eval_examples(4)
    assert len(jpegs) == 4 and labels == [0, 1, 2, 3]
  finally:
    demo.register()


def test_task_factories_return_the_names_gin_puts_in_a_stage(tmp_path):
  data = demo_data.DemoData(str(tmp_path / "d"))
  try:
    assert [demo.task(m, data) for m in ("truncate", "syntax", "random", "block")] == [
        "demo_shapes", "demo_shapes_syntax", "demo_shapes_random", "demo_shapes_block"]
    assert demo.eval_task(data) == "demo_shapes_eval"
    with pytest.raises(ValueError, match="text_reduction must be one of"):
      demo.task("summarise", data)
  finally:
    demo.register()


def test_unknown_generator_parameter_is_named():
  with pytest.raises(ValueError, match=r"Unknown demo data parameters \['colours'\]"):
    demo_data.DemoData.from_kwargs("/x", colours=3)


def test_deprecated_configure_re_registers_without_module_state(tmp_path):
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      demo.configure(str(tmp_path / "old"), num_train=8, num_eval=20, num_train_shards=1)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    files = seqio.get_mixture_or_task("demo_shapes_eval").source.list_shards("eval")
    assert os.path.dirname(files[0]) == str(tmp_path / "old")
    assert not hasattr(demo, "DEMO_DATA_DIR")
  finally:
    demo.register()


def test_train_batch_from_seqio_get_dataset(data_dir):
  ds = seqio.get_dataset(
      "demo_shapes", task_feature_lengths=LENGTHS,
      feature_converter=ImageTextFeatureConverter(pack=False),
      dataset_split="train", shuffle=True, num_epochs=1, seed=0,
      shard_info=seqio.ShardInfo(index=0, num_shards=2), batch_size=8)
  batch = next(ds.as_numpy_iterator())
  assert demo_generate.read_manifest(data_dir)["params"]["num_train"] == 64
  assert set(batch) == {"image", "text"}
  assert batch["image"].shape == (8, 32, 32, 3)
  assert batch["image"].dtype == np.uint8
  assert batch["text"].shape == (8, 8) and batch["text"].dtype == np.int32
  assert (batch["text"][:, 0] == 101).all()  # [CLS] first
  assert (batch["text"][:, 1] > 0).all()  # captions are never empty
  assert batch["image"].std() > 10


def test_eval_task_keeps_balanced_labels(data_dir):
  task = seqio.get_mixture_or_task("demo_shapes_eval")
  examples = list(task.get_dataset(LENGTHS, split="eval", shuffle=False)
                  .as_numpy_iterator())
  assert len(examples) == 60
  assert set(examples[0]) == {"image", "text", "label"}
  assert examples[0]["image"].shape == (32, 32, 3)
  labels = np.array([e["label"] for e in examples])
  assert labels.dtype == np.int32
  assert np.bincount(labels, minlength=20).tolist() == [3] * 20
  with open(os.path.join(data_dir, "classes.json")) as f:
    assert json.load(f) == demo.class_names()


@pytest.mark.slow
def test_mixture_and_syntax_variant_give_batches(data_dir):
  for name in ("demo_shapes_mix", "demo_shapes_syntax"):
    ds = seqio.get_dataset(
        name, task_feature_lengths=LENGTHS,
        feature_converter=ImageTextFeatureConverter(pack=False),
        dataset_split="train", shuffle=False, num_epochs=1, seed=1,
        batch_size=4)
    batch = next(ds.as_numpy_iterator())
    assert batch["image"].shape == (4, 32, 32, 3)
    assert (batch["text"][:, 0] == 101).all()


def test_glyph_tasks_have_their_own_names_labels_and_mixture(tmp_path):
  from clipa_t5x.demo.scenes import glyphs as demo_glyphs  # pylint: disable=import-outside-toplevel
  data = demo_data.DemoData(str(tmp_path / "glyphs"), num_train=40, num_eval=20,
                            image_size=32, num_train_shards=2, scene="glyphs")
  try:
    demo.register(data)
    for name in ("demo_glyphs", "demo_glyphs_syntax", "demo_glyphs_eval"):
      assert name in seqio.TaskRegistry.names()
    mix = seqio.get_mixture_or_task("demo_glyphs_mix")
    assert sorted(t.name for t in mix.tasks) == ["demo_glyphs", "demo_glyphs_syntax"]
    examples = list(seqio.get_mixture_or_task("demo_glyphs_eval")
                    .get_dataset({"image": 16, "text": 8}, split="eval", shuffle=False)
                    .as_numpy_iterator())
    assert examples[0]["image"].shape == (16, 16, 3)
    assert np.bincount([e["label"] for e in examples]).tolist() == [2] * 10
    ds = seqio.get_dataset(
        "demo_glyphs_syntax", task_feature_lengths={"image": 24, "text": 8},
        feature_converter=ImageTextFeatureConverter(pack=False), dataset_split="train",
        shuffle=False, num_epochs=1, seed=0, batch_size=40)
    batch = next(ds.as_numpy_iterator())
    assert batch["image"].shape == (40, 24, 24, 3)
    # Syntax masking keeps the letter in every caption, long ones included.
    letters = {int(t[1]) for t in text_reduction.tokenize_texts(
        [l.lower() for l in demo_glyphs.LETTERS], 2, "truncate")}
    assert all(letters & set(row.tolist()) for row in batch["text"])
    # Resize-only glyph Tasks replay from memory; augmented or randomly reduced ones do not.
    from clipa_t5x.data import dataset  # pylint: disable=import-outside-toplevel
    assert dataset.is_in_memory("demo_glyphs") and dataset.is_in_memory("demo_glyphs_syntax")
    assert not dataset.is_in_memory("demo_glyphs_random")
    assert not dataset.is_in_memory("demo_shapes")
    # The shapes Tasks are untouched by the glyph registration.
    assert demo.class_names()[0] == "red circle"
  finally:
    demo.register(demo_data.DemoData(scene="glyphs"))
