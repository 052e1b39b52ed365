"""Tests of clipa_t5x.paths: local and remote (TF's ram://) paths, atomic writes."""
import json
import os

import pytest

from clipa_t5x import paths


def test_absolute_makes_local_paths_absolute_and_keeps_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.absolute("runs/x") == str(tmp_path / "runs" / "x")
  assert paths.absolute("gs://bucket/runs/x") == "gs://bucket/runs/x"
  assert paths.is_remote("ram://a") and not paths.is_remote("/a/b")


def test_write_json_atomic_local(tmp_path):
  target = tmp_path / "sub" / "summary.json"
  paths.makedirs(str(target.parent))
  paths.makedirs(str(target.parent))  # exists: no error
  paths.write_json_atomic(str(target), {"b": 1, "a": [1, 2]}, indent=1, sort_keys=True)
  text = target.read_text()
  assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
  assert json.loads(text) == {"a": [1, 2], "b": 1}
  assert os.listdir(target.parent) == ["summary.json"]  # no temporary file left


def test_write_text_atomic_replaces_whole_file(tmp_path):
  target = tmp_path / "f.txt"
  target.write_text("old and longer")
  paths.write_text_atomic(str(target), "new")
  assert target.read_text() == "new"


def test_remote_paths_go_through_gfile():
  pytest.importorskip("tensorflow")
  root = "ram://clipa_test_paths/run"
  paths.makedirs(root)
  path = paths.join(root, "model_config.json")
  paths.write_json_atomic(path, {"x": 1})
  assert paths.exists(path) and paths.isfile(path) and paths.isdir(root)
  assert json.loads(paths.read_text(path)) == {"x": 1}
  assert "model_config.json" in paths.listdir(root)
