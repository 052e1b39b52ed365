"""model_config.json: round trip, and clear errors on bad files."""

import json
import os

import pytest

from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x.models import config_io
from clipa_t5x.models import configs


def test_round_trip_every_variant(tmp_path):
  for name in configs.VARIANTS:
    config = configs.get_config(name, dtype="bfloat16", remat_policy="full")
    assert config_io.config_from_dict(config_io.config_to_dict(config)) == config
  config = configs.get_config("H/14")
  path = config_io.write_model_config(str(tmp_path), config, 70, 8, stage="pretrain")
  record = config_io.read_model_config(str(tmp_path))
  assert path == os.path.join(str(tmp_path), model_dir_lib.MODEL_CONFIG)
  assert record["model"] == config
  assert (record["image_size"], record["text_length"], record["stage"]) == (70, 8, "pretrain")
  assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))


def test_missing_file_is_none(tmp_path):
  assert config_io.read_model_config(str(tmp_path)) is None


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["model"].update(depth=3), "unknown ClipaConfig field"),
    (lambda d: d["model"]["image"].update(layers=3), "unknown TowerConfig field"),
    (lambda d: d["model"]["image"].pop("width"), "incomplete model config"),
    (lambda d: d["model"].update(text=5), "must be an object"),
    (lambda d: d.update(format="other"), "not a clipa_t5x model config"),
])
def test_bad_files_name_the_problem(tmp_path, mutate, message):
  config_io.write_model_config(str(tmp_path), configs.get_config("Ti/8"), 16, 8)
  path = tmp_path / model_dir_lib.MODEL_CONFIG
  record = json.loads(path.read_text())
  mutate(record)
  path.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=message):
    config_io.read_model_config(str(tmp_path))


def test_invalid_json(tmp_path):
  (tmp_path / model_dir_lib.MODEL_CONFIG).write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    config_io.read_model_config(str(tmp_path))


def test_files_written_before_attention_impl_load_with_auto(tmp_path):
  config_io.write_model_config(str(tmp_path), configs.get_config("Ti/8", attention_impl="xla"),
                               16, 8)
  path = tmp_path / model_dir_lib.MODEL_CONFIG
  record = json.loads(path.read_text())
  assert record["model"].pop("attention_impl") == "xla"
  path.write_text(json.dumps(record))
  assert config_io.read_model_config(str(tmp_path))["model"] == configs.get_config("Ti/8")


def test_files_with_training_settings_load_without_them(tmp_path):
  """Files written when ClipaConfig held mask_ratio / mask_type still load."""
  config_io.write_model_config(str(tmp_path), configs.get_config("Ti/8"), 16, 8)
  path = tmp_path / model_dir_lib.MODEL_CONFIG
  record = json.loads(path.read_text())
  assert "mask_ratio" not in record["model"] and "mask_type" not in record["model"]
  record["model"].update(mask_ratio=0.3, mask_type="grid")
  path.write_text(json.dumps(record))
  assert config_io.read_model_config(str(tmp_path))["model"] == configs.get_config("Ti/8")
