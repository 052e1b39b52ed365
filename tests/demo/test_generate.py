"""Tests for clipa_t5x.demo.generate: determinism, tar layout, manifest and atomicity."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from clipa_t5x.demo import generate
from clipa_t5x.demo.scenes import shapes

SMALL = dict(num_train=40, num_eval=60, image_size=48, num_train_shards=3)


def _read_tar(path):
  with tarfile.open(path) as tar:
    return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _all_bytes(directory):
  return {name: open(os.path.join(directory, name), "rb").read()
          for name in sorted(os.listdir(directory))}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
  generate.generate(str(tmp_path / "a"), **SMALL, seed=3)
  generate.generate(str(tmp_path / "b"), **SMALL, seed=3)
  generate.generate(str(tmp_path / "c"), **SMALL, seed=4)
  a, b, c = (_all_bytes(tmp_path / d) for d in "abc")
  assert sorted(a) == ["classes.json", "eval-00000.tar", "manifest.json",
                       "train-00000.tar", "train-00001.tar", "train-00002.tar"]
  assert a == b
  assert a["train-00000.tar"] != c["train-00000.tar"]


def test_tar_layout_matches_img2dataset(tmp_path):
  out = str(tmp_path / "d")
  manifest = generate.generate(out, **SMALL)
  assert manifest["files"]["train"] == [f"train-{i:05d}.tar" for i in range(3)]
  total = with_colour = 0
  for shard, name in enumerate(manifest["files"]["train"]):
    members = _read_tar(os.path.join(out, name))
    assert len(members) % 4 == 0
    for i in range(0, len(members), 4):
      group = members[i:i + 4]
      key = group[0][0].split(".")[0]
      # img2dataset key: 5 digits of shard then 4 of sample; sorted members.
      assert key == f"{shard:05d}{i // 4:04d}"
      assert [n for n, _ in group] == [f"{key}.{e}"
                                       for e in ("cls", "jpg", "json", "txt")]
      data = {n.split(".")[1]: d for n, d in group}
      image = Image.open(io.BytesIO(data["jpg"]))
      assert image.format == "JPEG" and image.size == (48, 48)
      assert image.mode == "RGB"
      meta = json.loads(data["json"])
      caption = data["txt"].decode("utf-8")
      assert meta["key"] == key and meta["caption"] == caption
      assert meta["status"] == "success"
      label = int(data["cls"])
      assert meta["label"] == label
      assert shapes.CLASS_NAMES[label] == f"{meta['colour']} {meta['shape']}"
      # The caption names the shape (word or synonym), most also the colour.
      assert any(w.split()[0] in caption.lower()
                 for w in shapes._SHAPE_WORDS[meta["shape"]])
      with_colour += meta["colour"] in caption.lower()
      total += 1
  assert total == SMALL["num_train"]
  # SHAPE_ONLY_FRACTION (0.4) of the captions leave the colour out.
  assert 0.4 * total <= with_colour < total
  with open(os.path.join(out, "classes.json")) as f:
    assert json.load(f) == list(shapes.CLASS_NAMES)
  assert len(shapes.CLASS_NAMES) == 20


def test_eval_split_is_balanced_and_captions_vary(tmp_path):
  out = str(tmp_path / "d")
  generate.generate(out, **SMALL)
  members = _read_tar(os.path.join(out, "eval-00000.tar"))
  labels = [int(d) for n, d in members if n.endswith(".cls")]
  assert np.bincount(labels, minlength=20).tolist() == [3] * 20
  captions = [d.decode() for n, d in members if n.endswith(".txt")]
  assert len(set(captions)) > 30  # many templates, not one pattern


def test_every_class_reachable_and_train_split_roughly_balanced(tmp_path):
  out = str(tmp_path / "d")
  generate.generate(out, num_train=600, num_eval=20, image_size=24,
                       num_train_shards=1)
  members = _read_tar(os.path.join(out, "train-00000.tar"))
  counts = np.bincount([int(d) for n, d in members if n.endswith(".cls")],
                       minlength=len(shapes.CLASS_NAMES))
  assert len(counts) == 20 and counts.sum() == 600
  # Uniform draws: 30 expected per class; every class appears, none dominates.
  assert counts.min() >= 15 and counts.max() <= 50
  metas = [json.loads(d) for n, d in members if n.endswith(".json")]
  for factor, values in (("colour", shapes.COLOURS),
                         ("shape", shapes.SHAPES),
                         ("size", shapes.SIZES),
                         ("background", shapes.BACKGROUNDS)):
    assert {m[factor] for m in metas} == set(values), factor


def test_manifest_written_last_and_idempotent(tmp_path):
  out = str(tmp_path / "data")
  assert generate.ensure_demo_data(out, **SMALL) == out
  manifest = generate.read_manifest(out)
  assert manifest["params"]["num_train"] == 40
  stamp = os.stat(os.path.join(out, "train-00000.tar")).st_mtime_ns
  generate.ensure_demo_data(out, **SMALL)  # no-op
  assert os.stat(os.path.join(out, "train-00000.tar")).st_mtime_ns == stamp
  # Other parameters replace the data set.
  generate.ensure_demo_data(out, **{**SMALL, "num_train": 30})
  assert generate.read_manifest(out)["params"]["num_train"] == 30
  assert not [d for d in os.listdir(tmp_path) if d != "data"]


def test_leftover_temp_dir_is_ignored_and_interrupts_leave_nothing(
    tmp_path, monkeypatch):
  out = str(tmp_path / "data")
  # A crashed run's temp sibling holds a partial shard: never picked up.
  leftover = tmp_path / "data.tmp-crashed"
  leftover.mkdir()
  (leftover / "train-00000.tar").write_bytes(b"partial")
  calls = []
  real = generate._write_shard

  def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt("simulated kill")
    return real(*args, **kwargs)

  monkeypatch.setattr(generate, "_write_shard", failing)
  with pytest.raises(KeyboardInterrupt):
    generate.ensure_demo_data(out, **SMALL)
  assert not os.path.exists(out)
  monkeypatch.setattr(generate, "_write_shard", real)
  generate.ensure_demo_data(out, **SMALL)
  assert generate.read_manifest(out) is not None
  assert len(_read_tar(os.path.join(out, "train-00000.tar"))) == 4 * 14


def test_refuses_foreign_directory_and_bad_parameters(tmp_path):
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match="no manifest"):
    generate.ensure_demo_data(str(foreign), **SMALL)
  assert (foreign / "notes.txt").read_text() == "keep me"
  with pytest.raises(ValueError, match="num_train_shards"):
    generate.ensure_demo_data(str(tmp_path / "x"), num_train=2,
                                 num_train_shards=3)
  with pytest.raises(ValueError, match="Unknown demo data parameters"):
    generate.ensure_demo_data(str(tmp_path / "x"), size=3)


def test_command_line(tmp_path, capsys):
  out = str(tmp_path / "cli")
  generate.main(["--out", out, "--num_train", "20", "--num_eval", "30",
                    "--num_train_shards", "2", "--image_size", "32"])
  assert "ready at" in capsys.readouterr().out
  assert generate.read_manifest(out)["files"]["train"] == [
      "train-00000.tar", "train-00001.tar"]
