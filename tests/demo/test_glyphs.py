"""Tests for clipa_t5x.demo.scenes.glyphs: the letters scene, written by the demo generator."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from clipa_t5x.demo import generate
from clipa_t5x.demo.scenes import drawing
from clipa_t5x.demo.scenes import glyphs as demo_glyphs
from clipa_t5x.data import text_reduction

SMALL = dict(num_train=300, num_eval=40, image_size=32, num_train_shards=2, scene="glyphs")


def _members(path):
  with tarfile.open(path) as tar:
    return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _by_ext(members, ext):
  return [d for n, d in members if n.endswith("." + ext)]


def test_same_seed_same_bytes_and_the_manifest_names_the_scene(tmp_path):
  a = generate.generate(str(tmp_path / "a"), **SMALL, seed=1)
  generate.generate(str(tmp_path / "b"), **SMALL, seed=1)
  generate.generate(str(tmp_path / "c"), **SMALL, seed=2)
  read = lambda d: open(tmp_path / d / "train-00000.tar", "rb").read()
  assert read("a") == read("b") != read("c")
  assert a["params"]["scene"] == "glyphs" and a["num_classes"] == 10
  assert a["params"]["generator_version"] == demo_glyphs.GENERATOR_VERSION
  with open(tmp_path / "a" / "classes.json") as f:
    assert json.load(f) == list(demo_glyphs.CLASS_NAMES)
  # A shapes data set's manifest keeps its old form, so cached shapes data stays valid.
  assert "scene" not in generate._params(10, 10, 32, 1, 1, 0)  # pylint: disable=protected-access


def test_eval_is_balanced_every_class_reachable_and_captions_name_the_letter(tmp_path):
  out = str(tmp_path / "d")
  generate.generate(out, **SMALL)
  evals = _members(os.path.join(out, "eval-00000.tar"))
  assert np.bincount([int(d) for d in _by_ext(evals, "cls")]).tolist() == [4] * 10
  train = _members(os.path.join(out, "train-00000.tar")) + _members(
      os.path.join(out, "train-00001.tar"))
  labels = [int(d) for d in _by_ext(train, "cls")]
  counts = np.bincount(labels, minlength=10)
  assert counts.sum() == 300 and counts.min() >= 15 and counts.max() <= 50  # 30 expected
  metas = [json.loads(d) for d in _by_ext(train, "json")]
  assert {m["colour"] for m in metas} == set(drawing.COLOURS)  # a nuisance, every value
  for meta, caption, label in zip(metas, _by_ext(train, "txt"), labels):
    caption = caption.decode()
    assert meta["label"] == label and meta["caption"] == caption
    assert demo_glyphs.LETTERS[label] in caption.split()
    assert not any(c in caption for c in drawing.COLOURS)  # colour is never named
  assert len({c for c in _by_ext(train, "txt")}) > 50


def test_syntax_masking_keeps_the_letter_that_truncation_cuts():
  for caption in ("a pattern printed with many copies of the bold letter Q",
                  "a close-up photo of rows of the bold capital letter Q"):
    syntax = text_reduction.tokenize_texts([caption], 8, "syntax")[0]
    truncated = text_reduction.tokenize_texts([caption], 8, "truncate")[0]
    letter = text_reduction.tokenize_texts(["q"], 2, "truncate")[0][1]
    assert letter in syntax and letter not in truncated, caption


def test_render_is_deterministic_and_letters_cover_every_patch_and_pairs_are_factors():
  sizes = []
  for seed in range(3):
    for label in range(10):
      a = demo_glyphs.render_example(np.random.default_rng((seed, 1, label)), 32, label)
      assert a == demo_glyphs.render_example(np.random.default_rng((seed, 1, label)), 32, label)
      image = np.asarray(Image.open(io.BytesIO(a[0])).convert("RGB")).astype(int)
      background = np.asarray(a[1]["background"])
      ink = np.abs(image - background).max(-1) > 60
      # Every 8 px patch (the study's patch at 32 px) holds letter strokes: no
      # token is bare background at any resolution.
      patches = ink.reshape(4, 8, 4, 8).any(axis=(1, 3))
      assert patches.all(), (seed, label, a[1])
      assert 0.05 < ink.mean() < 0.9  # strokes on a background, not a solid fill
      sizes.append(a[1]["font_size"])
  assert min(sizes) < 0.45 and max(sizes) > 0.65  # fine and coarse textures
  pairs = demo_glyphs.class_factors()["pair"]
  assert pairs == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
  assert [demo_glyphs.LETTERS[i] for i in range(0, 10, 2)] == ["E", "O", "P", "C", "U"]


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
  import builtins  # pylint: disable=import-outside-toplevel
  real_import = builtins.__import__
  def no_matplotlib(name, *args, **kwargs):
    if name == "matplotlib":
      raise ImportError("no matplotlib")
    return real_import(name, *args, **kwargs)
  demo_glyphs.font_path.cache_clear()
  monkeypatch.setattr(builtins, "__import__", no_matplotlib)
  try:
    with pytest.raises(ImportError, match="pip install matplotlib"):
      demo_glyphs.font_path()
  finally:
    monkeypatch.undo()
    demo_glyphs.font_path.cache_clear()
