"""Tests for clipa_t5x.data.dataset: per-host batched pipelines and eval examples."""

import functools
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf

from clipa_t5x.data import dataset, image_ops, text_reduction
from clipa_t5x.data.feature_converter import output_features
from clipa_t5x.data.sources import WebDatasetSource, select_features
from clipa_t5x.demo import generate as demo_generate
from clipa_t5x.demo.scenes import shapes as demo_shapes

TASK = "dataset_test_shapes"
EVAL_TASK = "dataset_test_shapes_eval"
LENGTHS = {"image": 24, "text": 6}


@pytest.fixture(scope="module", autouse=True)
def tasks(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("data") / "shapes")
  demo_generate.generate(root, num_train=48, num_eval=30, image_size=40,
                         num_train_shards=4)
  source = WebDatasetSource({s: os.path.join(root, f"{s}-*.tar")
                             for s in ("train", "eval")})
  text = functools.partial(text_reduction.tokenize_and_reduce,
                           method="truncate")
  for name in (TASK, EVAL_TASK):
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(TASK, source=source, output_features=output_features(),
                         preprocessors=[
                             functools.partial(select_features,
                                               keys=("image", "text")),
                             image_ops.train_image_preprocessor, text])
  seqio.TaskRegistry.add(EVAL_TASK, source=source,
                         output_features=output_features(),
                         preprocessors=[
                             functools.partial(select_features,
                                               keys=("image", "text", "label")),
                             image_ops.eval_image_preprocessor, text])
  yield root
  seqio.TaskRegistry.remove(TASK)
  seqio.TaskRegistry.remove(EVAL_TASK)


def _cfg(**kw):
  base = dict(mixture_or_task_name=TASK, task_feature_lengths=LENGTHS,
              split="train", batch_size=8, shuffle=True, seed=3)
  return dataset.DatasetConfig(**{**base, **kw})


def test_per_host_batches_shapes_and_cls_first():
  # num_epochs=1: with repeat, the 1000-example shuffle buffer would first
  # fill with dozens of epochs of this tiny data set.
  batch = next(dataset.get_dataset(_cfg(num_epochs=1), shard_id=1,
                                   num_shards=2).as_numpy_iterator())
  assert set(batch) == {"image", "text"}
  assert batch["image"].shape == (4, 24, 24, 3)
  assert batch["image"].dtype == np.uint8
  assert batch["text"].shape == (4, 6) and batch["text"].dtype == np.int32
  assert (batch["text"][:, 0] == 101).all()
  assert batch["image"].std() > 5  # real pictures, not padding


@pytest.mark.slow
def test_hosts_read_disjoint_data_and_seeds_repeat():
  def epoch(shard_id):
    ds = dataset.get_dataset(_cfg(num_epochs=1, shuffle=False, batch_size=4),
                             shard_id=shard_id, num_shards=2)
    return [row.tobytes() for b in ds.as_numpy_iterator() for row in b["text"]]

  host0, host1 = epoch(0), epoch(1)
  assert len(host0) == len(host1) == 24  # files 0,2 and 1,3: 12 each
  # Captions (tokens) differ between hosts' files; an overlap is unlikely.
  assert len(set(host0) & set(host1)) <= 2

  first = lambda: next(dataset.get_dataset(_cfg(seed=11, num_epochs=1), 0, 2)
                       .as_numpy_iterator())
  a, b = first(), first()
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["text"], b["text"])


def test_bad_configs_are_clear_errors():
  with pytest.raises(ValueError, match="10.*3|3.*10"):
    dataset.get_dataset(_cfg(batch_size=10), shard_id=0, num_shards=3)
  with pytest.raises(ValueError, match="outside"):
    dataset.get_dataset(_cfg(), shard_id=2, num_shards=2)
  with pytest.raises(ValueError, match=f"registered: .*{TASK}"):
    dataset.get_dataset(_cfg(mixture_or_task_name="no_such_task"), 0, 1)
  with pytest.raises(ValueError, match="pack"):
    dataset.get_dataset(_cfg(pack=True), 0, 1)
  assert dataset.per_host_batch_size(12, 4) == 3


def test_eval_examples_keep_labels_in_a_fixed_order(tasks):
  ds = dataset.get_eval_examples(EVAL_TASK, "eval", LENGTHS)
  assert set(ds.element_spec) == {"image", "text", "label"}
  examples = list(ds.as_numpy_iterator())
  again = list(dataset.get_eval_examples(EVAL_TASK, "eval", LENGTHS)
               .as_numpy_iterator())
  assert len(examples) == 30
  assert examples[0]["image"].shape == (24, 24, 3)
  assert examples[0]["label"].dtype == np.int32
  # The eval split is balanced: every class, each as often as the others (+-1).
  counts = np.bincount([int(e["label"]) for e in examples],
                       minlength=len(demo_shapes.CLASS_NAMES))
  assert len(counts) == len(demo_shapes.CLASS_NAMES) and counts.min() >= 1
  assert counts.max() - counts.min() <= 1
  for x, y in zip(examples, again):
    assert x["label"] == y["label"]
    np.testing.assert_array_equal(x["image"], y["image"])
  halves = [list(dataset.get_eval_examples(EVAL_TASK, "eval", LENGTHS, i, 2))
            for i in range(2)]
  assert sum(len(h) for h in halves) == 30


def test_iterator_checkpoint_resumes_exactly(tmp_path):
  # t5x/clu save the tf.data iterator; a pure-TF pipeline makes that possible.
  cfg = _cfg(batch_size=4, num_epochs=1, seed=5)
  it = iter(dataset.get_dataset(cfg, 0, 1))
  next(it), next(it)
  path = tf.train.Checkpoint(it=it).write(str(tmp_path / "ckpt"))
  expected = next(it)
  resumed = iter(dataset.get_dataset(cfg, 0, 1))
  tf.train.Checkpoint(it=resumed).read(path).assert_consumed()
  got = next(resumed)
  np.testing.assert_array_equal(got["image"], expected["image"])
  np.testing.assert_array_equal(got["text"], expected["text"])


# ------------------------------------------------- tasks replayed from memory
MEMORY_TASK = "dataset_test_shapes_in_memory"


@pytest.fixture()
def memory_task(tasks):
  """A deterministic Task (square resize, truncation) over the same shards, marked in memory."""
  source = WebDatasetSource({s: os.path.join(tasks, f"{s}-*.tar") for s in ("train", "eval")})
  def register():
    if MEMORY_TASK in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(MEMORY_TASK)
    seqio.TaskRegistry.add(MEMORY_TASK, source=source, output_features=output_features(),
                           preprocessors=[
                               functools.partial(select_features, keys=("image", "text")),
                               image_ops.eval_image_preprocessor,
                               functools.partial(text_reduction.tokenize_and_reduce,
                                                 method="truncate")])
  register()
  dataset.mark_in_memory(MEMORY_TASK)
  yield register
  seqio.TaskRegistry.remove(MEMORY_TASK)
  dataset._IN_MEMORY_TASKS.discard(MEMORY_TASK)  # pylint: disable=protected-access


def _rows(cfg, batches, shard_id=0, num_shards=1):
  it = dataset.get_dataset(cfg, shard_id, num_shards).as_numpy_iterator()
  return [row.tobytes() for _ in range(batches) for row in next(it)["image"]]


@pytest.mark.slow
def test_a_task_marked_in_memory_replays_every_example_once_per_epoch(memory_task):
  assert dataset.is_in_memory(MEMORY_TASK) and not dataset.is_in_memory(TASK)
  cfg = _cfg(mixture_or_task_name=MEMORY_TASK, batch_size=8, seed=1)
  one_pass = sorted(_rows(_cfg(mixture_or_task_name=MEMORY_TASK, batch_size=8,
                               num_epochs=1, shuffle=False), 6))
  replay = _rows(cfg, 18)  # three epochs of 48
  for epoch in range(3):
    assert sorted(replay[48 * epoch:48 * (epoch + 1)]) == one_pass  # each exactly once
  assert replay[:48] != replay[48:96]  # reshuffled every epoch
  # The same seed gives the same stream (also from a second pipeline over the
  # cached pass), another seed another order.
  assert _rows(cfg, 18) == replay
  assert _rows(_cfg(mixture_or_task_name=MEMORY_TASK, batch_size=8, seed=2), 6) != replay[:48]
  # Hosts replay their own files.
  host0 = set(_rows(cfg, 6, 0, 2))  # 6 batches of 4: one epoch of 24
  host1 = set(_rows(cfg, 6, 1, 2))
  assert len(host0) == len(host1) == 24 and not host0 & host1


def test_a_replayed_pipeline_resumes_exactly_and_follows_a_re_registered_task(
    memory_task, tmp_path):
  cfg = _cfg(mixture_or_task_name=MEMORY_TASK, batch_size=8, seed=4)
  it = iter(dataset.get_dataset(cfg, 0, 1))
  for _ in range(8):  # past the first epoch: the cache is complete
    next(it)
  path = tf.train.Checkpoint(it=it).write(str(tmp_path / "ckpt"))
  expected = next(it)
  memory_task()  # re-registered: a new Task object, so a new cached pass
  resumed = iter(dataset.get_dataset(cfg, 0, 1))
  tf.train.Checkpoint(it=resumed).read(path).assert_consumed()
  np.testing.assert_array_equal(next(resumed)["image"], expected["image"])
