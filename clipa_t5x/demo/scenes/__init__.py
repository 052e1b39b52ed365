"""The demo's scenes, by name: ``get('shapes')``, ``get('glyphs')``.

A scene is a module with ``CLASS_NAMES`` (zero-shot class names in label
order), ``GENERATOR_VERSION`` (bumped when its bytes change, so cached data
sets are regenerated), ``render_example(rng, image_size, label) -> (jpeg,
attributes)`` (attributes hold at least ``caption`` and ``label``) and
``class_factors() -> {factor: [id per class]}``. To add one, write such a
module here and name it in ``SCENES``.
"""

from types import ModuleType

from clipa_t5x.demo.scenes import glyphs
from clipa_t5x.demo.scenes import shapes

SCENES = {"shapes": shapes, "glyphs": glyphs}


def get(scene: str) -> ModuleType:
  """The module that draws ``scene``; a clear error for an unknown name."""
  try:
    return SCENES[scene]
  except KeyError:
    raise ValueError(f"Unknown demo scene {scene!r}; expected one of {tuple(SCENES)}.") from None
