"""Flax CLIPA towers with logical axis names on every parameter."""

from clipa_t5x.models.clip import ClipaModel, TwoTower, make_model
from clipa_t5x.models.configs import ClipaConfig, TowerConfig, VARIANTS, get_config
from clipa_t5x.models.text import TextTransformer
from clipa_t5x.models.vit import VisionTransformer, posemb_sincos_2d

__all__ = [
    "ClipaConfig", "ClipaModel", "TextTransformer", "TowerConfig", "TwoTower", "VARIANTS",
    "VisionTransformer", "get_config", "make_model", "posemb_sincos_2d",
]
