"""Tests of clipa_t5x.runner: config checks, the summary table, and a real two-stage run.

The end-to-end tests share one module-scoped run (Ti/8 on the generated demo data,
16 px / 8 tokens, then 32 px / 16 tokens with 30% masking), then rerun it twice:
once untouched (both stages are skipped) and once with the fine-tune's final
checkpoint deleted (it resumes from the earlier one).
"""

import contextlib
import glob
import functools
import io
import json
import os
import shutil
import time

import jax
import numpy as np
import pytest
from PIL import Image

import clipa_t5x.tasks  # noqa: F401  (registers the demo Tasks)
from clipa_t5x import checkpoints
from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import model_info
from clipa_t5x import flops
from clipa_t5x import optimizers
from clipa_t5x import partitioning
from clipa_t5x import preflight
from clipa_t5x import runner
from clipa_t5x.demo import data as demo_data_lib
from clipa_t5x.demo import picture as demo_picture
from clipa_t5x.models import configs
from clipa_t5x.models import config_io
from clipa_t5x.tasks import demo

MODEL = "Ti/8"
BATCH = 32
STEPS = 4
SUMMARY_KEYS = {"stage", "image_tokens", "text_tokens", "gflops_per_sample", "seconds",
                "zeroshot_top1"}
TRAIN_KEYS = {"step", "loss", "learning_rate", "temperature", "grad_norm", "samples_per_second",
              "step_time", "examples_seen"}


def _partitioner() -> partitioning.PjitPartitioner:
  return partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules())


def _stage(name="pretrain", image=16, text=8, batch=BATCH, steps=STEPS, **kwargs) -> runner.Stage:
  return runner.Stage(name=name, mixture_or_task_name="demo_shapes",
                      task_feature_lengths={"image": image, "text": text}, batch_size=batch,
                      train_steps=steps, **kwargs)


# ------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
  """Small demo data (256 train / 60 eval, 32 px), generated once for the module."""
  path = str(tmp_path_factory.mktemp("demo_data") / "demo_shapes")
  data = demo_data_lib.DemoData(path, num_train=256, num_eval=60, image_size=32,
                                num_train_shards=2)
  demo.register(data)
  yield data
  demo.register()  # back to the default location


@pytest.fixture(scope="module")
def model_config():
  return configs.get_config(MODEL)


@pytest.fixture(scope="module")
def partitioner():
  return _partitioner()


# ------------------------------------------------------------- summary table
def test_format_summary_table_layout():
  rows = [
      {"stage": "pretrain", "image_tokens": 4, "text_tokens": 8, "gflops_per_sample": 0.12345,
       "seconds": 12.34, "zeroshot_top1": 0.5},
      {"stage": "finetune-long-name", "image_tokens": 11, "text_tokens": 16,
       "gflops_per_sample": 1.5, "seconds": 3.0, "zeroshot_top1": None},
  ]
  lines = runner.format_summary_table(rows).splitlines()
  assert len(lines) == 4  # header, rule, one line per row
  assert lines[0].split() == ["stage", "image", "tokens", "text", "tokens", "GFLOPs/sample",
                              "seconds", "zero-shot", "top-1"]
  assert set(lines[1]) == {"-", " "}
  assert lines[2].split() == ["pretrain", "4", "8", "0.1235", "12.3", "50.0%"]
  assert lines[3].split() == ["finetune-long-name", "11", "16", "1.5000", "3.0", "-"]
  # Columns are aligned: every cell of a column starts at the same offset.
  for header in ("image tokens", "GFLOPs/sample", "zero-shot top-1"):
    col = lines[0].index(header)
    assert lines[1][col] == "-" and lines[1][col - 2:col] == "  "
    assert lines[2][col] != " " and lines[2][col - 1] == " "
  assert lines[3].startswith("finetune-long-name  ")
  assert all(line == line.rstrip() for line in lines)  # no trailing blanks
  # Only the header and the rule when there are no rows.
  assert len(runner.format_summary_table([]).splitlines()) == 2


def test_format_summary_table_adds_a_column_per_label_factor():
  rows = [
      {"stage": "pretrain", "image_tokens": 16, "text_tokens": 8, "gflops_per_sample": 0.04,
       "seconds": 100.0, "zeroshot_top1": 0.5,
       "zeroshot_factor_top1": {"colour": 0.99, "shape": 0.512}},
      {"stage": "finetune", "image_tokens": 44, "text_tokens": 32, "gflops_per_sample": 0.13,
       "seconds": 50.0, "zeroshot_top1": None, "zeroshot_factor_top1": {}},
  ]
  lines = runner.format_summary_table(rows).splitlines()
  assert lines[0].split()[-4:] == ["colour", "top-1", "shape", "top-1"]
  assert lines[2].split()[-3:] == ["50.0%", "99.0%", "51.2%"]
  assert lines[3].split()[-3:] == ["-", "-", "-"]


# --------------------------------------------------------- checks of a stage
def test_check_stage_image_not_divisible_by_patch(model_config, partitioner):
  with pytest.raises(ValueError) as info:
    preflight.check_stage_settings(_stage(image=30), model_config, partitioner)
  message = str(info.value)
  assert "\n" not in message
  assert "30" in message and "patch size 8" in message and "'pretrain'" in message
  assert "use 24 or 32" in message  # the fix


def test_check_stage_eval_image_not_divisible_by_patch(model_config, partitioner):
  with pytest.raises(ValueError, match=r"eval image size 20 .* patch size 8"):
    preflight.check_stage_settings(_stage(eval_image_size=20), model_config, partitioner)


def test_check_stage_batch_not_divisible_by_data_parallel_size(model_config, partitioner):
  assert partitioner.data_parallel_size == 4
  with pytest.raises(ValueError) as info:
    preflight.check_stage_settings(_stage(batch=30), model_config, partitioner)
  message = str(info.value)
  assert "\n" not in message
  # The error names the setting the user wrote (issue 17), not an internal one.
  assert "Stage.batch_size=30" in message and "data-parallel size 4" in message
  assert "DatasetConfig" not in message


@pytest.mark.parametrize("lengths, missing", [({"image": 16}, "['text']"),
                                              ({"text": 8}, "['image']"),
                                              ({}, "['image', 'text']")])
def test_check_stage_missing_feature_lengths(model_config, partitioner, lengths, missing):
  stage = runner.Stage(name="s", mixture_or_task_name="demo_shapes",
                       task_feature_lengths=lengths, batch_size=BATCH, train_steps=1)
  with pytest.raises(ValueError) as info:
    preflight.check_stage_settings(stage, model_config, partitioner)
  assert "\n" not in str(info.value)
  assert f"task_feature_lengths lacks {missing}" in str(info.value)


def test_check_stage_non_positive_steps(model_config, partitioner):
  with pytest.raises(ValueError, match="train_steps must be positive, got 0"):
    preflight.check_stage_settings(_stage(steps=0), model_config, partitioner)


@pytest.mark.parametrize("mask, match", [
    (dict(mask_ratio=1.0), "Stage.mask_ratio=1.0 must be in"),
    (dict(mask_type="stripes"), "Stage.mask_type='stripes'"),
    (dict(mask_ratio=0.5, mask_type="grid"), "0.75")])
def test_check_stage_bad_masking(model_config, partitioner, mask, match):
  with pytest.raises(ValueError, match=match) as info:
    preflight.check_stage_settings(_stage(**mask), model_config, partitioner)
  assert str(info.value).startswith("stage 'pretrain': ") and "\n" not in str(info.value)


def test_check_stage_accepts_a_good_stage(model_config, partitioner):
  preflight.check_stage_settings(_stage(image=32, text=16, eval_image_size=64), model_config, partitioner)


def test_run_checks_every_stage_before_training_any(tmp_path, model_config, partitioner,
                                                    monkeypatch):
  def no_training(*args, **kwargs):
    raise AssertionError("train_stage was called before all stages were checked")

  monkeypatch.setattr(runner, "train_stage", no_training)
  # The *second* stage is bad: the error must still come before the first trains.
  stages = [_stage("pretrain"), _stage("finetune", image=30)]
  with pytest.raises(ValueError, match=r"'finetune'.*30.*patch size 8"):
    runner.run(model_dir=str(tmp_path / "run"), stages=stages, model_config=model_config,
               partitioner=partitioner)
  assert not os.path.exists(tmp_path / "run" / "pretrain")


# ---------------------------------------------------------- checks of a run
def test_check_model_dir_writable_accepts_and_creates(tmp_path):
  target = tmp_path / "a" / "b"
  runner.check_model_dir_writable(str(target))
  assert target.is_dir() and os.listdir(target) == []  # the probe file is removed


def test_check_model_dir_writable_rejects_a_path_under_a_file(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(ValueError) as info:
    runner.check_model_dir_writable(str(blocker / "run"))
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith("MODEL_DIR") and str(blocker / "run") in message
  assert "not writable" in message


def test_run_rejects_unwritable_model_dir_before_training(tmp_path, model_config, partitioner,
                                                          monkeypatch):
  monkeypatch.setattr(runner, "train_stage", lambda *a, **k: pytest.fail("trained"))
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(ValueError, match="MODEL_DIR"):
    runner.run(model_dir=str(blocker / "run"), stages=[_stage()], model_config=model_config,
               partitioner=partitioner)


def test_run_rejects_duplicate_stage_names(tmp_path, model_config, partitioner):
  with pytest.raises(ValueError, match=r"stage names must be unique, got \['a', 'b', 'a'\]"):
    runner.run(model_dir=str(tmp_path), stages=[_stage("a"), _stage("b"), _stage("a")],
               model_config=model_config, partitioner=partitioner)


def test_run_rejects_no_stages(tmp_path, model_config, partitioner):
  with pytest.raises(ValueError, match="no stages given"):
    runner.run(model_dir=str(tmp_path), stages=[], model_config=model_config,
               partitioner=partitioner)


def test_run_requires_a_model_config(tmp_path):
  with pytest.raises(ValueError, match="model_config is required"):
    runner.run(model_dir=str(tmp_path), stages=[_stage()])


# ----------------------------------------------------------------- end to end
def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _restore_params(stage_dir: str, step: int):
  """A checkpoint's parameters as a flat {path: numpy array} dict."""
  import orbax.checkpoint as ocp
  manager = checkpoints._manager(stage_dir, read_only=True)
  try:
    metadata = manager.item_metadata(step)["params"].tree
    # Restore on one device whatever the saved sharding was.
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                                         sharding=one_device), metadata)
    params = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target)))["params"]
  finally:
    manager.close()
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {model_info.path_name(p): np.asarray(v) for p, v in flat}


def _checkpoint_steps(stage_dir: str):
  return sorted(int(os.path.basename(p).split("_")[1])
                for p in glob.glob(os.path.join(stage_dir, f"{checkpoints.STEP_PREFIX}_*")))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, demo_data, model_config):
  """One real two-stage run, then an untouched rerun and a resumed rerun.

  Returns a dict of what each run returned and printed, plus copies of the
  files the later runs change, taken right after the first run.
  """
  base = tmp_path_factory.mktemp("e2e")
  model_dir = str(base / "model_dir")
  pretrain = _stage("pretrain", image=16, text=8, optimizer=optimizers.OptimizerConfig(
      base_learning_rate=1e-2, warmup_steps=1))
  # A learning rate 1000x below pre-training's: the fine-tune barely moves the
  # parameters it inherits, so we can check where they came from.
  finetune = _stage("finetune", image=32, text=16, mask_ratio=0.3,
                    optimizer=optimizers.OptimizerConfig(base_learning_rate=1e-5,
                                                         warmup_steps=1))
  evaluator = runner.ZeroShotEvalConfig(
      name="shapes", task="demo_shapes_eval", class_names=demo.class_names,
      templates=["a photo of a {c}.", "a {c}."], batch_size=20, factors=demo.class_factors)
  kwargs = dict(model_dir=model_dir, stages=[pretrain, finetune], model_config=model_config,
                partitioner=_partitioner(),
                checkpoint_config=checkpoints.SaveCheckpointConfig(period=2, keep=None),
                evaluators=[evaluator], log_every=1, random_seed=0,
                after_run=[functools.partial(demo_picture.write_zeroshot_examples,
                                             data=demo_data)])

  def call():
    out = io.StringIO()
    start = time.time()
    # A relative MODEL_DIR, as users pass it (Orbax itself only takes absolute paths).
    with contextlib.redirect_stdout(out), contextlib.chdir(base):
      rows = runner.run(**{**kwargs, "model_dir": "model_dir"})
    return {"rows": rows, "stdout": out.getvalue(), "seconds": time.time() - start}

  result = {"model_dir": model_dir, "first": call()}
  ft_dir = os.path.join(model_dir, "finetune")
  result["summary_after_first"] = _read_json(os.path.join(model_dir, model_dir_lib.SUMMARY))
  result["ft_jsonl_after_first"] = _read_jsonl(os.path.join(ft_dir, "train_metrics.jsonl"))
  result["ckpt_steps_after_first"] = {s: _checkpoint_steps(os.path.join(model_dir, s))
                                      for s in ("pretrain", "finetune")}
  result["params"] = {
      "pretrain_2": _restore_params(os.path.join(model_dir, "pretrain"), 2),
      "pretrain_4": _restore_params(os.path.join(model_dir, "pretrain"), STEPS),
      "finetune_2": _restore_params(ft_dir, 2),
  }

  result["rerun"] = call()

  # Interrupted fine-tune: no summary, no final checkpoint, an earlier one kept.
  os.remove(os.path.join(ft_dir, model_dir_lib.STAGE_SUMMARY))
  shutil.rmtree(os.path.join(ft_dir, f"{checkpoints.STEP_PREFIX}_{STEPS}"))
  result["resumed"] = call()
  return result


@pytest.mark.slow
def test_e2e_summary_json(e2e, model_config):
  summary = e2e["summary_after_first"]
  assert isinstance(summary, list) and len(summary) == 2
  for row in summary:
    assert SUMMARY_KEYS <= set(row), row
  pre, ft = summary
  assert (pre["stage"], pre["image_tokens"], pre["text_tokens"]) == ("pretrain", 4, 8)
  # 32 px / patch 8 = 16 patches, 30% masked: int(16 * 0.7) = 11 kept.
  assert (ft["stage"], ft["image_tokens"], ft["text_tokens"]) == ("finetune", 11, 16)
  expected = flops.per_example_flops(model_config, 32, 16, 0.3)["forward"] / 1e9
  assert ft["gflops_per_sample"] == pytest.approx(expected, rel=1e-9)
  assert pre["gflops_per_sample"] < ft["gflops_per_sample"]
  for row in summary:
    assert row["seconds"] > 0
    assert 0.0 <= row["zeroshot_top1"] <= 1.0
    assert row["eval"]["shapes/num_examples"] == 60
    # Per-factor accuracy (ZeroShotEvalConfig.factors): never below the 20-way top-1.
    factors = row["zeroshot_factor_top1"]
    assert set(factors) == {"colour", "shape"}
    assert all(row["zeroshot_top1"] <= v <= 1.0 for v in factors.values())
    assert factors["colour"] == row["eval"]["shapes/colour_top1"]
  assert e2e["first"]["rows"] == summary
  # The after_run hook drew the held-out examples with their predictions.
  with Image.open(os.path.join(e2e["model_dir"], "zeroshot_examples.png")) as picture:
    assert picture.size == (6 * 128, 4 * (128 + 30))
  # The table is printed at the end of the run.
  stdout = e2e["first"]["stdout"]
  table = runner.format_summary_table(summary)
  assert stdout.rstrip().endswith(table)


@pytest.mark.slow
def test_e2e_train_metrics_jsonl(e2e):
  for stage in ("pretrain", "finetune"):
    path = os.path.join(e2e["model_dir"], stage, "train_metrics.jsonl")
    rows = e2e["ft_jsonl_after_first"] if stage == "finetune" else _read_jsonl(path)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # log_every=1
    for row in rows:
      assert TRAIN_KEYS <= set(row), row
      assert np.isfinite(row["loss"]) and row["loss"] > 0
      assert row["examples_seen"] == row["step"] * BATCH
      assert row["samples_per_second"] > 0 and row["step_time"] > 0
    assert rows[0]["learning_rate"] == 0.0  # warmup starts at 0
    assert max(r["learning_rate"] for r in rows) > 0
  # Per-step progress lines on stdout.
  assert "[pretrain] step 4/4" in e2e["first"]["stdout"]
  assert "[finetune] step 4/4" in e2e["first"]["stdout"]


@pytest.mark.slow
def test_e2e_tensorboard_eval_and_checkpoints(e2e, model_config):
  for stage in ("pretrain", "finetune"):
    stage_dir = os.path.join(e2e["model_dir"], stage)
    assert glob.glob(os.path.join(stage_dir, "train", "events.out.tfevents.*"))
    assert glob.glob(os.path.join(stage_dir, "eval", "events.out.tfevents.*"))
    evals = _read_jsonl(os.path.join(stage_dir, "eval_metrics.jsonl"))
    assert evals[0]["step"] == STEPS and "shapes/top1" in evals[0]
    assert e2e["ckpt_steps_after_first"][stage] == [2, 4]  # period 2, keep all
    assert os.path.exists(os.path.join(stage_dir, model_dir_lib.STAGE_SUMMARY))
    # Self-describing: the model and the stage's sizes, for inference and export.
    record = config_io.read_model_config(stage_dir)
    assert record["stage"] == stage and record["model"].image == model_config.image
    assert (record["image_size"], record["text_length"]) == (
        (16, 8) if stage == "pretrain" else (32, 16))
    with open(os.path.join(stage_dir, model_dir_lib.MODEL_CONFIG)) as f:
      assert "mask_ratio" not in f.read()  # a training setting, not the architecture


@pytest.mark.slow
def test_e2e_finetune_starts_from_pretrain_params(e2e):
  assert f"[finetune] initialised from {os.path.join(e2e['model_dir'], 'pretrain')}" in (
      e2e["first"]["stdout"])
  pre2, pre4, ft2 = (e2e["params"][k] for k in ("pretrain_2", "pretrain_4", "finetune_2"))
  assert set(pre4) == set(ft2)
  pos_names = [n for n in ft2 if n.endswith("pos_embedding") and ft2[n].shape != pre4[n].shape]
  assert len(pos_names) == 1, pos_names  # only the text position embedding changes length
  pos = pos_names[0]
  assert pre4[pos].shape[1] == 8 and ft2[pos].shape[1] == 16
  # How far two pre-training steps move the parameters: the scale of "trained".
  moved = max(np.abs(pre4[n] - pre2[n]).max() for n in pre4)
  assert moved > 1e-4
  # Two fine-tune steps at a tiny learning rate leave the inherited values in place.
  for name in pre4:
    if name == pos:
      continue
    np.testing.assert_allclose(ft2[name], pre4[name], rtol=0, atol=0.05 * moved, err_msg=name)
  # The text position embedding is the pre-trained one resized 8 -> 16.
  resized = np.asarray(checkpoints.resize_text_pos_embedding(pre4[pos], 16))
  np.testing.assert_allclose(ft2[pos], resized, rtol=0, atol=0.05 * moved)


@pytest.mark.slow
def test_e2e_rerun_skips_finished_stages(e2e):
  rerun = e2e["rerun"]
  stdout = rerun["stdout"]
  assert "[pretrain] already finished; skipping" in stdout
  assert "[finetune] already finished; skipping" in stdout
  assert "compiled" not in stdout and "step 1/" not in stdout
  assert rerun["rows"] == e2e["summary_after_first"]  # same rows, same seconds
  assert rerun["seconds"] < 10


@pytest.mark.slow
def test_e2e_resume_from_an_earlier_checkpoint(e2e):
  resumed = e2e["resumed"]
  stdout = resumed["stdout"]
  model_dir = e2e["model_dir"]
  ft_dir = os.path.join(model_dir, "finetune")
  assert "[pretrain] already finished; skipping" in stdout
  assert f"[finetune] resuming from {ft_dir} step 2" in stdout
  assert "[finetune] initialised from" not in stdout
  # The stage logged steps 3 and 4 again after the first run's 1..4.
  steps = [r["step"] for r in _read_jsonl(os.path.join(ft_dir, "train_metrics.jsonl"))]
  assert steps == [1, 2, 3, 4, 3, 4]
  assert _checkpoint_steps(ft_dir) == [2, 4]
  # It completed: stage summary and run summary are back, pretrain's row unchanged.
  assert os.path.exists(os.path.join(ft_dir, model_dir_lib.STAGE_SUMMARY))
  summary = _read_json(os.path.join(model_dir, model_dir_lib.SUMMARY))
  assert [r["stage"] for r in summary] == ["pretrain", "finetune"]
  assert summary[0] == e2e["summary_after_first"][0]
  assert summary[1]["image_tokens"] == 11 and summary[1]["text_tokens"] == 16
  assert summary[1]["seconds"] != e2e["summary_after_first"][1]["seconds"]
  assert resumed["rows"] == summary


def test_an_unknown_task_is_reported_before_training(model_config, partitioner):
  with pytest.raises(ValueError, match="No SeqIO Task or Mixture named 'nope'"):
    preflight.check_stage_settings(  # pylint: disable=protected-access
        runner.Stage(name="s", mixture_or_task_name="nope",
                     task_feature_lengths={"image": 16, "text": 8}, batch_size=8,
                     train_steps=1), model_config, partitioner)


def test_has_training_state(tmp_path):
  assert not runner.has_training_state(str(tmp_path))
  (tmp_path / "config.gin").write_text("x")
  assert not runner.has_training_state(str(tmp_path))  # a config alone is no run
  (tmp_path / "pretrain" / "checkpoint_4").mkdir(parents=True)
  assert runner.has_training_state(str(tmp_path))


# ---------------------------------------------- fine-tune of released weights
@pytest.mark.slow
def test_finetune_released_starts_from_an_official_npz(tmp_path, clean_gin, monkeypatch):
  """gin/runs/finetune_released.gin from a tiny official .npz: both stages train (learning rate
  0 here, so the 224 px stage's checkpoint is its start) and embed as the source."""
  import sys  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(repo, "tests", "interop"))
  import interop_helpers  # pylint: disable=import-outside-toplevel
  from clipa_t5x import gin_utils, model_refs  # pylint: disable=import-outside-toplevel
  from clipa_t5x.data import make_shards  # pylint: disable=import-outside-toplevel
  from clipa_t5x.interop import clipa_jax  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import clip  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(repo)
  source = interop_helpers.random_params(MODEL, 16, 8, seed=5)
  npz = clipa_jax.save(source, str(tmp_path / "clipa_ti8.npz"))
  rng = np.random.RandomState(0)
  os.makedirs(tmp_path / "images")
  for i in range(8):
    Image.fromarray(rng.randint(0, 256, (20, 20, 3)).astype(np.uint8)).save(
        tmp_path / "images" / f"{i}.png")
    (tmp_path / "images" / f"{i}.txt").write_text(f"a picture number {i}")
  items, _ = make_shards.folder_items(str(tmp_path / "images"))
  make_shards.make_shards(items, str(tmp_path / "shards"), samples_per_shard=4, quiet=True)
  stage_bindings = []
  for stage, size in (("224", 16), ("336", 24)):
    stage_bindings += [f"FT{stage}_BATCH_SIZE = 4", f"FT{stage}_STEPS = 1",
                       f"FT{stage}_BASE_LR = 0.0", f"FT{stage}_WARMUP_STEPS = 0",
                       f"finetune_{stage}/runner.Stage.task_feature_lengths = "
                       f"{{'image': {size}, 'text': 32}}"]
  model_dir = str(tmp_path / "ft")
  gin_utils.parse_gin_flags(["gin/runs/finetune_released.gin"], [
      f"MODEL_DIR = '{model_dir}'", f"INIT_FROM = '{npz}'", "EVALUATORS = []",
      f"TRAIN_DATA = '{tmp_path}/shards/{{00000..00001}}.tar'", *stage_bindings])
  with contextlib.redirect_stdout(io.StringIO()) as out:
    rows = gin_utils.configured(runner.run)()
  assert [r["stage"] for r in rows] == ["finetune_224", "finetune_336"]
  assert f"[finetune_224] initialised from {npz}" in out.getvalue()
  params, ref = model_refs.load(os.path.join(model_dir, "finetune_224"))
  assert (ref.config, ref.image_size, ref.text_length) == (
      configs.get_config(MODEL, remat_policy="full"), 16, 32)
  model = clip.ClipaModel(configs.get_config(MODEL))
  images = rng.randint(0, 256, (4, 16, 16, 3)).astype(np.uint8)
  np.testing.assert_allclose(model.encode_images(params, images),
                             model.encode_images(source, images), atol=1e-4)
  np.testing.assert_allclose(
      params["txt"]["pos_embedding"],
      checkpoints.resize_text_pos_embedding(source["txt"]["pos_embedding"], 32), atol=1e-6)
  assert model_refs.describe(model_dir).image_size == 24  # the 336 px stage (24 here) is last
