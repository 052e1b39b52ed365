"""Sizes of the CLIPA two-tower models, as frozen dataclasses.

The named variants follow the released CLIPA-v2 models (big_vision / t5x
branches of UCSC-VLAA/CLIPA): the image tower letter also picks the text tower
(``S/16`` has an S text tower, ``bigG/14`` the 1280-wide text tower of the t5x
branch). ``Ti/8`` and ``Mu/8`` are tiny variants for tests and CPU demos.

Everything here is plain data; gin binds ``get_config`` (and
``clip.make_model``) at the edge.
"""

import dataclasses
from typing import Any, Dict, Optional

REMAT_POLICIES = ("none", "full", "dots_saveable")
DTYPES = ("float32", "bfloat16", "float16")
# How the attention core (softmax(q.k) . v) may run: clipa_t5x.models.layers.resolve_attention_impl.
ATTENTION_IMPLS = ("auto", "xla", "chunked", "dot_product_attention", "cudnn")
# The contrastive losses (clipa_t5x.losses.LOSS_PARAMS).
LOSSES = ("softmax", "sigmoid")
# Opt-in fused kernels (clipa_t5x.kernels); 'auto' takes the platform's measured default
# (clipa_t5x.xla_flags.MODEL_DEFAULTS: 'xla' unless a sweep chose otherwise).
NORM_IMPLS = ("auto", "xla", "pallas")
MLP_IMPLS = ("auto", "xla", "fused_gelu")
# Rows of the text token table: BERT-uncased has 30,522 ids, padded to 32,000.
TEXT_VOCAB_SIZE = 32000


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  """Size of one transformer tower.

  Attributes:
    width: model width (``embed`` axis).
    depth: number of pre-LN encoder blocks.
    heads: attention heads; ``width`` must be divisible by it.
    mlp_dim: hidden size of the MLP (``mlp`` axis).
    patch_size: square patch size (image tower only).
    vocab_size: rows of the token table (text tower only).
  """
  width: int
  depth: int
  heads: int
  mlp_dim: int
  patch_size: Optional[int] = None
  vocab_size: Optional[int] = None

  def __post_init__(self):
    for name in ("width", "depth", "heads", "mlp_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"TowerConfig.{name} must be a positive int, got {value!r}.")
    if self.width % self.heads:
      raise ValueError(
          f"TowerConfig.width={self.width} is not divisible by heads={self.heads}; "
          "pick a head count that divides the width.")
    for name in ("patch_size", "vocab_size"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"TowerConfig.{name} must be a positive int or None, got {value!r}.")

  @property
  def head_dim(self) -> int:
    """Width of one attention head (``kv`` axis)."""
    return self.width // self.heads


@dataclasses.dataclass(frozen=True)
class ClipaConfig:
  """A CLIPA two-tower model: the architecture only.

  Training settings (patch masking, batch size, ...) belong to the stage
  (``runner.Stage``) and reach the model as call arguments.

  Attributes:
    image: image tower size (``patch_size`` required).
    text: text tower size (``vocab_size`` required).
    embed_dim: output dimension of both projection heads (``proj`` axis).
    dtype: compute dtype name ('float32', 'bfloat16' or 'float16'); parameters
      are always float32.
    remat_policy: per-block rematerialisation: 'none', 'full' or 'dots_saveable'.
    attention_impl: how both towers compute attention, one of
      ``ATTENTION_IMPLS`` (each described at ``layers.attention_core``; 'auto':
      'chunked' on CPU, 'dot_product_attention' on GPU). Numerics agree up to
      float rounding; parameters and checkpoints do not depend on it.
    loss: the contrastive loss the model trains with, 'softmax' (CLIP/CLIPA)
      or 'sigmoid' (SigLIP). It decides the scalar parameters: 'sigmoid' adds
      a learnable ``logit_bias`` beside ``log_temperature``.
    init_log_temperature: initial ``log_temperature``; None = the loss's
      default (log(1/0.07) for softmax, log 10 for sigmoid).
    init_logit_bias: initial ``logit_bias`` of the sigmoid loss (SigLIP: -10).
    norm_impl: the encoder blocks' LayerNorms: 'xla' (jnp ops, XLA fuses),
      'pallas' (Pallas kernels, the residual add fused into the second
      LayerNorm of each block; GPU, interpret mode elsewhere) or 'auto'.
    mlp_impl: the MLP's GELU: 'xla' (autodiff of the tanh GELU in the
      compute dtype), 'fused_gelu' (float32 math, one-pass backward that keeps
      only the bf16 pre-activation) or 'auto'. Neither option changes
      parameters or checkpoints.
  """
  image: TowerConfig
  text: TowerConfig
  embed_dim: int
  dtype: str = "float32"
  remat_policy: str = "none"
  attention_impl: str = "auto"
  loss: str = "softmax"
  init_log_temperature: Optional[float] = None
  init_logit_bias: float = -10.0
  norm_impl: str = "auto"
  mlp_impl: str = "auto"

  def __post_init__(self):
    if not isinstance(self.image, TowerConfig) or self.image.patch_size is None:
      raise ValueError("ClipaConfig.image must be a TowerConfig with a patch_size.")
    if not isinstance(self.text, TowerConfig) or self.text.vocab_size is None:
      raise ValueError("ClipaConfig.text must be a TowerConfig with a vocab_size.")
    if not isinstance(self.embed_dim, int) or self.embed_dim < 1:
      raise ValueError(f"ClipaConfig.embed_dim must be a positive int, got {self.embed_dim!r}.")
    for name, choices in (("dtype", DTYPES), ("remat_policy", REMAT_POLICIES),
                          ("attention_impl", ATTENTION_IMPLS), ("loss", LOSSES),
                          ("norm_impl", NORM_IMPLS), ("mlp_impl", MLP_IMPLS)):
      value = getattr(self, name)
      if value not in choices:
        hint = ("; set LOSS in the run's gin file, e.g. --gin.LOSS=\"'sigmoid'\""
                if name == "loss" else "")
        raise ValueError(f"ClipaConfig.{name}={value!r} is not one of {choices}{hint}.")


# name: (patch size, image tower, text tower as width/depth/mlp/heads, embed_dim) (reference §3).
_SIZES = {
    "Ti/8": (8, (64, 2, 256, 4), (64, 2, 256, 4), 64),
    "Mu/8": (8, (128, 4, 512, 4), (128, 4, 512, 4), 128),
    "S/16": (16, (384, 12, 1536, 6), (384, 12, 1536, 6), 384),
    "B/16": (16, (768, 12, 3072, 12), (512, 12, 2048, 8), 512),
    "L/14": (14, (1024, 24, 4096, 16), (768, 12, 3072, 12), 768),
    "H/14": (14, (1280, 32, 5120, 16), (1024, 24, 4096, 16), 1024),
    "bigG/14": (14, (1664, 48, 8192, 16), (1280, 32, 5120, 20), 1280),
}
VARIANTS: Dict[str, ClipaConfig] = {
    name: ClipaConfig(image=TowerConfig(w, d, h, m, patch_size=patch),
                      text=TowerConfig(tw, td, th, tm, vocab_size=TEXT_VOCAB_SIZE),
                      embed_dim=embed)
    for name, (patch, (w, d, m, h), (tw, td, tm, th), embed) in _SIZES.items()}


def _merge_tower(base: TowerConfig, value: Any, field: str) -> TowerConfig:
  """Accepts a TowerConfig, or a dict of TowerConfig fields to change."""
  if isinstance(value, TowerConfig):
    return value
  if isinstance(value, dict):
    known = {f.name for f in dataclasses.fields(TowerConfig)}
    unknown = sorted(set(value) - known)
    if unknown:
      raise ValueError(
          f"Unknown {field} override(s) {unknown}; valid TowerConfig fields: {sorted(known)}.")
    return dataclasses.replace(base, **value)
  raise ValueError(
      f"Override {field}= must be a TowerConfig or a dict of its fields, got {type(value).__name__}.")


def get_config(name: str, **overrides: Any) -> ClipaConfig:
  """Returns the named variant, with some fields replaced.

  Args:
    name: one of ``VARIANTS`` ('Ti/8', 'Mu/8', 'S/16', 'B/16', 'L/14', 'H/14',
      'bigG/14').
    **overrides: ``ClipaConfig`` fields to replace, e.g. ``dtype='bfloat16'``,
      ``remat_policy='full'``. ``image`` / ``text`` take a ``TowerConfig`` or a dict
      of tower fields to change, e.g. ``image={'patch_size': 16}``.

  Returns:
    A validated, frozen ``ClipaConfig``.
  """
  if name not in VARIANTS:
    raise ValueError(f"Unknown CLIPA variant {name!r}; known variants: {sorted(VARIANTS)}.")
  base = VARIANTS[name]
  known = {f.name for f in dataclasses.fields(ClipaConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f"Unknown ClipaConfig override(s) {unknown}; valid fields: {sorted(known)}.")
  for field in ("image", "text"):
    if field in overrides:
      overrides[field] = _merge_tower(getattr(base, field), overrides[field], field)
  return dataclasses.replace(base, **overrides)
