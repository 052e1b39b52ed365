"""Tests for the LAION-2B Tasks (tasks/laion.py, as clipa_t5x.tasks.laion)."""

import io
import os
import tarfile

import numpy as np
import pytest
import seqio
from PIL import Image

import clipa_t5x.tasks  # noqa: F401  (registers the Tasks)
from clipa_t5x.data import bad_records
from clipa_t5x.data.tfrecord_source import write_img2dataset_tfrecord
from clipa_t5x.tasks import laion

LENGTHS = {"image": 16, "text": 8}


def _jpeg(seed, size=(24, 30)):
  img = np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "JPEG")
  return buf.getvalue()


def _samples(shard, n=4):
  return [(f"{shard:03d}{i:03d}", _jpeg(shard * 10 + i),
           f"a photo of the number {i} on a red wall") for i in range(n)]


def write_webdataset(root, num_shards=2, n=4):
  os.makedirs(root, exist_ok=True)
  for s in range(num_shards):
    with tarfile.open(os.path.join(root, f"{s:05d}.tar"), "w") as tar:
      for key, jpg, text in _samples(s, n):
        for ext, data in (("jpg", jpg), ("txt", text.encode())):
          info = tarfile.TarInfo(f"{key}.{ext}")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  return os.path.join(root, "*.tar")


def write_tfrecords(root, num_shards=2, n=4):
  for s in range(num_shards):
    write_img2dataset_tfrecord(
        os.path.join(root, f"{s:05d}.tfrecord"),
        [{"key": k, "image": j, "text": t} for k, j, t in _samples(s, n)])
  return os.path.join(root, "*.tfrecord")


@pytest.fixture
def restore_config():
  """Registers the Tasks at their default location (the environment) again afterwards."""
  yield
  laion.register()


def _check_examples(ds, count):
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == count
  for ex in examples:
    assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.uint8
    assert ex["text"].shape == (8,) and ex["text"].dtype == np.int32
  return examples


def test_tasks_are_registered():
  for name in ("laion2b", "laion2b_syntax"):
    task = seqio.get_mixture_or_task(name)
    assert list(task.splits) == ["train"]


def test_missing_path_is_a_clear_error_at_build_time(monkeypatch,
                                                      restore_config):
  monkeypatch.delenv("CLIPA_LAION2B_PATTERN", raising=False)
  laion.register()
  task = seqio.get_mixture_or_task("laion2b")  # no error: nothing listed yet
  with pytest.raises(ValueError, match=r"--gin\.LAION2B_DATA=.*\$CLIPA_LAION2B_PATTERN"):
    task.get_dataset(LENGTHS, split="train", shuffle=False)


def test_webdataset_from_env_var(tmp_path, monkeypatch, restore_config):
  pattern = write_webdataset(str(tmp_path / "wds"))
  monkeypatch.setenv("CLIPA_LAION2B_PATTERN", pattern)
  monkeypatch.delenv("CLIPA_LAION2B_FORMAT", raising=False)
  laion.register()
  for name in ("laion2b", "laion2b_syntax"):
    assert seqio.get_mixture_or_task(name).source.corpus.resolved_format() == "webdataset"
    ds = seqio.get_mixture_or_task(name).get_dataset(
        LENGTHS, split="train", shuffle=False, seed=0)
    _check_examples(ds, 8)


def test_tfrecord_by_argument_and_sharding(tmp_path, restore_config):
  pattern = write_tfrecords(str(tmp_path))
  assert laion.task(train_pattern=pattern, format="tfrecord") == "laion2b"
  task = seqio.get_mixture_or_task("laion2b")
  total = 0
  for index in range(2):
    ds = task.get_dataset(LENGTHS, split="train", shuffle=False, seed=0,
                          shard_info=seqio.ShardInfo(index, 2))
    total += len(_check_examples(ds, 4))
  assert total == 8
  # Guessed from the extension when no format is given.
  assert laion.task("syntax", train_pattern=pattern) == "laion2b_syntax"
  assert seqio.get_mixture_or_task("laion2b_syntax").source.corpus.resolved_format() == "tfrecord"


def test_bad_format_is_rejected(restore_config):
  with pytest.raises(ValueError, match="format must be one of"):
    laion.task(train_pattern="x", format="parquet")
  with pytest.raises(ValueError, match="text_reduction must be one of"):
    laion.task("block", train_pattern="x")


def test_bad_images_in_a_task_are_skipped_and_counted(tmp_path,
                                                      restore_config):
  root = str(tmp_path)
  write_img2dataset_tfrecord(os.path.join(root, "0.tfrecord"), [
      {"key": "good", "image": _jpeg(0), "text": "fine"},
      {"key": "bad", "image": b"\xff\xd8 not really", "text": "broken"},
      {"key": "good2", "image": _jpeg(1), "text": "also fine"},
  ])
  laion.register(train_pattern=os.path.join(root, "*.tfrecord"))
  before = bad_records.snapshot()["bad_image"]
  ds = seqio.get_mixture_or_task("laion2b").get_dataset(
      LENGTHS, split="train", shuffle=False, seed=0)
  _check_examples(ds, 2)
  assert bad_records.snapshot()["bad_image"] == before + 1
