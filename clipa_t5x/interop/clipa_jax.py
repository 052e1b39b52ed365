"""The official CLIPA JAX checkpoints (UCSC-VLAA/CLIPA ``clipa_jax``) <-> our parameters.

The released CLIPA-v2 JAX weights are big_vision ``.npz`` files: one array per
parameter, named by its path joined with ``/``, either bare or under a
``params/`` (optax era) or ``opt/target/`` (Flax-optimizer era) prefix. The
tree, and how each name maps onto ours (the shapes are the same, except ``t``)::

  t [1]                                    log_temperature []   (exp(t) scales the logits)
  img/embedding/kernel [p, p, 3, W]        img/embedding/kernel (bias-free conv, HWIO)
  img/cls [1, 1, W]                        img/cls
  img/Transformer/encoderblock_<i>/        img/encoder/encoderblock_<i>/
    LayerNorm_0, LayerNorm_1                 norm_attn, norm_mlp            ({scale, bias})
    MultiHeadDotProductAttention_0/          attention/  (query, key, value: kernel [W, H, D],
                                               bias [H, D]; out: kernel [H, D, W], bias [W])
    MlpBlock_0/Dense_0, Dense_1              mlp/fc_in, mlp/fc_out          ({kernel, bias})
  img/encoder_norm, img/head/kernel [W, E] img/encoder_norm, img/head/kernel
  txt/Embed_0/embedding [V, W]             txt/embedding/embedding
  txt/pos_embedding [1, L, W]              txt/pos_embedding
  txt/Transformer/..., txt/encoder_norm, txt/head/kernel   as for img

CLIPA-v2 trains with the fixed ``sincos2d`` image position embedding, which is
not stored; a file holding a learned ``img/pos_embedding`` is refused. The
architecture is read off the shapes (``config_from_shapes``), and reading is
strict: every array must be used, every expected one present, every shape
right, and errors name the arrays.
"""

import os
import re
import zipfile
from typing import Any, Dict, Mapping, Tuple

import numpy as np
from numpy.lib import format as npy_format

from clipa_t5x.interop import open_clip
from clipa_t5x.models.configs import ClipaConfig, TowerConfig

FORMAT = "clipa_jax"
_PREFIXES = ("params/", "opt/target/")
# Official names -> ours, applied to each path component in turn.
_RENAMES = {"Transformer": "encoder", "LayerNorm_0": "norm_attn", "LayerNorm_1": "norm_mlp",
            "MultiHeadDotProductAttention_0": "attention", "MlpBlock_0": "mlp",
            "Dense_0": "fc_in", "Dense_1": "fc_out"}
_BACK = {v: k for k, v in _RENAMES.items()}
# Whole names renamed at once (component renames would clash: the patch conv is 'embedding' too).
_WHOLE = {"t": "log_temperature", "txt/Embed_0/embedding": "txt/embedding/embedding"}
_WHOLE_BACK = {v: k for k, v in _WHOLE.items()}
_BLOCK = re.compile(r"(img|txt)/Transformer/encoderblock_(\d+)/")

Shapes = Dict[str, Tuple[int, ...]]


def to_ours(name: str) -> str:
  """Our parameter path of an official array name (``t`` -> ``log_temperature``)."""
  return _WHOLE.get(name) or "/".join(_RENAMES.get(p, p) for p in name.split("/"))


def to_official(path: str) -> str:
  """The official array name of one of our parameter paths."""
  return _WHOLE_BACK.get(path) or "/".join(_BACK.get(p, p) for p in path.split("/"))


def _strip_prefix(names) -> Tuple[str, Dict[str, str]]:
  """(prefix, {official name: stored name}) of the arrays of a two-tower tree."""
  for prefix in ("",) + _PREFIXES:
    picked = {n[len(prefix):]: n for n in names if n.startswith(prefix)}
    if "t" in picked and any(k.startswith("img/") for k in picked):
      return prefix, picked
  raise ValueError("no CLIPA two-tower tree in it (no 't' with 'img/...' arrays at the top, "
                   f"under {' or '.join(_PREFIXES)}): not an official CLIPA JAX checkpoint.")


def read_shapes(path: str) -> Shapes:
  """``{official name: shape}`` of an ``.npz``, from the array headers only (no data read)."""
  shapes = {}
  try:
    with zipfile.ZipFile(path) as archive:
      for info in archive.infolist():
        if not info.filename.endswith(".npy"):
          continue
        with archive.open(info) as f:
          version = npy_format.read_magic(f)
          reader = (npy_format.read_array_header_1_0 if version == (1, 0)
                    else npy_format.read_array_header_2_0)
          shapes[info.filename[:-len(".npy")]] = tuple(reader(f)[0])
  except (zipfile.BadZipFile, ValueError, OSError) as e:
    raise ValueError(f"{path} is not a readable .npz file ({e}).") from None
  _, picked = _strip_prefix(shapes)
  return {name: shapes[stored] for name, stored in picked.items()}


def _tower(shapes: Shapes, tower: str) -> TowerConfig:
  blocks = sorted({int(m.group(2)) for n in shapes for m in [_BLOCK.match(n)]
                   if m and m.group(1) == tower})
  if not blocks or blocks != list(range(len(blocks))):
    raise ValueError(f"{tower}/Transformer/encoderblock_<i> arrays are missing or not numbered "
                     f"0..n-1 (found {blocks[:8]}).")
  block = f"{tower}/Transformer/encoderblock_0/"
  try:
    width, heads, _ = shapes[block + "MultiHeadDotProductAttention_0/query/kernel"]
    mlp = shapes[block + "MlpBlock_0/Dense_0/kernel"][1]
    extra = ({"patch_size": shapes["img/embedding/kernel"][0]} if tower == "img"
             else {"vocab_size": shapes["txt/Embed_0/embedding"][0]})
    return TowerConfig(width=width, depth=len(blocks), heads=heads, mlp_dim=mlp, **extra)
  except KeyError as e:
    raise ValueError(f"array {e.args[0]!r} is missing.") from None
  except ValueError as e:  # a wrong rank in the unpacking
    raise ValueError(f"{tower} tower arrays have unexpected ranks ({e}).") from None


def config_from_shapes(shapes: Shapes) -> Tuple[ClipaConfig, int]:
  """``(config, text_length)`` of an official tree, checked strictly against its shapes.

  Raises:
    ValueError: naming unused arrays, missing ones, or a wrong shape.
  """
  if "img/pos_embedding" in shapes:
    raise ValueError("img/pos_embedding is stored: a learned image position embedding "
                     "(posemb='learn'); clipa_t5x's image tower uses CLIPA-v2's fixed sincos2d "
                     "and cannot hold it.")
  try:
    embed_dim = shapes["img/head/kernel"][1]
    text_length = shapes["txt/pos_embedding"][1]
  except KeyError as e:
    raise ValueError(f"array {e.args[0]!r} is missing.") from None
  config = ClipaConfig(image=_tower(shapes, "img"), text=_tower(shapes, "txt"),
                       embed_dim=embed_dim)
  want = {to_official(k): (1,) if k == "log_temperature" else s
          for k, s in open_clip.clipa_param_shapes(config, text_length).items()}
  unused = sorted(set(shapes) - set(want))
  missing = sorted(set(want) - set(shapes))
  if unused or missing:
    parts = ([f"{len(unused)} unused array(s) (e.g. {unused[:3]})"] if unused else []) + (
        [f"{len(missing)} missing (e.g. {missing[:3]})"] if missing else [])
    raise ValueError(f"{'; '.join(parts)} for the CLIPA model its shapes describe.")
  for name, shape in want.items():
    if tuple(shapes[name]) != tuple(shape):
      raise ValueError(f"array {name!r} has shape {tuple(shapes[name])}, expected {shape} for "
                       "the CLIPA model the other arrays describe.")
  return config, text_length


def load(path: str) -> Tuple[Dict[str, Any], ClipaConfig, int]:
  """Reads an official CLIPA JAX ``.npz`` as our parameters.

  Returns:
    ``(params, config, text_length)``: a nested dict of float32 numpy arrays,
    the architecture read off the shapes, and the text position length.
  """
  config, text_length = config_from_shapes(read_shapes(path))
  with np.load(path, allow_pickle=False) as data:
    _, picked = _strip_prefix(data.files)
    flat = {to_ours(name): np.asarray(data[stored], np.float32) for name, stored in picked.items()}
  flat["log_temperature"] = flat["log_temperature"].reshape(())  # t is [1]
  return open_clip.nest_paths(flat), config, text_length


def save(params: Mapping[str, Any], path: str) -> str:
  """Writes our parameters as an official-layout ``.npz`` (bare tree); returns ``path``."""
  flat = {}
  for key, value in open_clip.leaf_paths(open_clip.unbox(params)).items():
    value = np.asarray(value, np.float32)
    flat[to_official(key)] = value.reshape(1) if key == "log_temperature" else value
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **flat)
  return path
