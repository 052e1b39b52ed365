"""Tests for clipa_t5x/data/user_data.py: locations, format inference, sources."""

import fnmatch
import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from clipa_t5x.data import user_data
from clipa_t5x.data.csv_source import CsvSource
from clipa_t5x.data.sources import WebDatasetSource
from clipa_t5x.data.tfrecord_source import TFRecordSource, write_img2dataset_tfrecord


def _matches(globs, names):
  return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]


@pytest.mark.parametrize("lo,hi,width", [(0, 99, 5), (0, 123, 5), (7, 7, 3), (17, 2345, 4),
                                         (5, 9999, 5), (0, 0, 1)])
def test_padded_range_globs_match_exactly_the_range(lo, hi, width):
  globs = user_data.range_globs(f"{lo:0{width}d}", f"{hi:0{width}d}")
  names = [f"{i:0{width}d}" for i in range(10 ** width)]
  assert _matches(globs, names) == [f"{i:0{width}d}" for i in range(lo, hi + 1)]
  assert len(globs) <= 2 * width + 1  # a few globs, not one per file


def test_unpadded_range_spans_digit_counts():
  globs = user_data.range_globs("3", "1234")
  assert _matches(globs, [str(i) for i in range(20000)]) == [str(i) for i in range(3, 1235)]


def test_locations_commas_braces_lists_and_home():
  patterns = user_data.file_patterns("a/{00000..00009}.tar, b/{x,y}/*.tar")
  assert patterns == ["a/0000[0-9].tar", "b/x/*.tar", "b/y/*.tar"]
  assert user_data.file_patterns(["gs://b/{0..1}.tar", "c.tar"]) == [
      "gs://b/[0-1].tar", "c.tar"]
  assert user_data.file_patterns("~/d/*.tar") == [os.path.expanduser("~/d/*.tar")]
  with pytest.raises(ValueError, match="runs backwards"):
    user_data.file_patterns("{9..1}.tar")
  with pytest.raises(ValueError, match="unbalanced"):
    user_data.file_patterns("x/{0..3.tar")
  with pytest.raises(ValueError, match="TRAIN_DATA is not set"):
    user_data.file_patterns(None, "TRAIN_DATA")


def test_format_is_inferred_from_names_then_files(tmp_path):
  assert user_data.infer_format("x/{0..9}.tar") == "webdataset"
  assert user_data.infer_format("gs://b/train.tfrecord-00000-of-00002") == "tfrecord"
  assert user_data.infer_format("rows.tsv") == "tsv"
  assert user_data.infer_format("x/*", format="tar") == "webdataset"
  (tmp_path / "a.csv").write_text("filepath,title\n")
  assert user_data.infer_format(str(tmp_path / "*")) == "csv"
  (tmp_path / "b.tar").write_bytes(b"")
  with pytest.raises(ValueError, match="MY_DATA: cannot tell the data format"):
    user_data.infer_format(str(tmp_path / "*"), setting="MY_DATA")
  with pytest.raises(ValueError, match="not one of"):
    user_data.infer_format("x.tar", format="parquet")


def test_list_files_warns_about_missing_range_members(tmp_path, caplog):
  for i in (0, 1, 3):
    (tmp_path / f"{i:05d}.tar").write_bytes(b"")
  files = user_data.list_files(str(tmp_path / "{00000..00003}.tar"), "TRAIN_DATA")
  assert [os.path.basename(f) for f in files] == ["00000.tar", "00001.tar", "00003.tar"]
  assert "names 4 files but 3 exist" in caplog.text
  with pytest.raises(ValueError, match="TRAIN_DATA: no files match"):
    user_data.list_files(str(tmp_path / "nothing/*.tar"), "TRAIN_DATA")


def _jpeg(seed, size=(20, 24)):
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8)).save(
      buf, "JPEG")
  return buf.getvalue()


def _tar(path, members):
  with tarfile.open(path, "w") as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_make_source_reads_each_format_with_its_keys(tmp_path):
  root = tmp_path / "wds"
  root.mkdir()
  for s in range(3):
    _tar(root / f"{s:05d}.tar", [m for i in range(2) for m in (
        (f"{s}{i}.webp", _jpeg(i)), (f"{s}{i}.caption", f"cap {s} {i}".encode()))])
  src = user_data.make_source(f"{root}/{{00000..00001}}.tar,{root}/00002.tar",
                              caption_key="caption", image_key="webp")
  assert isinstance(src, WebDatasetSource)
  texts = sorted(ex["text"].decode() for ex in src.get_dataset("train", shuffle=False)
                 .as_numpy_iterator())
  assert texts == [f"cap {s} {i}" for s in range(3) for i in range(2)]

  rec = str(tmp_path / "r.tfrecord")
  write_img2dataset_tfrecord(rec, [{"key": "k", "image": _jpeg(0), "text": "x"}],
                             caption_key="alt", image_key="png")
  src = user_data.make_source(rec, caption_key="alt", image_key="png")
  assert isinstance(src, TFRecordSource)
  assert [ex["text"] for ex in src.get_dataset("train").as_numpy_iterator()] == [b"x"]

  (tmp_path / "img").mkdir()
  (tmp_path / "img" / "a.jpg").write_bytes(_jpeg(1))
  (tmp_path / "rows.tsv").write_text("path\ttext\nimg/a.jpg\ta cat\n")
  src = user_data.make_source(str(tmp_path / "rows.tsv"), image_key="path", caption_key="text")
  assert isinstance(src, CsvSource)  # relative paths: from the TSV's folder
  assert [ex["text"] for ex in src.get_dataset("train").as_numpy_iterator()] == [b"a cat"]
  with pytest.raises(ValueError, match="labels"):
    user_data.make_source(rec, label_key="cls")
