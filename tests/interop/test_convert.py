"""Tests of the ``python -m clipa_t5x.convert`` CLI (run in-process through ``main``)."""

import json
import os
import runpy
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop_helpers  # noqa: E402

from clipa_t5x import checkpoints  # noqa: E402
from clipa_t5x import convert  # noqa: E402
from clipa_t5x import model_dir as model_dir_lib  # noqa: E402
from clipa_t5x import paths  # noqa: E402
from clipa_t5x.interop import open_clip as oc  # noqa: E402
from clipa_t5x.models import config_io  # noqa: E402
from clipa_t5x.models import configs  # noqa: E402

VARIANT = "Ti/8"


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
  """A stage directory: a params-only checkpoint plus model_config.json (32 px, length 8)."""
  directory = str(tmp_path_factory.mktemp("stage"))
  params = interop_helpers.random_params(VARIANT, 32, 8, seed=7)
  checkpoints.save_params(directory, params, step=5)
  config_io.write_model_config(directory, configs.get_config(VARIANT), 32, 8)
  return directory, params


def _error_line(capsys) -> str:
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err, err
  return err


def test_cli_round_trip(stage, tmp_path, capsys):
  directory, params = stage
  exported = str(tmp_path / "open_clip")
  assert convert.main(["to-open-clip", "--checkpoint", directory, "--out", exported]) == 0
  assert "local-dir:" in capsys.readouterr().out
  with open(os.path.join(exported, oc.CONFIG_FILE)) as f:
    model_cfg = json.load(f)["model_cfg"]
  assert model_cfg["vision_cfg"]["image_size"] == 32
  assert model_cfg["text_cfg"]["context_length"] == 8

  imported = str(tmp_path / "imported")
  assert convert.main(["from-open-clip", "--weights", exported, "--out", imported]) == 0
  assert os.path.join(imported, "checkpoint_0") in capsys.readouterr().out
  restored, meta, _ = checkpoints.load_params(imported)
  interop_helpers.assert_identical(params, jax.tree.map(np.asarray, restored))
  assert meta["source"]["path"] == exported
  record = config_io.read_model_config(imported)
  assert (record["model"], record["image_size"], record["text_length"]) == (
      configs.get_config(VARIANT), 32, 8)


def test_cli_export_of_one_step_at_another_resolution(stage, tmp_path):
  directory, params = stage
  out = str(tmp_path / "e")
  assert convert.main(["to-open-clip", "--checkpoint", os.path.join(directory, "checkpoint_5"),
                       "--image_size", "64", "--out", out]) == 0
  loaded, config, image_size, text_length = oc.load_open_clip(out)
  assert (config, image_size, text_length) == (configs.get_config(VARIANT), 64, 8)
  interop_helpers.assert_identical(params, loaded)


def test_cli_from_weights_file_with_model_config_json(stage, tmp_path):
  directory, params = stage
  exported = oc.export_open_clip(params, configs.get_config(VARIANT), str(tmp_path / "e"), 32)
  imported = str(tmp_path / "imported")
  assert convert.main(["from-open-clip", "--weights", os.path.join(exported, oc.WEIGHTS_FILE),
                       "--model_config", os.path.join(exported, oc.CONFIG_FILE),
                       "--out", imported]) == 0
  restored, _, _ = checkpoints.load_params(imported)
  interop_helpers.assert_identical(params, jax.tree.map(np.asarray, restored))


def test_cli_model_flag_for_checkpoints_without_model_config(tmp_path, capsys):
  bare = str(tmp_path / "bare")
  params = interop_helpers.random_params(VARIANT, 32, 8, seed=8)
  checkpoints.save_params(bare, params, step=0)
  out = str(tmp_path / "e")
  assert convert.main(["to-open-clip", "--checkpoint", bare, "--out", out]) == 2
  err = _error_line(capsys)
  assert "model_config.json" in err and "name the model" in err
  assert convert.main(["to-open-clip", "--checkpoint", bare, "--model", VARIANT,
                       "--out", out]) == 2
  assert "--image_size" in _error_line(capsys)
  assert convert.main(["to-open-clip", "--checkpoint", bare, "--model", VARIANT,
                       "--image_size", "32", "--out", out]) == 0
  loaded, _, _, text_length = oc.load_open_clip(out)
  assert text_length == 8
  interop_helpers.assert_identical(params, loaded)


def test_cli_official_npz_to_checkpoint_and_to_open_clip(stage, tmp_path, capsys):
  from clipa_t5x.interop import clipa_jax  # pylint: disable=import-outside-toplevel
  _, params = stage
  npz = clipa_jax.save(params, str(tmp_path / "clipa.npz"))
  imported = str(tmp_path / "imported")
  assert convert.main(["from-clipa-jax", "--weights", npz, "--image_size", "32",
                       "--out", imported]) == 0
  restored, meta, _ = checkpoints.load_params(imported)
  interop_helpers.assert_identical(params, jax.tree.map(np.asarray, restored))
  assert meta["source"] == {"format": "clipa_jax", "path": npz}
  record = config_io.read_model_config(imported)
  assert (record["model"], record["image_size"], record["text_length"]) == (
      configs.get_config(VARIANT), 32, 8)
  out = str(tmp_path / "oc")
  assert convert.main(["to-open-clip", "--checkpoint", npz, "--out", out]) == 2
  assert "--image_size" in _error_line(capsys)
  assert convert.main(["to-open-clip", "--checkpoint", npz, "--image_size", "32",
                       "--out", out]) == 0
  loaded, config, image_size, text_length = oc.load_open_clip(out)
  assert (config, image_size, text_length) == (configs.get_config(VARIANT), 32, 8)
  interop_helpers.assert_identical(params, loaded)


def test_cli_errors_are_one_line(stage, tmp_path, capsys):
  directory, _ = stage
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "x").write_text("x")
  assert convert.main(["to-open-clip", "--checkpoint", directory, "--out", str(busy)]) == 2
  assert "not empty" in _error_line(capsys)
  assert convert.main(["to-open-clip", "--checkpoint", str(tmp_path / "nope"),
                       "--out", str(tmp_path / "o")]) == 2
  assert "does not exist" in _error_line(capsys)
  (tmp_path / "w.safetensors").write_bytes(b"")
  assert convert.main(["from-open-clip", "--weights", str(tmp_path / "w.safetensors"),
                       "--model_config", "ViT-Q-14-CLIPA", "--out", str(tmp_path / "o")]) == 2
  assert "unknown open_clip model 'ViT-Q-14-CLIPA'" in _error_line(capsys)
  assert convert.main(["from-open-clip", "--weights", str(tmp_path / "w.safetensors"),
                       "--out", str(tmp_path / "o")]) == 2
  assert "without a model: name it" in _error_line(capsys)
  (tmp_path / "w.npz").write_bytes(b"")
  assert convert.main(["from-clipa-jax", "--weights", str(tmp_path / "w.npz"),
                       "--out", str(tmp_path / "o")]) == 2
  assert "not a readable .npz" in _error_line(capsys)
  assert not os.path.exists(tmp_path / "o")


def test_cli_relative_paths(stage, tmp_path, monkeypatch, capsys):
  # As the README writes it: --checkpoint runs/.../finetune --out exported/ (Orbax alone
  # refuses relative paths).
  directory, params = stage
  monkeypatch.chdir(os.path.dirname(directory))
  assert convert.main(["to-open-clip", "--checkpoint", os.path.basename(directory),
                       "--out", "exported/"]) == 0
  exported = os.path.join(os.path.dirname(directory), "exported")
  assert f"local-dir:{exported}" in capsys.readouterr().out
  assert convert.main(["from-open-clip", "--weights", "exported", "--out", "imported"]) == 0
  restored, _, _ = checkpoints.load_params(os.path.join(os.path.dirname(directory), "imported"))
  interop_helpers.assert_identical(params, jax.tree.map(np.asarray, restored))


def _to_ram(local: str, url: str) -> str:
  """Copies a local folder into TensorFlow's in-memory filesystem (a stand-in for gs://)."""
  paths.upload_tree(local, url)
  return url


def test_cli_remote_paths_through_gfile(stage, tmp_path, monkeypatch):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  directory, params = stage
  url = _to_ram(directory, "ram://clipa_convert_stage")
  real_load_params = checkpoints.load_params
  read = []

  def load_params(path, mode="latest"):
    # Orbax reads gs:// itself (not ram://): give it the same files on disk.
    read.append(path)
    return real_load_params(path.replace(url, directory), mode)

  monkeypatch.setattr(checkpoints, "load_params", load_params)
  out = "ram://clipa_convert_export"
  assert convert.main(["to-open-clip", "--checkpoint", url, "--out", out]) == 0
  assert read == [f"{url}/checkpoint_5"]  # model_config.json was read through gfile
  assert tf.io.gfile.exists(f"{out}/{oc.CONFIG_FILE}")
  assert tf.io.gfile.exists(f"{out}/{oc.WEIGHTS_FILE}")
  imported = str(tmp_path / "imported")
  assert convert.main(["from-open-clip", "--weights", out, "--out", imported]) == 0
  restored, meta, _ = real_load_params(imported)
  interop_helpers.assert_identical(params, jax.tree.map(np.asarray, restored))
  remote_out = "ram://clipa_convert_imported"
  assert convert.main(["from-open-clip", "--weights", f"{out}/{oc.WEIGHTS_FILE}",
                       "--model_config", f"{out}/{oc.CONFIG_FILE}", "--out", remote_out]) == 0
  assert tf.io.gfile.isdir(f"{remote_out}/checkpoint_0")
  assert tf.io.gfile.exists(f"{remote_out}/{model_dir_lib.MODEL_CONFIG}")


@pytest.mark.filterwarnings("ignore:'clipa_t5x.convert' found in sys.modules:RuntimeWarning")
def test_module_entry_point_help(monkeypatch, capsys):
  # ``python -m clipa_t5x.convert --help``, run in this process.
  monkeypatch.setattr(sys, "argv", ["convert", "--help"])
  with pytest.raises(SystemExit) as info:
    runpy.run_module("clipa_t5x.convert", run_name="__main__")
  assert info.value.code in (0, None)
  out = capsys.readouterr().out
  assert "to-open-clip" in out and "from-open-clip" in out
