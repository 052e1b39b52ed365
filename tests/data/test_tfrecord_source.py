"""Tests for clipa_t5x.data.tfrecord_source (img2dataset TFRecord output)."""

import io
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
from PIL import Image

from clipa_t5x.data import bad_records
from clipa_t5x.data.tfrecord_source import (TFRecordSource, split_tfrecords,
                                            write_img2dataset_tfrecord)


def _jpeg(seed):
  img = np.random.default_rng(seed).integers(0, 256, (8, 10, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "JPEG")
  return buf.getvalue()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tfr"))
  for f in range(4):
    write_img2dataset_tfrecord(
        os.path.join(root, f"{f:05d}.tfrecord"),
        [{"key": f"{f:05d}{i:04d}", "image": _jpeg(f * 10 + i),
          "text": f"caption {f} {i}", "width": 10, "height": 8}
         for i in range(5)])
  return root


def _keys(ds):
  return [e["key"].decode() for e in ds.as_numpy_iterator()]


def test_reads_every_record_as_raw_examples(data_dir):
  source = TFRecordSource({"train": os.path.join(data_dir, "*.tfrecord")})
  ds = source.get_dataset("train", shuffle=False)
  assert set(ds.element_spec) == {"key", "image", "text"}
  examples = {e["key"].decode(): e for e in ds.as_numpy_iterator()}
  assert len(examples) == 20
  ex = examples["000020003"]
  assert ex["image"] == _jpeg(23) and ex["text"] == b"caption 2 3"
  # Same records as TF's own reader.
  native = list(tf.data.TFRecordDataset(
      os.path.join(data_dir, "00001.tfrecord")).as_numpy_iterator())
  content = open(os.path.join(data_dir, "00001.tfrecord"), "rb").read()
  records, complete = split_tfrecords(tf.constant(content))
  assert list(records.numpy()) == native and bool(complete)


@pytest.mark.parametrize("num_shards", [1, 2, 4])
def test_file_level_sharding_is_disjoint_and_complete(data_dir, num_shards):
  source = TFRecordSource({"train": os.path.join(data_dir, "*.tfrecord")})
  seen = []
  for index in range(num_shards):
    keys = _keys(source.get_dataset(
        "train", seed=3, shard_info=seqio.ShardInfo(index, num_shards)))
    assert {int(k[:5]) % num_shards for k in keys} == {index}
    seen += keys
  assert sorted(seen) == sorted(_keys(source.get_dataset("train")))
  with pytest.raises(ValueError, match="4 TFRecord files but 5 shards"):
    source.get_dataset("train", shard_info=seqio.ShardInfo(0, 5))


def test_bad_records_and_truncated_file(tmp_path):
  path = str(tmp_path / "bad.tfrecord")
  write_img2dataset_tfrecord(path, [
      {"key": "a", "image": _jpeg(0), "text": "fine"},
      {"key": "b", "image": _jpeg(1), "text": None},      # no caption
      {"key": "c", "image": _jpeg(2), "text": "  "},      # empty caption
      {"key": "d", "image": None, "text": "no image"},
      {"key": None, "image": _jpeg(3), "text": b"caf\xe9"},
      {"key": "f", "image": _jpeg(4), "text": "cut off"},
  ], caption_key="caption")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:-20])  # inside the last record
  before = bad_records.snapshot()
  source = TFRecordSource({"train": path}, caption_key="caption")
  examples = list(source.get_dataset("train").as_numpy_iterator())
  assert [e["key"] for e in examples] == [b"a", b"bad.tfrecord:4"]
  assert examples[1]["text"] == "caf\ufffd".encode()
  after = bad_records.snapshot()
  delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
  assert delta == {"missing_caption": 2, "missing_image": 1,
                   "incomplete_sample": 3, "bad_caption_utf8": 1,
                   "corrupt_shard": 1}


def test_clear_errors():
  with pytest.raises(ValueError, match="distinct"):
    TFRecordSource({"train": "x"}, caption_key="jpg")
  with pytest.raises(ValueError, match="No TFRecord files match"):
    TFRecordSource({"train": "/nonexistent/*.tfrecord"}).get_dataset("train")
  with pytest.raises(ValueError, match="Unknown split"):
    TFRecordSource({"train": "x"}).get_dataset("validation")
