"""Tests for clipa_t5x.demo.data: DemoData's scene, folder, class names and factors."""

import os

import pytest

from clipa_t5x.demo import data as demo_data
from clipa_t5x.demo.scenes import glyphs as demo_glyphs
from clipa_t5x.demo.scenes import shapes


def test_demo_data_scene_has_its_own_folder_names_and_factors(tmp_path, monkeypatch):
  monkeypatch.delenv("CLIPA_DEMO_GLYPHS_DATA", raising=False)
  monkeypatch.setenv("CLIPA_DEMO_DATA", str(tmp_path / "shapes"))
  glyphs = demo_data.DemoData(scene="glyphs")
  assert glyphs.name == "demo_glyphs"
  assert glyphs.root().endswith(os.path.join("clipa_t5x", "demo_glyphs"))
  assert demo_data.DemoData().root() == str(tmp_path / "shapes")
  monkeypatch.setenv("CLIPA_DEMO_GLYPHS_DATA", str(tmp_path / "g"))
  assert glyphs.root() == str(tmp_path / "g")
  assert glyphs.class_names()[:2] == ["letter E", "letter F"]
  assert glyphs.class_factors() == demo_glyphs.class_factors()
  assert demo_data.DemoData().class_factors() == shapes.class_factors()
  with pytest.raises(ValueError, match="Unknown demo scene 'digits'"):
    demo_data.DemoData(scene="digits")


def test_module_level_names_and_factors_follow_the_data_scene():
  glyphs = demo_data.DemoData(scene="glyphs")
  assert demo_data.class_names(glyphs) == list(demo_glyphs.CLASS_NAMES)
  assert demo_data.class_factors(glyphs) == demo_glyphs.class_factors()
  assert demo_data.class_names() == list(shapes.CLASS_NAMES)  # the default: shapes
  assert demo_data.class_factors() == shapes.class_factors()
