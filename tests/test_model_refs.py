"""Tests of clipa_t5x.model_refs: every kind of reference -> params + recorded model."""

import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "interop"))
import interop_helpers  # noqa: E402

from clipa_t5x import checkpoints  # noqa: E402
from clipa_t5x import model_dir as model_dir_lib  # noqa: E402
from clipa_t5x import model_refs  # noqa: E402
from clipa_t5x import partitioning  # noqa: E402
from clipa_t5x import train_state  # noqa: E402
from clipa_t5x.interop import clipa_jax  # noqa: E402
from clipa_t5x.interop import open_clip as oc  # noqa: E402
from clipa_t5x.models import clip  # noqa: E402
from clipa_t5x.models import config_io  # noqa: E402
from clipa_t5x.models import configs  # noqa: E402

TI8 = configs.get_config("Ti/8")


def _stage(root, name, params, image_size, text_length, step, config=TI8):
  stage = os.path.join(root, name)
  checkpoints.save_params(stage, params, step=step)
  config_io.write_model_config(stage, config, image_size, text_length, stage=name)
  return stage


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """One tiny Ti/8 model in every format: a two-stage run, an open_clip folder, an official npz."""
  root = tmp_path_factory.mktemp("refs")
  params = interop_helpers.random_params("Ti/8", 32, 8, seed=3)
  run = str(root / "run")
  _stage(run, "pretrain", params, 16, 8, 2)
  _stage(run, "finetune", interop_helpers.random_params("Ti/8", 32, 16, seed=4), 32, 16, 5)
  with open(os.path.join(run, model_dir_lib.SUMMARY), "w") as f:
    json.dump([{"stage": "pretrain"}, {"stage": "finetune"}], f)
  folder = oc.export_open_clip(params, TI8, str(root / "open_clip"), 32)
  npz = clipa_jax.save(params, str(root / "clipa_h14.npz"))
  return {"params": params, "run": run, "open_clip": folder, "npz": npz, "root": root}


def test_run_stage_and_checkpoint_dirs(sources):
  run = sources["run"]
  ref = model_refs.describe(run)
  assert (ref.kind, ref.path, ref.step) == ("checkpoint", f"{run}/finetune/checkpoint_5", 5)
  assert (ref.config, ref.image_size, ref.text_length) == (TI8, 32, 16)
  ref = model_refs.describe(os.path.join(run, "pretrain"))
  assert (ref.path, ref.image_size, ref.text_length) == (f"{run}/pretrain/checkpoint_2", 16, 8)
  assert model_refs.describe(f"{run}/pretrain/checkpoint_2/").path == ref.path
  params, ref = model_refs.load(os.path.join(run, "pretrain"))
  interop_helpers.assert_identical(sources["params"], jax.tree.map(np.asarray, params))


def test_stage_order_without_summary_follows_start_times(tmp_path, sources):
  for name, when in (("zz_first", 1000), ("aa_second", 2000)):
    _stage(str(tmp_path), name, sources["params"], 16, 8, 1)
    os.utime(tmp_path / name / model_dir_lib.MODEL_CONFIG, (when, when))
  assert model_refs.locate(str(tmp_path))[1].endswith("aa_second/checkpoint_1")
  os.utime(tmp_path / "zz_first" / model_dir_lib.MODEL_CONFIG, (3000, 3000))
  assert model_refs.locate(str(tmp_path))[1].endswith("zz_first/checkpoint_1")


def test_open_clip_folder_and_weights_file(sources):
  ref = model_refs.describe(sources["open_clip"])
  assert (ref.kind, ref.config, ref.image_size, ref.text_length) == ("open_clip", TI8, 32, 8)
  weights = os.path.join(sources["open_clip"], oc.WEIGHTS_FILE)
  with pytest.raises(ValueError, match="weights file without a model: name it"):
    model_refs.describe(weights)
  params, ref = model_refs.load(weights, "Ti/8")  # sizes from the weights' own shapes
  assert (ref.config, ref.image_size, ref.text_length) == (TI8, 32, 8)
  interop_helpers.assert_identical(sources["params"], params)
  config_json = os.path.join(sources["open_clip"], oc.CONFIG_FILE)
  assert model_refs.describe(weights, config_json).config == TI8


def test_official_npz_is_self_describing(sources):
  ref = model_refs.describe(sources["npz"])
  assert (ref.kind, ref.config, ref.image_size, ref.text_length) == ("clipa_jax", TI8, None, 8)
  params, _ = model_refs.load(sources["npz"])
  interop_helpers.assert_identical(sources["params"], params)
  assert model_refs.config_name(ref.config) == "Ti/8"
  assert "clipa_jax" in ref.summary() and "Ti/8" in ref.summary()


def test_a_model_that_disagrees_is_one_line(sources):
  for ref in (sources["run"], sources["open_clip"], sources["npz"]):
    with pytest.raises(ValueError, match=r"model given \(Mu/8\) disagrees .* records \(Ti/8\)"):
      model_refs.describe(ref, "Mu/8")
  bf16 = configs.get_config("Ti/8", dtype="bfloat16")  # compute settings are no disagreement
  assert model_refs.describe(sources["npz"], bf16).config == bf16
  assert model_refs.model_config(sources["run"], remat_policy="full").remat_policy == "full"


def test_unreadable_references_are_one_line(tmp_path, sources):
  cases = [(str(tmp_path / "nope"), "does not exist; pass a run, stage"),
           ("", "is empty")]
  (tmp_path / "empty").mkdir()
  cases.append((str(tmp_path / "empty"), "has no checkpoint and is no model file"))
  config_io.write_model_config(str(tmp_path / "starting"), TI8, 16, 8)
  cases.append((str(tmp_path / "starting"), "no complete checkpoint yet"))
  (tmp_path / "notes.txt").write_text("x")
  cases.append((str(tmp_path / "notes.txt"), "file of unknown kind"))
  np.savez(tmp_path / "other.npz", w=np.zeros(3))
  cases.append((str(tmp_path / "other.npz"), "neither open_clip keys"))
  (tmp_path / "broken.npz").write_bytes(b"not a zip")
  cases.append((str(tmp_path / "broken.npz"), "not a readable .npz"))
  bare = str(tmp_path / "bare")
  checkpoints.save_params(bare, sources["params"], step=0)
  cases.append((bare, "no model_config.json; name the model"))
  for ref, message in cases:
    with pytest.raises(ValueError, match=message) as e:
      model_refs.describe(ref)
    assert "\n" not in str(e.value)
  assert model_refs.describe(bare, "Ti/8").config == TI8


def test_load_checks_the_params_against_the_model(tmp_path, sources):
  stage = str(tmp_path / "wrong")
  shutil.copytree(os.path.join(sources["run"], "pretrain"), stage)
  config_io.write_model_config(stage, configs.get_config("Ti/8", embed_dim=32), 16, 8)
  with pytest.raises(ValueError, match="img/head/kernel"):
    model_refs.load(stage)


def _abstract(image_size, text_length):
  p = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules())
  import optax  # pylint: disable=import-outside-toplevel
  abstract, _, _ = train_state.abstract_train_state(clip.ClipaModel(TI8), optax.identity(),
                                                    image_size, text_length, p)
  return abstract.params


@pytest.mark.parametrize("kind", ["npz", "open_clip", "checkpoint"])
@pytest.mark.slow
def test_the_fine_tune_start_embeds_as_the_source(sources, kind):
  """What a stage's init_from restores gives the source's embeddings (text resized 8 -> 32)."""
  ref = {"npz": sources["npz"], "open_clip": sources["open_clip"],
         "checkpoint": os.path.join(sources["run"], "pretrain")}[kind]
  source = sources["params"]
  model = clip.ClipaModel(TI8)
  images = np.random.RandomState(0).randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
  tokens = np.random.RandomState(1).randint(1, 30000, (4, 8)).astype(np.int32)
  for length in (8, 32):
    restored = model_refs.restore_params(ref, _abstract(32, length), model=TI8)
    assert restored["txt"]["pos_embedding"].shape == (1, length, 64)
    np.testing.assert_allclose(model.encode_images(restored, images),
                               model.encode_images(source, images), atol=1e-4)
  restored = model_refs.restore_params(ref, _abstract(32, 8), model=TI8)
  np.testing.assert_allclose(model.encode_texts(restored, tokens),
                             model.encode_texts(source, tokens), atol=1e-4)
  resized = dict(source, txt=dict(source["txt"], pos_embedding=np.asarray(
      checkpoints.resize_text_pos_embedding(source["txt"]["pos_embedding"], 32))))
  restored = model_refs.restore_params(ref, _abstract(32, 32), model=TI8)
  long_tokens = np.pad(tokens, ((0, 0), (0, 24)))
  np.testing.assert_allclose(model.encode_texts(restored, long_tokens),
                             model.encode_texts(resized, long_tokens), atol=1e-4)


def test_restore_refuses_assignment_maps_for_other_formats(sources):
  config = checkpoints.RestoreCheckpointConfig(path=sources["npz"],
                                               assignment_map=[("img/.*", None)])
  with pytest.raises(ValueError, match="assignment_map applies to clipa_t5x checkpoints"):
    model_refs.restore_params(config, _abstract(32, 8))
