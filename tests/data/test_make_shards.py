"""Tests for python -m clipa_t5x.data.make_shards."""

import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

from clipa_t5x.data import make_shards
from clipa_t5x.data.sources import WebDatasetSource


def _image(path, size=(40, 30), fmt="JPEG", seed=0):
  arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
  Image.fromarray(arr).save(path, fmt)


def _members(path):
  with tarfile.open(path) as tar:
    return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _folder(root):
  """5 usable images (jpg, png, bmp, in a subfolder) and 4 bad inputs."""
  os.makedirs(root / "sub")
  for i, (name, fmt) in enumerate([("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.JPG", "JPEG"),
                                   ("sub/d.bmp", "BMP"), ("sub/e.webp", "WEBP")]):
    _image(root / name, fmt=fmt, seed=i)
    (root / name).with_suffix(".txt").write_text(f"caption {name}\n")
  good = (root / "a.jpg").read_bytes()
  (root / "cut.jpg").write_bytes(good[:len(good) // 2])     # truncated
  (root / "cut.txt").write_text("a cut image")
  (root / "text.png").write_bytes(b"not an image at all")   # not an image
  (root / "text.txt").write_text("junk")
  _image(root / "nocap.jpg")                                # no caption file
  _image(root / "empty.jpg")
  (root / "empty.txt").write_text("  \n")                   # empty caption
  (root / "notes.md").write_text("ignored: not an image")


def test_folder_to_img2dataset_shards_lists_every_bad_input(tmp_path, capsys):
  _folder(tmp_path / "in")
  out = tmp_path / "out"
  code = make_shards.main(["--input", str(tmp_path / "in"), "--out", str(out),
                           "--samples_per_shard", "2", "--no_progress", "--num_workers", "2"])
  assert code == 0
  assert sorted(os.listdir(out)) == ["00000.tar", "00001.tar", "00002.tar", "skipped.txt"]
  first = _members(out / "00000.tar")
  assert sorted(first) == ["000000.jpg", "000000.json", "000000.txt",
                           "000001.json", "000001.png", "000001.txt"]
  assert first["000000.txt"] == b"caption a.jpg"
  meta = json.loads(first["000000.json"])
  assert meta["key"] == "000000" and meta["status"] == "success"
  assert (meta["width"], meta["height"]) == (40, 30) and meta["url"].endswith("a.jpg")
  assert first["000000.jpg"] == (tmp_path / "in" / "a.jpg").read_bytes()  # bytes kept
  assert "00002.jpg" not in _members(out / "00002.tar")  # the webp stays webp
  skipped = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
  assert {os.path.basename(p) for p in skipped} == {"cut.jpg", "text.png", "nocap.jpg",
                                                    "empty.jpg"}
  assert skipped[str(tmp_path / "in" / "nocap.jpg")] == "no caption"
  assert skipped[str(tmp_path / "in" / "empty.jpg")] == "empty caption"
  printed = capsys.readouterr().out
  assert "wrote 5 samples in 3 shard(s)" in printed and "skipped 4 input(s)" in printed
  assert "cut.jpg" in printed
  # Our reader takes them as they are.
  src = WebDatasetSource({"train": str(out / "*.tar")})
  texts = sorted(ex["text"].decode()
                 for ex in src.get_dataset("train", shuffle=False).as_numpy_iterator())
  assert texts == sorted(f"caption {n}" for n in ("a.jpg", "b.png", "c.JPG", "sub/d.bmp",
                                                  "sub/e.webp"))


def test_max_side_reencodes_large_images_only(tmp_path):
  (tmp_path / "in").mkdir()
  _image(tmp_path / "in" / "big.png", size=(320, 200), fmt="PNG")
  _image(tmp_path / "in" / "small.jpg", size=(100, 60))
  for stem in ("big", "small"):
    (tmp_path / "in" / f"{stem}.txt").write_text(stem)
  result = make_shards.make_shards(make_shards.folder_items(str(tmp_path / "in"))[0],
                                   str(tmp_path / "out"), max_side=160, quiet=True)
  assert result["samples"] == 2 and not result["skipped"]
  members = _members(tmp_path / "out" / "00000.tar")
  big = Image.open(io.BytesIO(members["000000000.jpg"]))
  assert big.format == "JPEG" and big.size == (160, 100)
  meta = json.loads(members["000000000.json"])
  assert (meta["original_width"], meta["width"]) == (320, 160)
  assert members["000000001.jpg"] == (tmp_path / "in" / "small.jpg").read_bytes()


def test_tsv_input_and_folder_labels(tmp_path, capsys):
  (tmp_path / "img").mkdir()
  _image(tmp_path / "img" / "x.jpg")
  (tmp_path / "list.tsv").write_text(
      "filepath\ttitle\nimg/x.jpg\ta red car\nimg/missing.jpg\ta lost cat\n")
  assert make_shards.main(["--input", str(tmp_path / "list.tsv"), "--out",
                           str(tmp_path / "o1"), "--no_progress"]) == 0
  assert _members(tmp_path / "o1" / "00000.tar")["000000000.txt"] == b"a red car"
  assert "missing.jpg" in (tmp_path / "o1" / "skipped.txt").read_text()

  for cls in ("tabby_cat", "dog"):
    (tmp_path / "cls" / cls).mkdir(parents=True)
    _image(tmp_path / "cls" / cls / "1.jpg")
    (tmp_path / "cls" / cls / "1.txt").write_text(f"a {cls}")
  assert make_shards.main(["--input", str(tmp_path / "cls"), "--out", str(tmp_path / "o2"),
                           "--labels_from_folders", "--no_progress"]) == 0
  members = _members(tmp_path / "o2" / "00000.tar")
  assert (members["000000000.txt"], members["000000000.cls"]) == (b"a dog", b"0")
  assert members["000000001.cls"] == b"1"
  assert json.loads((tmp_path / "o2" / "classes.json").read_text()) == ["dog", "tabby cat"]

  capsys.readouterr()
  assert make_shards.main(["--input", str(tmp_path / "cls"), "--out", str(tmp_path / "o2"),
                           "--no_progress"]) == 2  # never mixes with existing shards
  assert "already holds shards" in capsys.readouterr().err
  assert make_shards.main(["--input", str(tmp_path / "list.tsv"), "--out", str(tmp_path / "o3"),
                           "--caption_column", "text"]) == 2
  (tmp_path / "nocaps").mkdir()
  _image(tmp_path / "nocaps" / "a.jpg")
  assert make_shards.main(["--input", str(tmp_path / "nocaps"), "--out", str(tmp_path / "o4"),
                           "--no_progress"]) == 2  # nothing usable is an error, with the list
  assert "a.jpg: no caption" in capsys.readouterr().out
