"""Tests for clipa_t5x.data.csv_source (image path + caption tables)."""

import io

import numpy as np
import pytest
import seqio
import tensorflow as tf
from PIL import Image

from clipa_t5x.data import bad_records
from clipa_t5x.data.csv_source import CsvSource, _split_row


def _png(seed):
  img = np.random.default_rng(seed).integers(0, 256, (6, 7, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "PNG")
  return buf.getvalue()


@pytest.fixture
def root(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for i in range(6):
    (images / f"{i}.png").write_bytes(_png(i))
  return tmp_path


def test_split_row_handles_quotes():
  row = 'a,"b, with comma","say ""hi""",,e'
  got = [f.decode() for f in _split_row(tf.constant(row), ",").numpy()]
  assert got == ["a", "b, with comma", 'say "hi"', "", "e"]
  got = [f.decode() for f in _split_row(tf.constant("x\ty, z\t"), "\t").numpy()]
  assert got == ["x", "y, z", ""]


def test_reads_rows_with_relative_and_absolute_paths(root):
  absolute = str(root / "images" / "5.png")
  (root / "a.csv").write_text(
      'id,filepath,title\n'
      '0,0.png,"a red, round thing"\n'
      f'1,{absolute},plain caption\n'
      '\n'
      '2,2.png,  spaced  \n')
  source = CsvSource({"train": str(root / "*.csv")},
                     image_root=str(root / "images"))
  examples = list(source.get_dataset("train", shuffle=False)
                  .as_numpy_iterator())
  assert [e["text"] for e in examples] == [b"a red, round thing",
                                           b"plain caption", b"spaced"]
  assert [e["image"] for e in examples] == [_png(0), _png(5), _png(2)]
  assert examples[0]["key"] == b"0.png"


def test_tsv_custom_columns_and_sharding(root):
  for f in range(3):
    lines = ["caption\timage"] + [f"cap {f} {i}\t{f * 2 + i}.png"
                                  for i in range(2)]
    (root / f"part{f}.tsv").write_text("\n".join(lines) + "\n")
  source = CsvSource({"train": str(root / "part*.tsv")}, delimiter="\t",
                     image_column="image", caption_column="caption",
                     image_root=str(root / "images"))
  seen = []
  for index in range(3):
    ds = source.get_dataset("train", seed=0,
                            shard_info=seqio.ShardInfo(index, 3))
    texts = [e["text"].decode() for e in ds.as_numpy_iterator()]
    assert {t.split()[1] for t in texts} == {str(index)}
    seen += texts
  assert len(seen) == 6


def test_bad_rows_are_skipped_and_counted(root):
  (root / "b.csv").write_text(
      "filepath,title\n"
      "0.png,good\n"
      ",no image\n"
      "1.png,\n"
      "missing.png,file is gone\n"
      "only_one_field\n"
      "3.png,also good\n", encoding="latin-1")
  with open(root / "b.csv", "ab") as f:
    f.write(b"4.png,caf\xe9\ngone.png,last row, file missing\n")
  before = bad_records.snapshot()
  source = CsvSource({"train": str(root / "b.csv")},
                     image_root=str(root / "images"))
  examples = list(source.get_dataset("train").as_numpy_iterator())
  assert [e["text"] for e in examples] == [b"good", b"also good",
                                           "caf\ufffd".encode()]
  after = bad_records.snapshot()
  delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
  assert delta == {"missing_image": 4, "missing_caption": 1,
                   "bad_caption_utf8": 1}


def test_clear_errors(root):
  (root / "c.csv").write_text("path,caption\nx,y\n")
  with pytest.raises(ValueError, match=r"lacks column\(s\) \['filepath'"):
    CsvSource({"train": str(root / "c.csv")}).get_dataset("train")
  with pytest.raises(ValueError, match="delimiter"):
    CsvSource({"train": "x"}, delimiter=";;")
  with pytest.raises(ValueError, match="No CSV files match"):
    CsvSource({"train": str(root / "nothing*.csv")}).get_dataset("train")
