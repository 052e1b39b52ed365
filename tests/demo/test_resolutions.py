"""Tests for clipa_t5x.demo.resolutions: every stage's model at every stage's resolution."""

import json
import os

import numpy as np

from clipa_t5x.demo import data as demo_data
from clipa_t5x.demo import resolutions

CLASSES = 20  # the shapes scene


class _FakeModel:
  """Right on the first ``right[size]`` images at each size, wrong (next class) on the rest."""

  def __init__(self, image_size, right):
    self.image_size, self.right = image_size, right

  def class_embeddings(self, names, templates):
    assert len(names) == CLASSES and templates == demo_data.templates()
    return np.eye(CLASSES, dtype=np.float32)

  def encode_images(self, jpegs, image_size):
    labels = np.arange(len(jpegs)) % CLASSES  # the balanced eval split
    guess = np.where(np.arange(len(jpegs)) < self.right[image_size], labels,
                     (labels + 1) % CLASSES)
    return np.eye(CLASSES, dtype=np.float32)[guess]

  def classify_features(self, features, names, top_k, class_embeddings):
    order = np.argsort(-(features @ class_embeddings.T), axis=1)[:, :top_k]
    return type("Result", (), {"top_k_indices": order})()


def test_table_holds_each_model_at_each_resolution(tmp_path, monkeypatch, capsys):
  data = demo_data.DemoData(str(tmp_path / "shapes"), num_train=4, num_eval=40, image_size=32,
                            num_train_shards=1)
  models = {"pre": _FakeModel(32, {32: 30, 48: 10}), "ft": _FakeModel(48, {32: 20, 48: 36})}
  monkeypatch.setattr(resolutions.inference, "load",
                      lambda path, **kw: models[os.path.basename(path)])
  rows = [{"stage": "pre"}, {"stage": "ft"}]
  path = resolutions.write_resolution_table(str(tmp_path), rows, data=data, num_images=40)
  with open(path) as f:
    table = json.load(f)
  got = {(r["stage"], r["image_size"]): r["top1"] for r in table}
  assert got == {("pre", 32): 0.75, ("pre", 48): 0.25, ("ft", 32): 0.5, ("ft", 48): 0.9}
  assert [r["trained_at"] for r in table] == [32, 32, 48, 48]
  # The next class shares the colour (classes are colour-major) except after a colour's 5th shape.
  assert all(r["colour_top1"] >= r["top1"] and r["shape_top1"] == r["top1"] for r in table)
  out = capsys.readouterr().out
  lines = [line.split() for line in out.splitlines()]
  assert ["pre", "32", "px", "(its", "own)", "75.0%"] == lines[4][:6]
  assert ["ft", "48", "px", "(its", "own)", "90.0%"] == lines[-1][:6]


def test_no_rows_no_table(tmp_path):
  assert resolutions.write_resolution_table(str(tmp_path), []) is None


def test_a_stage_without_checkpoint_makes_no_table(tmp_path, capsys):
  assert resolutions.write_resolution_table(str(tmp_path), [{"stage": "pretrain"}]) is None
  assert "resolution table not made" in capsys.readouterr().out
  assert not os.path.exists(os.path.join(str(tmp_path), resolutions.TABLE))


def test_own_resolution_cells_come_from_the_runs_evaluation(tmp_path, monkeypatch):
  data = demo_data.DemoData(str(tmp_path / "shapes"), num_train=4, num_eval=40, image_size=32,
                            num_train_shards=1)
  models = {"pre": _FakeModel(32, {32: 30, 48: 10}), "ft": _FakeModel(48, {32: 20, 48: 36})}
  monkeypatch.setattr(resolutions.inference, "load",
                      lambda path, **kw: models[os.path.basename(path)])
  evaluated = {"zeroshot_top1": 0.5, "zeroshot_factor_top1": {"colour": 1.0, "shape": 0.5}}
  rows = [{"stage": "pre", "eval": {"x/top1": 0.5, "x/num_examples": 40}, **evaluated},
          # Another number of images: measured again.
          {"stage": "ft", "eval": {"x/top1": 0.5, "x/num_examples": 1000}, **evaluated}]
  path = resolutions.write_resolution_table(str(tmp_path), rows, data=data, num_images=40)
  with open(path) as f:
    table = {(r["stage"], r["image_size"]): r for r in json.load(f)}
  assert table["pre", 32]["top1"] == 0.5 and table["pre", 32]["colour_top1"] == 1.0
  assert table["pre", 48]["top1"] == 0.25 and table["ft", 48]["top1"] == 0.9
