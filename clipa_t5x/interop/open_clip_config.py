"""open_clip's model-config schema for a clipa_t5x model (no torch needed).

open_clip describes a model as a JSON dict (``embed_dim``, ``vision_cfg``,
``text_cfg``); a folder with ``open_clip_config.json`` (``model_cfg`` +
``preprocess_cfg``) and ``open_clip_model.safetensors`` loads with
``open_clip.create_model('local-dir:FOLDER')``.

The CLIPA-specific keys are the ones of open_clip's released
``ViT-*-CLIPA`` configs (no LayerNorm before the blocks, mean pooling over
the patch tokens with the LayerNorm after the pool, BERT tokenizer with the
``[SEP]`` stripped, last-position text pooling, no causal mask), plus what
those configs leave at open_clip's defaults but CLIPA does differently, so
that the exported model computes *our* function exactly: tanh GELU
(``act_kwargs``) and LayerNorm epsilon 1e-6 (``norm_kwargs``).
"""

from typing import Any, Dict

from clipa_t5x.losses import SIGMOID_INIT_LOG_TEMPERATURE
from clipa_t5x.models import layers
from clipa_t5x.models import vit
from clipa_t5x.models.configs import ClipaConfig

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
HF_TOKENIZER = "bert-base-uncased"


def _tower_common() -> Dict[str, Any]:
  return {"act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": layers.LAYERNORM_EPS}}


def open_clip_model_config(config: ClipaConfig, image_size: int, text_length: int
                           ) -> Dict[str, Any]:
  """open_clip ``model_cfg`` dict describing ``config`` at one resolution.

  Args:
    config: the clipa_t5x model.
    image_size: square input side the exported model expects (a multiple of
      the patch size); open_clip stores a position embedding of that grid.
    text_length: context length (the length of the text position embedding).

  Returns:
    A JSON-serialisable dict for ``open_clip.create_model`` (``model_cfg``).
  """
  image, text = config.image, config.text
  if image_size % image.patch_size:
    raise ValueError(
        f"image_size {image_size} is not a multiple of the patch size {image.patch_size}; "
        f"export at {image_size // image.patch_size * image.patch_size} or "
        f"{(image_size // image.patch_size + 1) * image.patch_size}.")
  if text_length < 1:
    raise ValueError(f"text_length must be positive, got {text_length}.")
  # A sigmoid-loss model carries its logit bias, as open_clip's SigLIP configs do.
  loss_cfg = {} if config.loss != "sigmoid" else {
      "init_logit_scale": (config.init_log_temperature if config.init_log_temperature is not None
                           else SIGMOID_INIT_LOG_TEMPERATURE),
      "init_logit_bias": config.init_logit_bias,
  }
  return {
      **loss_cfg,
      "embed_dim": config.embed_dim,
      "vision_cfg": {
          "image_size": int(image_size),
          "layers": image.depth,
          "width": image.width,
          "head_width": image.head_dim,
          "mlp_ratio": image.mlp_dim / image.width,
          "patch_size": image.patch_size,
          "no_ln_pre": True,
          "pool_type": "avg",
          "final_ln_after_pool": True,
          **_tower_common(),
      },
      "text_cfg": {
          "context_length": int(text_length),
          "vocab_size": text.vocab_size,
          "hf_tokenizer_name": HF_TOKENIZER,
          "tokenizer_kwargs": {"strip_sep_token": True},
          "width": text.width,
          "heads": text.heads,
          "layers": text.depth,
          "mlp_ratio": text.mlp_dim / text.width,
          "pool_type": "last",
          "no_causal_mask": True,
          **_tower_common(),
      },
  }


def open_clip_preprocess_config(image_size: int) -> Dict[str, Any]:
  """open_clip ``preprocess_cfg``: ImageNet mean/std (the model normalises with these)."""
  return {
      "size": int(image_size),
      "mean": list(vit.IMAGENET_MEAN),
      "std": list(vit.IMAGENET_STD),
      "interpolation": "bilinear",
      "resize_mode": "squash",
  }
