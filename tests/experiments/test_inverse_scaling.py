"""Tests of experiments/inverse_scaling: grid, compute accounting, report, plot, --quick."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "experiments",
                    "inverse_scaling")


def _load_run():
  """experiments/inverse_scaling/run.py, under the name its siblings import it by."""
  key = "inverse_scaling_run"
  if key not in sys.modules:
    spec = importlib.util.spec_from_file_location(key, os.path.join(_DIR, "run.py"))
    sys.modules[key] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[key])
  return sys.modules[key]


run = _load_run()
plot = run._sibling("plot")  # pylint: disable=protected-access  (run.py's own loader)
breakdown = run._sibling("breakdown")  # pylint: disable=protected-access


# ------------------------------------------------------------------ grid
def test_default_grid_is_two_axes_per_width_plus_noise_repeats():
  runs = run.build_grid(run.DEFAULT)
  ids = [r.run_id for r in runs]
  assert len(ids) == len(set(ids))
  s = run.DEFAULT
  for width in s.widths:
    mine = [r for r in runs if r.width == width and r.seed == s.seeds[0]]
    pairs = {(r.image_size, r.text_length) for r in mine}
    full_px, full_t = max(s.image_sizes), max(s.text_lengths)
    expected = ({(px, full_t) for px in s.image_sizes} | {(full_px, t) for t in s.text_lengths})
    assert pairs == expected
    assert {r.axis for r in mine} == {"full", "image", "text"}
  repeats = [r for r in runs if r.seed not in s.seeds]
  assert {r.width for r in repeats} == set(s.repeat_widths)
  assert {(r.image_size, r.text_length) for r in repeats} == {
      (max(s.image_sizes), max(s.text_lengths)), (min(s.image_sizes), max(s.text_lengths))}


def test_full_grid_and_combined_point():
  s = dataclasses.replace(run.DEFAULT, widths=(64, 128), grid="full", repeat_seeds=())
  runs = run.build_grid(s)
  assert len(runs) == 2 * len(s.image_sizes) * len(s.text_lengths)
  assert sum(r.axis == "both" for r in runs) == 2 * (len(s.image_sizes) - 1) * (
      len(s.text_lengths) - 1)
  combined = run.build_grid(dataclasses.replace(s, grid="axes", combined=True))
  both = [r for r in combined if r.axis == "both"]
  assert [(r.image_size, r.text_length) for r in both] == [(32, 8), (32, 8)]


def test_grid_orders_widths_cheapest_first_and_repeats_follow_their_width():
  s = dataclasses.replace(run.DEFAULT, widths=(192, 64), repeat_widths=(64,))
  widths = [r.width for r in run.build_grid(s)]
  assert widths == sorted(widths)


@pytest.mark.parametrize("change, message", [
    (dict(image_sizes=(64, 50)), "not divisible by the patch size 8"),
    (dict(widths=(64, 100)), "not a multiple of head_dim"),
    (dict(pretrain_steps=10, pretrain_warmup=10), "must exceed --pretrain_warmup"),
    (dict(repeat_widths=(96,)), "not among --widths"),
    (dict(grid="diagonal"), "--grid must be one of"),
    (dict(text_lengths=(32, 1)), "text lengths must be >= 2"),
    (dict(widths=()), "non-empty list"),
])
def test_bad_settings_give_one_line_errors(change, message):
  with pytest.raises(ValueError, match=message):
    run.build_grid(dataclasses.replace(run.DEFAULT, **change))


def test_command_line_overrides_and_errors(capsys):
  settings, args = run.parse_args(["--widths", "64,128", "--pretrain_steps", "50",
                                   "--out", "/tmp/x"])
  assert settings.widths == (64, 128) and settings.pretrain_steps == 50
  assert settings.repeat_widths == (64,)  # follows the new widths
  assert args.out == "/tmp/x"
  quick, qargs = run.parse_args(["--quick", "--out", "/tmp/q"])
  assert quick.pretrain_steps == run.QUICK.pretrain_steps
  assert dict(quick.data)["data_dir"] == os.path.join("/tmp/q", "data")
  assert run.main(["--image_sizes", "64,50"]) == 2
  assert "not divisible by the patch size" in capsys.readouterr().err
  assert run.main(["--list", "--widths", "64"]) == 0
  assert "w64_px32_t32_s0" in capsys.readouterr().out


# --------------------------------------------------------- model, stages
def test_model_config_per_width():
  for width in (64, 128, 192):
    cfg = run.model_config(width, run.DEFAULT)
    for tower in (cfg.image, cfg.text):
      assert (tower.width, tower.heads, tower.mlp_dim, tower.depth) == (
          width, width // 32, 4 * width, run.DEFAULT.depth)
    assert cfg.image.patch_size == 8 and cfg.embed_dim == width


def test_stages_reduce_tokens_in_pretraining_only():
  s = run.DEFAULT
  reduced_text = run.RunSpec(128, 64, 8, 0, "text")
  pre, fine = run.make_stages(reduced_text, s)
  assert pre.mixture_or_task_name == "demo_shapes_syntax"
  assert pre.eval_text_reduction == "syntax"
  assert dict(pre.task_feature_lengths) == {"image": 64, "text": 8}
  assert fine.mixture_or_task_name == "demo_shapes"
  assert dict(fine.task_feature_lengths) == {"image": 64, "text": 32}
  assert fine.mask_ratio == s.finetune_mask_ratio
  pre, _ = run.make_stages(run.RunSpec(128, 32, 32, 0, "image"), s)
  assert pre.mixture_or_task_name == "demo_shapes"
  assert dict(pre.task_feature_lengths) == {"image": 32, "text": 32}
  assert pre.train_steps == s.pretrain_steps and pre.batch_size == s.batch_size


# ----------------------------------------------------- compute accounting
def _reference_train_flops(width, depth, image_size, text_length, patch=8):
  """Independent count: 3 x forward matmul FLOPs (MLP 4w, cls token, heads)."""
  def blocks(n):
    return depth * (2 * n * (4 * width ** 2 + 2 * width * 4 * width) + 4 * n * n * width)
  patches = (image_size // patch) ** 2
  image = 2 * patches * patch * patch * 3 * width + blocks(patches + 1) + 2 * width * width
  text = blocks(text_length) + 2 * width * width
  return 3 * (image + text)


def test_compute_accounting_matches_flops_and_an_independent_count():
  from clipa_t5x import flops
  s = run.DEFAULT
  for spec in run.build_grid(s):
    acc = run.compute_accounting(spec, s)
    cfg = run.model_config(spec.width, s)
    pre = flops.per_example_flops(cfg, spec.image_size, spec.text_length)["train"]
    fine = flops.per_example_flops(cfg, 64, 32, s.finetune_mask_ratio)["train"]
    assert acc["pretrain_train_flops_per_sample"] == pytest.approx(pre)
    assert acc["pretrain_train_flops_per_sample"] == pytest.approx(
        _reference_train_flops(spec.width, s.depth, spec.image_size, spec.text_length))
    assert acc["pretrain_samples"] == s.pretrain_steps * s.batch_size
    assert acc["total_flops"] == pytest.approx(
        pre * s.pretrain_steps * s.batch_size + fine * s.finetune_steps * s.batch_size)
    assert acc["image_tokens"] == (spec.image_size // 8) ** 2


def test_default_grid_is_the_eleven_runs_that_fit_the_hour():
  ids = [r.run_id for r in run.build_grid(run.DEFAULT)]
  assert len(ids) == 11 and not any("px48" in i for i in ids)
  assert sum(i.endswith("_s1") for i in ids) == 2  # the noise repeats


def test_fewer_tokens_cost_less_with_the_same_samples():
  s = dataclasses.replace(run.DEFAULT, image_sizes=(64, 48, 32))
  for width in s.widths:
    rows = {(r.image_size, r.text_length): run.compute_accounting(r, s)
            for r in run.build_grid(s) if r.width == width}
    full = rows[(64, 32)]
    assert {r["pretrain_samples"] for r in rows.values()} == {full["pretrain_samples"]}
    assert rows[(48, 32)]["total_flops"] < full["total_flops"]
    assert rows[(32, 32)]["total_flops"] < rows[(48, 32)]["total_flops"]
    assert rows[(64, 8)]["total_flops"] < full["total_flops"]
    # The fine-tune is the same for every run of a width.
    assert {r["finetune_flops"] for r in rows.values()} == {full["finetune_flops"]}


# ------------------------------------------------------------- breakdown
def test_accuracy_breakdown_splits_colour_and_shape():
  from clipa_t5x.data import demo_shapes
  index = {name: i for i, name in enumerate(demo_shapes.CLASS_NAMES)}
  pairs = [("red circle", "red circle"),          # right
           ("green square", "green circle"),      # colour right, shape wrong
           ("blue star", "yellow star"),          # shape right, colour wrong
           ("orange hexagon", "purple hexagon"),  # shape right, colour wrong
           ("yellow triangle", "blue square")]    # both wrong
  labels = np.array([index[t] for t, _ in pairs])
  preds = np.array([index[p] for _, p in pairs])
  out = breakdown.accuracy_breakdown(preds, labels)
  assert out == pytest.approx({"top1": 1 / 5, "colour": 2 / 5, "shape": 3 / 5})
  with pytest.raises(ValueError, match="equal, non-empty"):
    breakdown.accuracy_breakdown(preds[:2], labels)


# ------------------------------------------------------------ the report
def _row(width, px, t, seed, top1, pre=None, axis=None):
  s = run.DEFAULT
  axis = axis or run._axis(px, t, s)  # pylint: disable=protected-access
  spec = run.RunSpec(width, px, t, seed, axis)
  return {**dataclasses.asdict(spec), "run_id": spec.run_id, **run.compute_accounting(spec, s),
          "num_params": 1000 * width, "pretrain_top1": pre if pre is not None else top1 - 0.05,
          "pretrain_top5": 0.9, "top1": top1, "top5": 0.95, "colour_acc": 0.9,
          "shape_acc": top1 + 0.1, "eval_examples": 1000, "wall_seconds": 60.0,
          "cpu_seconds": 100.0}


def _fake_rows(drop64, drop128, drop192, noise=0.01):
  rows = []
  for width, drop in ((64, drop64), (128, drop128), (192, drop192)):
    base = 0.3 + width / 1000
    rows += [_row(width, 64, 32, 0, base), _row(width, 48, 32, 0, base - drop / 2),
             _row(width, 32, 32, 0, base - drop), _row(width, 64, 8, 0, base - 0.01)]
  rows += [_row(64, 64, 32, 1, 0.364 + noise), _row(64, 32, 32, 1, 0.364 - drop64 + noise)]
  return rows


def test_aggregate_averages_seeds_and_reports_spread():
  agg = plot.aggregate(_fake_rows(0.10, 0.05, 0.02, noise=0.02))
  assert len(agg) == 12
  full64 = next(r for r in agg if r["width"] == 64 and r["axis"] == "full")
  assert full64["seeds"] == [0, 1]
  assert full64["top1"] == pytest.approx(0.364 + 0.01)
  assert full64["top1_spread"] == pytest.approx(0.02)
  assert plot.noise_level(_fake_rows(0.1, 0.05, 0.02, noise=0.02)) == pytest.approx(0.02)


def test_drops_against_each_widths_full_run():
  d = {(x["width"], x["image_tokens"], x["text_tokens"]): x
       for x in plot.drops(_fake_rows(0.10, 0.05, 0.02, noise=0.0))}
  assert d[(64, 16, 32)]["drop"] == pytest.approx(0.10)
  assert d[(192, 16, 32)]["drop"] == pytest.approx(0.02)
  assert d[(128, 36, 32)]["drop"] == pytest.approx(0.025)
  assert 0 < d[(192, 16, 32)]["compute_ratio"] < 1


def test_reading_says_larger_models_lose_less_when_they_do():
  text = plot.reading(_fake_rows(0.10, 0.05, 0.02, noise=0.01))
  assert "16 instead of 64 image tokens" in text
  assert "-10.0 points at width 64" in text and "-2.0 points at width 192" in text
  assert "up to 1.0 points" in text
  assert "the larger models do lose less at fewer tokens" in text


def test_reading_is_honest_when_the_effect_is_within_noise_or_reversed():
  within_noise = plot.reading(_fake_rows(0.03, 0.02, 0.01, noise=0.05))
  assert "does not show the inverse scaling law" in within_noise
  reversed_ = plot.reading(_fake_rows(0.01, 0.05, 0.10, noise=0.01))
  assert "the opposite of CLIPA's inverse scaling law" in reversed_
  no_repeats = plot.reading([r for r in _fake_rows(0.1, 0.05, 0.02) if r["seed"] == 0])
  assert "seed noise is unknown" in no_repeats


def test_reading_reports_a_compute_matched_win():
  rows = _fake_rows(0.10, 0.05, 0.02)
  assert "No wider token-reduced run beats" in plot.reading(rows)
  # Make width 192's token-reduced runs cheaper and better than width 128's full run.
  full128 = next(r for r in rows if r["width"] == 128 and r["axis"] == "full")
  for r in rows:
    if r["width"] == 192 and r["axis"] != "full":
      r["top1"] = full128["top1"] + 0.05
      r["total_flops"] = full128["total_flops"] / 2
  text = plot.reading(rows)
  assert "Compute-matched, width 192" in text
  assert "2.0x less compute than width 128" in text


def test_table_has_one_row_per_setting_with_the_numbers():
  table = plot.format_table(_fake_rows(0.10, 0.05, 0.02, noise=0.02))
  lines = table.splitlines()
  assert len(lines) == 2 + 12
  row = next(line for line in lines if line.startswith("| 64 | 0.06 | 64 |"))
  assert "| 0,1 |" in row and "37.4 ±1.0" in row
  assert any("8 (syntax)" in line for line in lines)


def test_write_report_writes_json_markdown_and_png(tmp_path):
  rows = _fake_rows(0.10, 0.05, 0.02)
  paths = plot.write_report(rows, str(tmp_path), settings={"widths": [64, 128, 192]})
  with open(paths["png"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(paths["png"]) > 10_000
  with open(paths["json"]) as f:
    record = json.load(f)
  assert len(record["runs"]) == len(rows) and record["settings"]["widths"] == [64, 128, 192]
  with open(paths["markdown"]) as f:
    md = f.read()
  assert "## Reading" in md and plot.reading(rows) in md
  os.remove(paths["png"])
  assert plot.main(["--out", str(tmp_path)]) == 0  # regenerated from results.json
  assert os.path.exists(paths["png"])
  with pytest.raises(ValueError, match="no result rows"):
    plot.write_report([], str(tmp_path))


def test_a_run_directory_trained_with_other_settings_is_refused(tmp_path):
  s = run.DEFAULT
  spec = run.build_grid(s)[0]
  model_dir = tmp_path / "runs" / spec.run_id
  (model_dir / "pretrain").mkdir(parents=True)
  (model_dir / "pretrain" / "stage_summary.json").write_text("{}")
  (model_dir / run.RUN_FILE).write_text(json.dumps({"spec": "something else"}))
  with pytest.raises(ValueError, match="trained with other settings"):
    run.run_one(spec, s, str(tmp_path), eval_set=None)


def test_a_finished_run_is_loaded_not_retrained(tmp_path, monkeypatch):
  from clipa_t5x import runner
  s = run.DEFAULT
  spec = run.build_grid(s)[0]
  model_dir = tmp_path / "runs" / spec.run_id
  model_dir.mkdir(parents=True)
  (model_dir / run.RUN_FILE).write_text(json.dumps(run._fingerprint(spec, s)))  # pylint: disable=protected-access
  (model_dir / run.RESULT_FILE).write_text(json.dumps({"run_id": spec.run_id, "top1": 0.5}))
  monkeypatch.setattr(runner, "run", lambda **kw: pytest.fail("trained a finished run"))
  assert run.run_one(spec, s, str(tmp_path), eval_set=None)["top1"] == 0.5


def test_an_interrupted_run_stops_the_sweep(tmp_path, monkeypatch):
  from clipa_t5x import runner
  s = run.DEFAULT
  spec = run.build_grid(s)[0]
  monkeypatch.setattr(runner, "run", lambda **kw: [{"stage": "pretrain"}])  # preempted
  with pytest.raises(run.SweepInterrupted, match="rerun the same command to resume"):
    run.run_one(spec, s, str(tmp_path), eval_set=None)


# ------------------------------------------------------------ end to end
def _cli(*flags):
  """Runs run.py as the command line does (one CPU device, compilation cache on)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return subprocess.run([sys.executable, os.path.join(_DIR, "run.py"), *flags], env=env,
                        capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_quick_sweep_end_to_end(tmp_path):
  out = str(tmp_path / "sweep")
  # The --quick preset at one width without seed repeats (full tokens, fewer image tokens,
  # fewer text tokens: 3 runs) to stay near a minute; widths and seeds are tested above.
  flags = ["--quick", "--widths", "32", "--repeat_seeds", "", "--out", out]
  proc = _cli(*flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  settings, _ = run.parse_args(flags)
  with open(os.path.join(out, "results.json")) as f:
    record = json.load(f)
  runs = record["runs"]
  assert sorted(r["run_id"] for r in runs) == sorted(r.run_id for r in run.build_grid(settings))
  for r in runs:
    assert 0.0 <= r["top1"] <= 1.0 and 0.0 <= r["pretrain_top1"] <= 1.0
    assert r["colour_acc"] >= r["top1"] and r["shape_acc"] >= r["top1"]
    assert r["total_flops"] > 0 and r["num_params"] > 0 and r["eval_examples"] == 60
    with open(os.path.join(out, "runs", r["run_id"], "summary.json")) as f:
      stages = json.load(f)  # an ordinary clipa_t5x MODEL_DIR
    assert [s["stage"] for s in stages] == ["pretrain", "finetune"]
    assert stages[1]["zeroshot_top1"] == pytest.approx(r["top1"])
  with open(os.path.join(out, "inverse_scaling.png"), "rb") as f:
    assert f.read(4) == b"\x89PNG"
  with open(os.path.join(out, "results.md")) as f:
    assert "## Reading" in f.read()
  # A rerun trains nothing: every run is found finished.
  again = _cli(*flags)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished before") == len(runs)
  assert sorted(r["axis"] for r in runs) == ["full", "image", "text"]
