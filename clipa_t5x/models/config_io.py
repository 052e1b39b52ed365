"""A model's description as JSON, stored next to its checkpoints.

Every stage directory gets ``model_config.json``: the ``ClipaConfig`` (the
architecture; no training settings) plus the stage's resolution and text
length. With it, a checkpoint directory is
self-describing: inference, export and evaluation can rebuild the model
without the gin files that trained it.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional

from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import paths
from clipa_t5x.models.configs import ClipaConfig, TowerConfig

FORMAT = "clipa_t5x.model_config.v1"
# Training settings that files written before they left ClipaConfig still hold; ignored.
_OLD_TRAINING_FIELDS = ("mask_ratio", "mask_type")


def config_to_dict(config: ClipaConfig) -> Dict[str, Any]:
  """The fields of ``config`` as plain JSON-serialisable values."""
  return dataclasses.asdict(config)


def config_from_dict(data: Dict[str, Any]) -> ClipaConfig:
  """Inverse of ``config_to_dict`` (validates like the dataclass does).

  Training settings recorded by older versions (``mask_ratio``,
  ``mask_type``) are ignored: they are not part of the architecture.

  Raises:
    ValueError: on unknown or missing fields, naming them.
  """
  if not isinstance(data, dict):
    raise ValueError(f"a model config must be a JSON object, got {type(data).__name__}.")
  values = {k: v for k, v in data.items() if k not in _OLD_TRAINING_FIELDS}
  fields = {f.name for f in dataclasses.fields(ClipaConfig)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"unknown ClipaConfig field(s) {unknown}; known: {sorted(fields)}.")
  tower_fields = {f.name for f in dataclasses.fields(TowerConfig)}
  for name in ("image", "text"):
    tower = values.get(name)
    if not isinstance(tower, dict):
      raise ValueError(f"model config field {name!r} must be an object of TowerConfig fields.")
    bad = sorted(set(tower) - tower_fields)
    if bad:
      raise ValueError(f"unknown TowerConfig field(s) {bad} in {name!r}; known: "
                       f"{sorted(tower_fields)}.")
  try:
    for name in ("image", "text"):
      values[name] = TowerConfig(**values[name])
    return ClipaConfig(**values)
  except TypeError as e:  # a missing required field
    raise ValueError(f"incomplete model config: {e}") from e


def write_model_config(directory: str, config: ClipaConfig, image_size: int, text_length: int,
                       **extra: Any) -> str:
  """Writes ``directory/model_config.json`` atomically; returns its path.

  Args:
    directory: a stage (or export) directory.
    config: the model.
    image_size: the resolution the parameters were trained at.
    text_length: the length of the text position embedding.
    **extra: more JSON values to record (e.g. ``stage='pretrain'``).
  """
  paths.makedirs(directory)
  path = os.path.join(directory, model_dir_lib.MODEL_CONFIG)
  record = {"format": FORMAT, "model": config_to_dict(config),
            "image_size": int(image_size), "text_length": int(text_length), **extra}
  paths.write_json_atomic(path, record, indent=2, sort_keys=True)
  return path


def read_model_config(directory: str) -> Optional[Dict[str, Any]]:
  """Reads ``directory/model_config.json``; None when there is none.

  Returns:
    ``{'model': ClipaConfig, 'image_size': int, 'text_length': int, ...}``.

  Raises:
    ValueError: when the file exists but is not a valid model config.
  """
  path = os.path.join(directory, model_dir_lib.MODEL_CONFIG)
  if not paths.exists(path):
    return None
  try:
    record = json.loads(paths.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); delete it or rewrite it.") from e
  if not isinstance(record, dict) or record.get("format") != FORMAT:
    raise ValueError(f"{path} is not a clipa_t5x model config (format {FORMAT!r} expected).")
  record = dict(record)
  try:
    record["model"] = config_from_dict(record["model"])
  except (KeyError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from e
  return record
