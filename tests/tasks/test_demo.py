"""Tests for the demo SeqIO Tasks (tasks/demo.py, installed as clipa_t5x.tasks.demo)."""

import importlib
import json
import os

import numpy as np
import pytest
import seqio

import clipa_t5x.tasks  # noqa: F401  (registers the Tasks)
from clipa_t5x.data import demo_shapes
from clipa_t5x.data.feature_converter import ImageTextFeatureConverter
from clipa_t5x.tasks import demo

LENGTHS = {"image": 32, "text": 8}
SMALL = dict(num_train=64, num_eval=60, image_size=48, num_train_shards=4)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("demo") / "demo_shapes")
  old = demo.DEMO_DATA_DIR, demo.DEMO_DATA_KWARGS
  demo.configure(path, **SMALL)
  yield path
  demo.DEMO_DATA_DIR, demo.DEMO_DATA_KWARGS = old


def test_tasks_registered_and_reimport_is_idempotent():
  names = ["demo_shapes", "demo_shapes_syntax", "demo_shapes_random",
           "demo_shapes_block", "demo_shapes_eval"]
  for name in names:
    assert name in seqio.TaskRegistry.names()
  assert "demo_shapes_mix" in seqio.MixtureRegistry.names()
  saved = demo.DEMO_DATA_DIR, demo.DEMO_DATA_KWARGS
  try:
    importlib.reload(demo)  # raises "duplicate provider" if not idempotent
    demo.register()
  finally:
    demo.DEMO_DATA_DIR, demo.DEMO_DATA_KWARGS = saved
  mix = seqio.get_mixture_or_task("demo_shapes_mix")
  assert sorted(t.name for t in mix.tasks) == ["demo_shapes",
                                               "demo_shapes_syntax"]
  assert demo.class_names()[0] == "red circle" and len(demo.class_names()) == 20


def test_data_dir_precedence(monkeypatch):
  old = demo.DEMO_DATA_DIR
  try:
    demo.DEMO_DATA_DIR = None
    monkeypatch.setenv("CLIPA_DEMO_DATA", "/somewhere/else")
    assert demo.data_dir() == "/somewhere/else"
    monkeypatch.delenv("CLIPA_DEMO_DATA")
    assert demo.data_dir().endswith(os.path.join(".cache", "clipa_t5x",
                                                 "demo_shapes"))
    demo.DEMO_DATA_DIR = "/explicit"
    assert demo.data_dir() == "/explicit"
  finally:
    demo.DEMO_DATA_DIR = old


def test_data_is_generated_lazily_when_files_are_listed(tmp_path):
  saved = demo.DEMO_DATA_DIR, demo.DEMO_DATA_KWARGS
  try:
    demo.configure(str(tmp_path / "lazy"), num_train=8, num_eval=30,
                   image_size=24, num_train_shards=2)
    source = seqio.get_mixture_or_task("demo_shapes").source
    assert not (tmp_path / "lazy").exists()  # registering made nothing
    assert [os.path.basename(f) for f in source.list_shards("train")] == [
        "train-00000.tar", "train-00001.tar"]
    assert demo_shapes.read_manifest(str(tmp_path / "lazy")) is not None
  finally:
    demo.DEMO_DATA_DIR, demo.DEMO_DATA_KWARGS = saved


def test_train_batch_from_seqio_get_dataset(data_dir):
  ds = seqio.get_dataset(
      "demo_shapes", task_feature_lengths=LENGTHS,
      feature_converter=ImageTextFeatureConverter(pack=False),
      dataset_split="train", shuffle=True, num_epochs=1, seed=0,
      shard_info=seqio.ShardInfo(index=0, num_shards=2), batch_size=8)
  batch = next(ds.as_numpy_iterator())
  assert demo_shapes.read_manifest(data_dir)["params"]["num_train"] == 64
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
