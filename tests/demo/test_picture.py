"""Tests for clipa_t5x.demo.picture: the examples picture names the data's own classes."""

import os
import types

import numpy as np
from PIL import Image

from clipa_t5x.demo import data as demo_data
from clipa_t5x.demo import picture
from clipa_t5x.demo.scenes import glyphs


class _FakeModel:
  """Predicts class (label + 1) % C for image i of the balanced eval split; records the names."""

  def __init__(self):
    self.names = None

  def classify(self, jpegs, names, templates, top_k=1):
    self.names = list(names)
    assert templates == demo_data.templates() and top_k == 1
    guesses = [[(i + 1) % len(names)] for i in range(len(jpegs))]
    guesses[0] = [0]  # image 0 has class 0: one right
    return types.SimpleNamespace(top_k_indices=np.array(guesses))


def test_picture_uses_the_scene_class_names_and_counts_right_guesses(tmp_path, monkeypatch,
                                                                      capsys):
  data = demo_data.DemoData(str(tmp_path / "glyphs"), num_train=4, num_eval=12, image_size=32,
                            num_train_shards=1, scene="glyphs")
  model = _FakeModel()
  monkeypatch.setattr(picture.inference, "load", lambda model_dir: model)
  path = picture.write_zeroshot_examples(str(tmp_path), data=data, num_images=12, columns=4,
                                         cell=32)
  assert model.names == list(glyphs.CLASS_NAMES)  # not the shapes' names
  assert path == os.path.join(str(tmp_path), picture.PICTURE)
  assert Image.open(path).size == (4 * 32, 3 * (32 + 30))
  assert "(1/12 right)" in capsys.readouterr().out


def test_no_checkpoint_draws_nothing(tmp_path, monkeypatch):
  def no_checkpoint(model_dir):
    raise ValueError(f"{model_dir} holds no checkpoint")
  monkeypatch.setattr(picture.inference, "load", no_checkpoint)
  assert picture.write_zeroshot_examples(str(tmp_path)) is None
