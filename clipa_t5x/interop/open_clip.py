"""Moving CLIPA weights between clipa_t5x and open_clip (no torch needed).

Export writes an open_clip folder: ``open_clip_config.json`` (``model_cfg`` +
``preprocess_cfg``) and ``open_clip_model.safetensors``, which
``open_clip.create_model('local-dir:FOLDER')`` loads with ``strict=True``
and which computes the same embeddings as our model. Import reads an open_clip
CLIPA state dict (our exports, or the released ``ViT-*-CLIPA`` weights) back
into a clipa_t5x parameter tree, for evaluation or fine-tuning here.

Layout differences, our tree → open_clip key:

* attention: three ``[W, heads, head_dim]`` kernels → one ``in_proj_weight``
  ``[3W, W]`` (torch ``Linear`` weights are ``[out, in]``); the ``[heads,
  head_dim, W]`` output kernel → ``out_proj.weight`` ``[W, W]``;
* patch embedding: conv kernel HWIO → ``conv1.weight`` OIHW;
* ``img/cls`` ``[1, 1, W]`` → ``visual.class_embedding`` ``[W]``;
* our image position embedding is no parameter but the fixed 2-D sin-cos of
  the patch grid (``vit.posemb_sincos_2d``), so the export stores it as
  ``visual.positional_embedding`` = [zero cls row; sin-cos at the export
  resolution]. On import, the patch rows must equal that sin-cos (our model
  cannot hold a learned one); a non-zero cls row is folded into the cls token,
  which is exact because both are only ever added to that one token;
* ``log_temperature`` is open_clip's ``logit_scale`` (logits are multiplied by
  its exp in both); a sigmoid-loss model's ``logit_bias`` is open_clip's
  ``logit_bias``, and its config's ``init_logit_bias`` (with ``init_logit_scale``)
  travel in ``model_cfg``, as open_clip's SigLIP configs write them.
"""

import json
import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from clipa_t5x import losses
from clipa_t5x import paths
from clipa_t5x.interop import open_clip_config
from clipa_t5x.models import layers
from clipa_t5x.models import vit
from clipa_t5x.models.configs import ClipaConfig, TowerConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = open_clip_config.CONFIG_FILE
WEIGHTS_FILE = open_clip_config.WEIGHTS_FILE
# Weight files open_clip itself looks for in a model folder (our export first).
_FOLDER_WEIGHTS = (WEIGHTS_FILE, "open_clip_pytorch_model.safetensors",
                   "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                   "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
_TORCH_SUFFIXES = (".bin", ".pt", ".pth")
TORCH_EXTRA_HINT = "pip install .[torch]"

# Absolute tolerance of the fixed sin-cos check, by the precision the weights
# were stored in (bf16/fp16 copies of the same constant round to these).
_POSEMB_ATOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-4}
_POSEMB_ATOL_LOW_PRECISION = 1e-2

NestedArrays = Dict[str, Any]


# --------------------------------------------------------------------------
# The released open_clip CLIPA-v2 configs (open_clip/model_configs/*CLIPA*.json).

def _released(embed_dim: int, image_size: int, vision: Dict[str, Any],
              text: Dict[str, Any]) -> Dict[str, Any]:
  return {
      "embed_dim": embed_dim,
      "vision_cfg": {"image_size": image_size, **vision, "patch_size": 14, "no_ln_pre": True,
                     "pool_type": "avg", "final_ln_after_pool": True},
      "text_cfg": {"context_length": 32, "vocab_size": 32000,
                   "hf_tokenizer_name": "bert-base-uncased",
                   "tokenizer_kwargs": {"strip_sep_token": True},
                   **text, "pool_type": "last", "no_causal_mask": True},
  }


_L_VISION = {"layers": 24, "width": 1024}
_L_TEXT = {"width": 768, "heads": 12, "layers": 12}
_H_VISION = {"layers": 32, "width": 1280, "head_width": 80}
_H_TEXT = {"width": 1024, "heads": 16, "layers": 24}
_G_VISION = {"layers": 48, "width": 1664, "head_width": 104, "mlp_ratio": 4.9231}
_G_TEXT = {"width": 1280, "heads": 20, "layers": 32}

# open_clip model name → its model_cfg, as shipped with open_clip_torch. They
# omit act_kwargs/norm_kwargs: see ``clipa_config_from_open_clip``.
RELEASED_CONFIGS: Dict[str, Dict[str, Any]] = {
    "ViT-L-14-CLIPA": _released(768, 224, _L_VISION, _L_TEXT),
    "ViT-L-14-CLIPA-336": _released(768, 336, _L_VISION, _L_TEXT),
    "ViT-H-14-CLIPA": _released(1024, 224, _H_VISION, _H_TEXT),
    "ViT-H-14-CLIPA-336": _released(1024, 336, _H_VISION, _H_TEXT),
    "ViT-bigG-14-CLIPA": _released(1280, 224, _G_VISION, _G_TEXT),
    "ViT-bigG-14-CLIPA-336": _released(1280, 336, _G_VISION, _G_TEXT),
}


# --------------------------------------------------------------------------
# open_clip model_cfg → ClipaConfig.

def _is_off(value: Any) -> bool:
  return value in (None, False, 0, 0.0, "", {}, [])


def _require(cfg: Mapping[str, Any], section: str, key: str, wanted: Any, default: Any) -> None:
  value = cfg.get(key, default)
  if value != wanted:
    raise ValueError(
        f"not a CLIPA open_clip config: {section}.{key}={value!r}, CLIPA needs {wanted!r}.")


def _refuse_if_set(cfg: Mapping[str, Any], section: str, keys: Tuple[str, ...]) -> None:
  for key in keys:
    if not _is_off(cfg.get(key)):
      raise ValueError(
          f"not a CLIPA open_clip config: {section}.{key}={cfg[key]!r} is not supported "
          "by clipa_t5x (remove it or use open_clip).")


def _check_act_norm(cfg: Mapping[str, Any], section: str) -> bool:
  """Validates act/norm kwargs; True when they differ from CLIPA's own (tanh GELU, eps 1e-6)."""
  act = cfg.get("act_kwargs") or {}
  norm = cfg.get("norm_kwargs") or {}
  if set(act) - {"approximate"} or act.get("approximate", "none") not in ("none", "tanh"):
    raise ValueError(f"not a CLIPA open_clip config: {section}.act_kwargs={act!r}; CLIPA's GELU "
                     "takes only approximate='tanh'.")
  if set(norm) - {"eps"}:
    raise ValueError(f"not a CLIPA open_clip config: {section}.norm_kwargs={norm!r}; only 'eps' "
                     "is supported.")
  return act.get("approximate") != "tanh" or norm.get("eps") != layers.LAYERNORM_EPS


# Keys each tower section may hold; any other key is refused by name.
_VISION_KEYS = {
    "layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "no_ln_pre",
    "pool_type", "final_ln_after_pool", "pos_embed_type", "act_kwargs", "norm_kwargs",
    "patch_dropout", "output_tokens", "ls_init_value", "attentional_pool",
    "attn_pooler_queries", "attn_pooler_heads", "block_type", "qk_norm", "scaled_cosine_attn",
    "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc", "timm_model_name",
}
_TEXT_KEYS = {
    "context_length", "vocab_size", "hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs",
    "width", "heads", "layers", "mlp_ratio", "pool_type", "no_causal_mask", "act_kwargs",
    "norm_kwargs", "pad_id", "eos_id", "output_tokens", "final_ln_after_pool", "ls_init_value",
    "embed_cls", "proj_bias", "proj_type", "block_type", "qk_norm", "scaled_cosine_attn",
    "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc", "hf_model_name",
}
_TOP_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale",
             "init_logit_bias", "custom_text", "multimodal_cfg", "nonscalar_logit_scale"}
_CUSTOM_BLOCK_KEYS = ("ls_init_value", "qk_norm", "scaled_cosine_attn", "scale_heads",
                      "scale_attn_inner", "scale_attn", "scale_fc")


def _positive_int(cfg: Mapping[str, Any], section: str, key: str, default: Any = None) -> int:
  value = cfg.get(key, default)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"open_clip config {section}.{key}={value!r} must be a positive int.")
  return value


def clipa_config_from_open_clip(model_cfg: Mapping[str, Any]) -> Tuple[ClipaConfig, int, int]:
  """Turns an open_clip CLIPA ``model_cfg`` into our config.

  Accepts our exports' configs and open_clip's released ``ViT-*-CLIPA``
  configs. The released ones omit ``act_kwargs`` / ``norm_kwargs``, so
  open_clip runs them with exact GELU and LayerNorm eps 1e-5 although the
  weights were trained in JAX with tanh GELU and eps 1e-6; clipa_t5x always
  computes the original CLIPA function (tanh GELU, eps 1e-6).

  Args:
    model_cfg: the dict of an open_clip model-config JSON (``embed_dim``,
      ``vision_cfg``, ``text_cfg``).

  Returns:
    ``(config, image_size, text_length)``.

  Raises:
    ValueError: for configs that are not CLIPA (e.g. ``pool_type='tok'``, a
      LayerNorm before the blocks, a causal mask, attentional pooling, an HF
      or timm tower), naming the key.
  """
  if not isinstance(model_cfg, Mapping):
    raise ValueError(f"an open_clip model config must be a dict, got {type(model_cfg).__name__}.")
  if "model_cfg" in model_cfg:  # a whole open_clip_config.json
    model_cfg = model_cfg["model_cfg"]
  unknown = sorted(set(model_cfg) - _TOP_KEYS)
  if unknown:
    raise ValueError(f"not a CLIPA open_clip config: unsupported key(s) {unknown}.")
  for key in ("vision_cfg", "text_cfg"):
    if not isinstance(model_cfg.get(key), Mapping):
      raise ValueError(f"open_clip config lacks the {key!r} section.")
  _refuse_if_set(model_cfg, "model_cfg", ("quick_gelu", "custom_text",
                                          "multimodal_cfg", "nonscalar_logit_scale"))
  vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
  for section, cfg, known in (("vision_cfg", vision, _VISION_KEYS),
                              ("text_cfg", text, _TEXT_KEYS)):
    unknown = sorted(set(cfg) - known)
    if unknown:
      raise ValueError(f"not a CLIPA open_clip config: unsupported {section} key(s) {unknown}.")
    _refuse_if_set(cfg, section, _CUSTOM_BLOCK_KEYS)
    if cfg.get("block_type") not in (None, "default"):
      raise ValueError(f"not a CLIPA open_clip config: {section}.block_type="
                       f"{cfg['block_type']!r}; CLIPA uses the default block.")
  _refuse_if_set(vision, "vision_cfg", ("timm_model_name", "attentional_pool"))
  _require(vision, "vision_cfg", "no_ln_pre", True, False)
  _require(vision, "vision_cfg", "pool_type", "avg", "tok")
  _require(vision, "vision_cfg", "final_ln_after_pool", True, False)
  _require(vision, "vision_cfg", "pos_embed_type", "learnable", "learnable")
  _refuse_if_set(text, "text_cfg", ("hf_model_name", "embed_cls", "proj_bias"))
  _require(text, "text_cfg", "pool_type", "last", "argmax")
  _require(text, "text_cfg", "no_causal_mask", True, False)
  _require(text, "text_cfg", "proj_type", "linear", "linear")
  _require(text, "text_cfg", "hf_tokenizer_name", open_clip_config.HF_TOKENIZER, None)
  differs = [_check_act_norm(vision, "vision_cfg"), _check_act_norm(text, "text_cfg")]

  width = _positive_int(vision, "vision_cfg", "width", 768)
  head_width = _positive_int(vision, "vision_cfg", "head_width", 64)
  if width % head_width:
    raise ValueError(f"open_clip config vision_cfg.width={width} is not a multiple of "
                     f"head_width={head_width}.")
  patch = _positive_int(vision, "vision_cfg", "patch_size", 16)
  image_size = vision.get("image_size", 224)
  if isinstance(image_size, (list, tuple)):
    if len(image_size) != 2 or image_size[0] != image_size[1]:
      raise ValueError(f"open_clip config vision_cfg.image_size={image_size!r}: clipa_t5x "
                       "supports square inputs only.")
    image_size = image_size[0]
  image_size = _positive_int({"image_size": image_size}, "vision_cfg", "image_size")
  if image_size % patch:
    raise ValueError(f"open_clip config vision_cfg.image_size={image_size} is not a multiple of "
                     f"patch_size={patch}.")
  text_width = _positive_int(text, "text_cfg", "width", 512)
  # open_clip sizes the MLP as int(width * mlp_ratio).
  image = TowerConfig(
      width=width, depth=_positive_int(vision, "vision_cfg", "layers", 12),
      heads=width // head_width, mlp_dim=int(width * float(vision.get("mlp_ratio", 4.0))),
      patch_size=patch)
  text_tower = TowerConfig(
      width=text_width, depth=_positive_int(text, "text_cfg", "layers", 12),
      heads=_positive_int(text, "text_cfg", "heads", 8),
      mlp_dim=int(text_width * float(text.get("mlp_ratio", 4.0))),
      vocab_size=_positive_int(text, "text_cfg", "vocab_size", 49408))
  config = ClipaConfig(image=image, text=text_tower,
                       embed_dim=_positive_int(model_cfg, "model_cfg", "embed_dim"),
                       **_loss_fields(model_cfg))
  if any(differs):
    logger.info(
        "open_clip config without CLIPA's act_kwargs/norm_kwargs (tanh GELU, LayerNorm eps "
        "1e-6): open_clip runs it with other ones; clipa_t5x computes the original CLIPA "
        "function (tanh GELU, eps 1e-6) the weights were trained with.")
  return config, image_size, _positive_int(text, "text_cfg", "context_length", 77)


def _loss_fields(model_cfg: Mapping[str, Any]) -> Dict[str, Any]:
  """``ClipaConfig`` loss fields: a ``model_cfg`` with ``init_logit_bias`` is a sigmoid model."""
  bias = model_cfg.get("init_logit_bias")
  if bias is None:
    return {}
  fields = {"loss": "sigmoid", "init_logit_bias": float(bias)}
  scale = model_cfg.get("init_logit_scale")
  if scale is not None and abs(float(scale) - losses.SIGMOID_INIT_LOG_TEMPERATURE) > 1e-9:
    fields["init_log_temperature"] = float(scale)
  return fields


# --------------------------------------------------------------------------
# Expected open_clip state-dict shapes.

def _tower_block_shapes(prefix: str, tower: TowerConfig) -> Dict[str, Tuple[int, ...]]:
  w, m = tower.width, tower.mlp_dim
  shapes = {}
  for i in range(tower.depth):
    b = f"{prefix}transformer.resblocks.{i}."
    shapes.update({
        b + "ln_1.weight": (w,), b + "ln_1.bias": (w,),
        b + "attn.in_proj_weight": (3 * w, w), b + "attn.in_proj_bias": (3 * w,),
        b + "attn.out_proj.weight": (w, w), b + "attn.out_proj.bias": (w,),
        b + "ln_2.weight": (w,), b + "ln_2.bias": (w,),
        b + "mlp.c_fc.weight": (m, w), b + "mlp.c_fc.bias": (m,),
        b + "mlp.c_proj.weight": (w, m), b + "mlp.c_proj.bias": (w,),
    })
  return shapes


def open_clip_state_dict_shapes(config: ClipaConfig, image_size: int,
                                text_length: int) -> Dict[str, Tuple[int, ...]]:
  """Every key of the open_clip state dict of ``config`` and its shape.

  Args:
    config: the model.
    image_size: square resolution (sets ``visual.positional_embedding``).
    text_length: context length (sets ``positional_embedding``).

  Returns:
    ``{key: shape}``, as ``open_clip.create_model`` builds it for the config of
    ``open_clip_config.open_clip_model_config``.
  """
  img, txt, e = config.image, config.text, config.embed_dim
  grid = image_size // img.patch_size
  shapes = {
      "logit_scale": (),
      "visual.class_embedding": (img.width,),
      "visual.positional_embedding": (grid * grid + 1, img.width),
      "visual.proj": (img.width, e),
      "visual.conv1.weight": (img.width, 3, img.patch_size, img.patch_size),
      "visual.ln_post.weight": (img.width,), "visual.ln_post.bias": (img.width,),
      "token_embedding.weight": (txt.vocab_size, txt.width),
      "positional_embedding": (text_length, txt.width),
      "ln_final.weight": (txt.width,), "ln_final.bias": (txt.width,),
      "text_projection": (txt.width, e),
  }
  if config.loss == "sigmoid":
    shapes["logit_bias"] = ()
  shapes.update(_tower_block_shapes("visual.", img))
  shapes.update(_tower_block_shapes("", txt))
  return shapes


# --------------------------------------------------------------------------
# Layout conversion (numpy; ``_from_torch_layout`` also traces under jax.eval_shape).

def _get(params: Mapping[str, Any], path: str) -> Any:
  node = params
  for part in path.split("/"):
    if not isinstance(node, Mapping) or part not in node:
      raise ValueError(f"params lack {path!r}: they do not belong to this model config.")
    node = node[part]
  return node


def _set(tree: Dict[str, Any], path: str, value: Any) -> None:
  parts = path.split("/")
  node = tree
  for part in parts[:-1]:
    node = node.setdefault(part, {})
  node[parts[-1]] = value


# Parameters open_clip holds as ours are, or transposed (True): (ours, theirs, transposed);
# _BLOCK_PLAIN's paths are within one encoder block.
_PLAIN = (("img/encoder_norm/scale", "visual.ln_post.weight", False),
          ("img/encoder_norm/bias", "visual.ln_post.bias", False),
          ("img/head/kernel", "visual.proj", False),
          ("txt/embedding/embedding", "token_embedding.weight", False),
          ("txt/encoder_norm/scale", "ln_final.weight", False),
          ("txt/encoder_norm/bias", "ln_final.bias", False),
          ("txt/head/kernel", "text_projection", False))
_BLOCK_PLAIN = (("norm_attn/scale", "ln_1.weight", False), ("norm_attn/bias", "ln_1.bias", False),
                ("attention/out/bias", "attn.out_proj.bias", False),
                ("norm_mlp/scale", "ln_2.weight", False), ("norm_mlp/bias", "ln_2.bias", False),
                ("mlp/fc_in/kernel", "mlp.c_fc.weight", True),
                ("mlp/fc_in/bias", "mlp.c_fc.bias", False),
                ("mlp/fc_out/kernel", "mlp.c_proj.weight", True),
                ("mlp/fc_out/bias", "mlp.c_proj.bias", False))


def _plain_to_torch(p: Mapping[str, Any], table, ours: str = "",
                    theirs: str = "") -> Dict[str, Any]:
  return {theirs + t: _get(p, ours + o).T if transposed else _get(p, ours + o)
          for o, t, transposed in table}


def _plain_from_torch(sd: Mapping[str, Any], table, out: Dict[str, Any], ours: str = "",
                      theirs: str = "") -> None:
  for o, t, transposed in table:
    _set(out, ours + o, sd[theirs + t].T if transposed else sd[theirs + t])


def _block_to_torch(p: Mapping[str, Any], tower: TowerConfig, i: int, ours: str,
                    theirs: str) -> Dict[str, Any]:
  w = tower.width
  a = f"{ours}/encoder/encoderblock_{i}/"
  t = f"{theirs}transformer.resblocks.{i}."
  qkv = ("query", "key", "value")
  return {
      t + "attn.in_proj_weight": np.concatenate(
          [_get(p, a + f"attention/{n}/kernel").reshape(w, w).T for n in qkv], axis=0),
      t + "attn.in_proj_bias": np.concatenate(
          [_get(p, a + f"attention/{n}/bias").reshape(w) for n in qkv], axis=0),
      t + "attn.out_proj.weight": _get(p, a + "attention/out/kernel").reshape(w, w).T,
      **_plain_to_torch(p, _BLOCK_PLAIN, a, t),
  }


def _block_from_torch(sd: Mapping[str, Any], tower: TowerConfig, i: int, ours: str,
                      theirs: str, out: Dict[str, Any]) -> None:
  w, h, d = tower.width, tower.heads, tower.head_dim
  a = f"{ours}/encoder/encoderblock_{i}/"
  t = f"{theirs}transformer.resblocks.{i}."
  in_w, in_b = sd[t + "attn.in_proj_weight"], sd[t + "attn.in_proj_bias"]
  for j, name in enumerate(("query", "key", "value")):
    _set(out, a + f"attention/{name}/kernel", in_w[j * w:(j + 1) * w].T.reshape(w, h, d))
    _set(out, a + f"attention/{name}/bias", in_b[j * w:(j + 1) * w].reshape(h, d))
  _set(out, a + "attention/out/kernel", sd[t + "attn.out_proj.weight"].T.reshape(h, d, w))
  _plain_from_torch(sd, _BLOCK_PLAIN, out, a, t)


def image_position_embedding(config: ClipaConfig, image_size: int) -> np.ndarray:
  """open_clip's ``visual.positional_embedding`` for our model: [zero cls row; sin-cos]."""
  grid = image_size // config.image.patch_size
  pe = vit.posemb_sincos_2d(grid, grid, config.image.width)
  return np.concatenate([np.zeros((1, config.image.width), np.float32), pe], axis=0)


def _to_torch_layout(params: Mapping[str, Any], config: ClipaConfig,
                     image_size: int) -> Dict[str, Any]:
  """Our parameter tree → open_clip keys (no dtype or shape checks)."""
  img, txt = config.image, config.text
  sd = {
      "logit_scale": _get(params, "log_temperature").reshape(()),
      "visual.class_embedding": _get(params, "img/cls").reshape(img.width),
      "visual.positional_embedding": image_position_embedding(config, image_size),
      "visual.conv1.weight": _get(params, "img/embedding/kernel").transpose(3, 2, 0, 1),
      "positional_embedding": _get(params, "txt/pos_embedding")[0],
      **_plain_to_torch(params, _PLAIN),
  }
  if config.loss == "sigmoid":
    sd["logit_bias"] = _get(params, "logit_bias").reshape(())
  for i in range(img.depth):
    sd.update(_block_to_torch(params, img, i, "img", "visual."))
  for i in range(txt.depth):
    sd.update(_block_to_torch(params, txt, i, "txt", ""))
  return sd


def _from_torch_layout(sd: Mapping[str, Any], config: ClipaConfig) -> NestedArrays:
  """open_clip keys → our parameter tree (no checks; the cls row is *not* folded)."""
  img, txt = config.image, config.text
  out: Dict[str, Any] = {}
  _set(out, "log_temperature", sd["logit_scale"].reshape(()))
  if "logit_bias" in sd:
    _set(out, "logit_bias", sd["logit_bias"].reshape(()))
  _set(out, "img/cls", sd["visual.class_embedding"].reshape(1, 1, img.width))
  _set(out, "img/embedding/kernel", sd["visual.conv1.weight"].transpose(2, 3, 1, 0))
  _set(out, "txt/pos_embedding", sd["positional_embedding"][None])
  _plain_from_torch(sd, _PLAIN, out)
  for i in range(img.depth):
    _block_from_torch(sd, img, i, "img", "visual.", out)
  for i in range(txt.depth):
    _block_from_torch(sd, txt, i, "txt", "", out)
  return out


def leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  """``{"img/head/kernel": array, ...}`` from nested parameter dicts (``nest_paths`` undoes it)."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(leaf_paths(value, path + "/"))
    else:
      flat[path] = value
  return flat


def clipa_param_shapes(config: ClipaConfig, text_length: int) -> Dict[str, Tuple[int, ...]]:
  """Every parameter of our model of ``config`` ('img/...' paths) and its shape.

  Derived from the open_clip shapes through the import mapping (traced with
  ``jax.eval_shape``: nothing is allocated, so it is cheap for bigG too).
  """
  import jax  # pylint: disable=import-outside-toplevel
  patch = config.image.patch_size
  abstract = {k: jax.ShapeDtypeStruct(s, np.float32)
              for k, s in open_clip_state_dict_shapes(config, patch, text_length).items()}
  tree = jax.eval_shape(lambda sd: _from_torch_layout(sd, config), abstract)
  return {path: tuple(x.shape) for path, x in leaf_paths(tree).items()}


def unbox(params: Any) -> Any:
  """Plain arrays from boxed (``nn.LogicallyPartitioned``) leaves; a no-op otherwise."""
  from flax import linen as nn  # pylint: disable=import-outside-toplevel
  return nn.meta.unbox(params)


# --------------------------------------------------------------------------
# Export.

def to_open_clip_state_dict(params: Mapping[str, Any], config: ClipaConfig,
                            image_size: int) -> Dict[str, np.ndarray]:
  """Our parameters as an open_clip CLIPA state dict (numpy, torch layouts).

  Args:
    params: our parameter tree (``{'img', 'txt', 'log_temperature'}``; numpy or
      jax arrays, boxed or not).
    config: the model the parameters belong to.
    image_size: the resolution the open_clip model will expect; the visual
      position embedding is our fixed sin-cos at that grid (cls row zero).

  Returns:
    ``{key: float32 array}``; the text context length is the length of
    ``txt/pos_embedding``.

  Raises:
    ValueError: when ``params`` do not match ``config`` (naming the parameter).
  """
  patch = config.image.patch_size
  if int(image_size) < patch or int(image_size) % patch:
    raise ValueError(f"image_size {image_size} is not a positive multiple of the patch size "
                     f"{patch}.")
  params = unbox(params)
  ours = {k: np.asarray(v) for k, v in leaf_paths(params).items()}
  pos = ours.get("txt/pos_embedding")
  text_length = int(pos.shape[1]) if pos is not None and pos.ndim == 3 else 1
  wanted = clipa_param_shapes(config, text_length)
  missing = [k for k in wanted if k not in ours]
  if missing:
    raise ValueError(f"params lack {len(missing)} parameter(s) of this model config, e.g. "
                     f"{missing[:3]}: they belong to another config.")
  unexpected = sorted(set(ours) - set(wanted))
  if unexpected:
    raise ValueError(f"params hold {len(unexpected)} parameter(s) this model config does not "
                     f"have, e.g. {unexpected[:3]}: they belong to another config.")
  for key, shape in wanted.items():
    if ours[key].shape != shape:
      raise ValueError(f"parameter {key!r} has shape {ours[key].shape} but the model config "
                       f"needs {shape}: the params belong to another config.")
  sd = _to_torch_layout(nest_paths(ours), config, int(image_size))
  expected = open_clip_state_dict_shapes(config, int(image_size), text_length)
  out = {}
  for key, shape in expected.items():
    value = np.asarray(sd[key], dtype=np.float32)
    if not value.flags.c_contiguous:  # (ascontiguousarray would make 0-d arrays 1-d)
      value = np.ascontiguousarray(value)
    if value.shape != shape:
      raise ValueError(f"parameter for open_clip {key!r} has shape {value.shape} but the model "
                       f"config needs {shape}: the params belong to another config.")
    out[key] = value
  return out


def nest_paths(flat: Mapping[str, Any]) -> Dict[str, Any]:
  """The nested dict of ``{'a/b/c': value}`` (the inverse of ``leaf_paths``)."""
  tree: Dict[str, Any] = {}
  for path, value in flat.items():
    _set(tree, path, value)
  return tree


def _write_atomically(out_dir: str, overwrite: bool, write: Any) -> str:
  """Runs ``write(tmp_dir)`` and swaps tmp_dir in at out_dir (never a half-written out_dir)."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir):
    if not os.path.isdir(out_dir):
      raise ValueError(f"{out_dir} exists and is not a directory; choose another --out.")
    if os.listdir(out_dir) and not overwrite:
      raise ValueError(f"{out_dir} is not empty; choose a new directory or pass overwrite=True "
                       "(--overwrite).")
  return paths.replace_dir(out_dir, write)


def export_open_clip(params: Mapping[str, Any], config: ClipaConfig, out_dir: str,
                     image_size: int, text_length: Optional[int] = None,
                     overwrite: bool = False) -> str:
  """Writes an open_clip model folder (config JSON + safetensors weights).

  ``open_clip.create_model('local-dir:' + out_dir)`` loads it with
  ``strict=True`` and computes our embeddings (tanh GELU and LayerNorm eps
  1e-6 are written into the config). Needs no torch.

  Args:
    params: our parameter tree.
    config: its model config.
    out_dir: the folder to create; written to a temporary sibling first and
      renamed when complete.
    image_size: resolution of the exported model (any multiple of the patch
      size: the image position embedding is the fixed sin-cos of that grid).
    text_length: context length; ``None`` keeps the length of
      ``txt/pos_embedding``. Another length resizes it bilinearly, as between
      the pre-training and fine-tuning stages.
    overwrite: replace a non-empty ``out_dir``.

  Returns:
    ``out_dir`` (absolute).

  Raises:
    ValueError: on a non-empty ``out_dir`` (without ``overwrite``), or params
      that do not match ``config``.
  """
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  params = unbox(params)
  pos = _get(params, "txt/pos_embedding")
  stored = int(np.shape(pos)[1])
  if text_length is None:
    text_length = stored
  text_length = int(text_length)
  if text_length < 1:
    raise ValueError(f"text_length must be positive, got {text_length}.")
  if text_length != stored:
    from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
    logger.warning("Resizing txt/pos_embedding from length %d to %d (bilinear) for export.",
                   stored, text_length)
    params = nest_paths({**leaf_paths(params), "txt/pos_embedding": np.asarray(
        checkpoints.resize_text_pos_embedding(np.asarray(pos), text_length))})
  state_dict = to_open_clip_state_dict(params, config, image_size)
  record = {
      "model_cfg": open_clip_config.open_clip_model_config(config, int(image_size), text_length),
      "preprocess_cfg": open_clip_config.open_clip_preprocess_config(int(image_size)),
  }

  def write(directory: str) -> None:
    paths.write_json_atomic(os.path.join(directory, CONFIG_FILE), record)
    safetensors.numpy.save_file(state_dict, os.path.join(directory, WEIGHTS_FILE),
                                metadata={"format": "pt", "producer": "clipa_t5x"})

  return _write_atomically(out_dir, overwrite, write)


# --------------------------------------------------------------------------
# Import.

def _to_numpy(key: str, value: Any) -> np.ndarray:
  """float32 numpy copy of a numpy array or torch tensor (torch only touched if given)."""
  if type(value).__module__.split(".")[0] == "torch":
    value = value.detach().cpu().float().numpy()
  try:
    return np.asarray(value, dtype=np.float32)
  except (TypeError, ValueError) as e:
    raise ValueError(f"state dict value {key!r} is not an array ({type(value).__name__}).") from e


def _source_dtype(value: Any) -> np.dtype:
  dtype = getattr(value, "dtype", None)
  if type(value).__module__.split(".")[0] == "torch":
    return np.dtype(np.float32) if str(dtype) in ("torch.float32", "torch.float64") else None
  try:
    return np.dtype(dtype)
  except TypeError:
    return None


def _check_position_embedding(value: np.ndarray, source_dtype: Optional[np.dtype],
                              config: ClipaConfig) -> None:
  width = config.image.width
  rows = value.shape[0] - 1
  grid = int(round(rows**0.5))
  if grid * grid != rows:
    raise ValueError(f"visual.positional_embedding has {value.shape[0]} rows, not 1 + a square "
                     "grid of patches.")
  expected = vit.posemb_sincos_2d(grid, grid, width)
  atol = _POSEMB_ATOL.get(source_dtype, _POSEMB_ATOL_LOW_PRECISION)
  diff = float(np.max(np.abs(value[1:] - expected))) if rows else 0.0
  if diff > atol:
    raise ValueError(
        f"visual.positional_embedding differs from CLIPA's fixed 2-D sin-cos by up to {diff:.3g} "
        f"(tolerance {atol:g}): these weights have a learned (or otherwise computed) image "
        "position embedding, which clipa_t5x models cannot hold.")


def from_open_clip_state_dict(state_dict: Mapping[str, Any], config: ClipaConfig,
                              image_size: Optional[int] = None,
                              text_length: Optional[int] = None) -> NestedArrays:
  """An open_clip CLIPA state dict → our parameter tree (numpy float32).

  Args:
    state_dict: ``{key: array}`` with torch tensors or numpy arrays as values
      (torch is never imported here).
    config: the model the weights belong to.
    image_size / text_length: when given, the position embeddings must have
      the matching lengths; otherwise any grid / length is accepted.

  Returns:
    The nested parameter dict (``img``, ``txt``, ``log_temperature``).

  Raises:
    ValueError: naming a missing key, an unexpected key, a wrong shape, or a
      visual position embedding that is not CLIPA's fixed sin-cos.
  """
  if not isinstance(state_dict, Mapping):
    raise ValueError(f"a state dict must be a dict of arrays, got {type(state_dict).__name__}.")
  img_pos = state_dict.get("visual.positional_embedding")
  txt_pos = state_dict.get("positional_embedding")
  patch = config.image.patch_size
  if image_size is None:
    rows = np.shape(img_pos)[0] - 1 if img_pos is not None and np.ndim(img_pos) == 2 else 1
    image_size = max(1, int(round(max(rows, 1)**0.5))) * patch
  if text_length is None:
    text_length = np.shape(txt_pos)[0] if txt_pos is not None and np.ndim(txt_pos) == 2 else 1
  expected = open_clip_state_dict_shapes(config, int(image_size), int(text_length))
  missing = [k for k in expected if k not in state_dict]
  if missing:
    raise ValueError(f"state dict lacks {len(missing)} key(s) of this model config, e.g. "
                     f"{missing[:3]}: wrong model config, or not an open_clip CLIPA state dict.")
  unexpected = sorted(k for k in state_dict if k not in expected)
  if unexpected:
    raise ValueError(f"state dict has {len(unexpected)} key(s) a CLIPA model of this config does "
                     f"not have, e.g. {unexpected[:3]}: wrong model config.")
  arrays = {}
  for key, shape in expected.items():
    value = state_dict[key]
    got = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
    if key in ("logit_scale", "logit_bias") and got == (1,):
      got = ()
    if got != shape:
      raise ValueError(f"state dict {key!r} has shape {got}, expected {shape} for this model "
                       "config.")
    arrays[key] = _to_numpy(key, value)
  pos = arrays["visual.positional_embedding"]
  _check_position_embedding(pos, _source_dtype(img_pos), config)
  params = _from_torch_layout(arrays, config)
  if np.any(pos[0] != 0):
    # open_clip adds both to the cls token only, so folding them is exact.
    params["img"]["cls"] = params["img"]["cls"] + pos[0].reshape(1, 1, -1)
  return params


def _read_weights(path: str) -> Mapping[str, Any]:
  lower = path.lower()
  if lower.endswith(".safetensors"):
    import safetensors.numpy  # pylint: disable=import-outside-toplevel
    return safetensors.numpy.load_file(path)
  if lower.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  if lower.endswith(_TORCH_SUFFIXES):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ValueError(f"reading {path} needs torch: {TORCH_EXTRA_HINT} (or convert the file to "
                       ".safetensors).") from e
    return torch.load(path, map_location="cpu", weights_only=True)
  raise ValueError(f"unknown weights file type {path!r}; use .safetensors, .bin, .pt, .pth or "
                   ".npz.")


def _unwrap_state_dict(state_dict: Any, path: str) -> Dict[str, Any]:
  if isinstance(state_dict, Mapping) and "state_dict" in state_dict and isinstance(
      state_dict["state_dict"], Mapping):
    state_dict = state_dict["state_dict"]
  if not isinstance(state_dict, Mapping) or not state_dict:
    raise ValueError(f"{path} does not hold a state dict (a non-empty dict of arrays).")
  if all(k.startswith("module.") for k in state_dict):
    state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def read_model_config(model_config: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
  """An open_clip model config: a released name, a JSON path or a dict (returned as a dict)."""
  if isinstance(model_config, Mapping):
    return dict(model_config)
  if not isinstance(model_config, str):
    raise ValueError(f"model_config must be a name, a JSON path or a dict, got "
                     f"{type(model_config).__name__}.")
  if model_config in RELEASED_CONFIGS:
    return RELEASED_CONFIGS[model_config]
  if os.path.isfile(model_config):
    try:
      with open(model_config) as f:
        return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{model_config} is not valid JSON ({e}).") from e
  raise ValueError(f"unknown open_clip model {model_config!r}: use one of "
                   f"{sorted(RELEASED_CONFIGS)} or a path to a model-config JSON.")


def describe_open_clip(path: str, model_config: Union[None, str, Mapping[str, Any],
                                                     ClipaConfig] = None
                       ) -> Tuple[str, ClipaConfig, Optional[int], Optional[int]]:
  """``(weights file, config, image_size, text_length)`` of open_clip weights, reading no array.

  Args, errors: as ``load_open_clip``. A ``ClipaConfig`` as ``model_config``
  leaves the sizes None (the weights' position embeddings give them).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    weights = next((os.path.join(path, n) for n in _FOLDER_WEIGHTS
                    if os.path.isfile(os.path.join(path, n))), None)
    if weights is None:
      raise ValueError(f"{path} holds none of the weight files {list(_FOLDER_WEIGHTS)}.")
    if model_config is None:
      config_path = os.path.join(path, CONFIG_FILE)
      if not os.path.isfile(config_path):
        raise ValueError(f"{path} has no {CONFIG_FILE}; pass model_config (--model_config).")
      model_config = config_path
  elif os.path.isfile(path):
    weights = path
    if model_config is None:
      raise ValueError(f"{path} is a weights file without a model config: pass model_config "
                       f"(--model_config), e.g. one of {sorted(RELEASED_CONFIGS)}.")
  else:
    raise ValueError(f"no open_clip weights at {path!r} (neither a folder nor a file).")
  if isinstance(model_config, ClipaConfig):
    return weights, model_config, None, None
  return (weights,) + clipa_config_from_open_clip(read_model_config(model_config))


def load_open_clip(path: str, model_config: Union[None, str, Mapping[str, Any],
                                                 ClipaConfig] = None
                   ) -> Tuple[NestedArrays, ClipaConfig, int, int]:
  """Reads open_clip CLIPA weights as our parameters.

  Args:
    path: an open_clip model folder (``open_clip_config.json`` plus
      ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``, as
      written by ``export_open_clip`` or downloaded from the hub), or one
      weights file: ``.safetensors``, ``.npz``, or ``.bin``/``.pt``/``.pth``
      (needs torch). A ``{'state_dict': ...}`` wrapper and a ``module.``
      prefix are removed.
    model_config: required with a weights file, overrides a folder's config:
      an open_clip model name in ``RELEASED_CONFIGS`` (e.g.
      'ViT-H-14-CLIPA'), a path to a model-config JSON (bare ``model_cfg`` or
      a whole ``open_clip_config.json``), a dict, or our ``ClipaConfig``.

  Returns:
    ``(params, config, image_size, text_length)``; ``params`` is a nested dict
    of float32 numpy arrays.

  Raises:
    ValueError: on a missing config, a non-CLIPA config, or weights that do not
      match it.
  """
  weights, config, image_size, text_length = describe_open_clip(path, model_config)
  state_dict = _unwrap_state_dict(_read_weights(weights), weights)
  params = from_open_clip_state_dict(state_dict, config, image_size, text_length)
  text_length = int(np.shape(params["txt"]["pos_embedding"])[1])
  if image_size is None:  # the grid of the stored visual position embedding
    rows = np.shape(state_dict["visual.positional_embedding"])[0] - 1
    image_size = int(round(rows**0.5)) * config.image.patch_size
  return params, config, image_size, text_length
