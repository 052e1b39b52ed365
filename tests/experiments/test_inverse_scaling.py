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

# The settings these tests pin numbers on (a study shaped like the default, but
# fixed here so that retuning SETTINGS does not rewrite every expectation).
SETTINGS = run.SweepSettings(
    widths=(64, 128, 192), image_sizes=(64, 48, 32), text_lengths=(32, 8),
    headline_widths=(192,), pretrain_steps=120, finetune_steps=12, batch_size=64,
    pretrain_lr=4e-3, pretrain_warmup=12, finetune_lr=8e-4, finetune_warmup=2)


# ------------------------------------------------------------------ grid
def test_default_grid_has_every_axis_two_seeds_per_point_and_the_headline():
  runs = run.build_grid(run.DEFAULT)
  ids = [r.run_id for r in runs]
  assert len(ids) == len(set(ids))
  s = run.DEFAULT
  assert len(s.widths) >= 3 and len(s.image_sizes) >= 3 and len(s.text_lengths) == 2
  assert len(s.seeds) >= 2
  full_px, full_t = max(s.image_sizes), max(s.text_lengths)
  for width in s.widths:
    mine = [r for r in runs if r.width == width and r.seed == s.seeds[0]]
    pairs = {(r.image_size, r.text_length) for r in mine if r.axis in ("full", "image", "text")}
    expected = ({(px, full_t) for px in s.image_sizes} | {(full_px, t) for t in s.text_lengths})
    assert pairs == expected
    axes = {r.axis for r in mine}
    assert {"full", "image", "text", "mask"} <= axes
    masked = [r for r in mine if r.axis == "mask"]
    assert [(r.image_size, r.text_length, r.mask_ratio) for r in masked] == [
        (full_px, full_t, s.mask_ratio)]
    # Masking keeps as many tokens as the smallest resize: resizing vs masking at equal tokens.
    assert run.compute_accounting(masked[0], s)["image_tokens"] == (min(s.image_sizes) // 8) ** 2
    assert ({"both", "fullres"} <= axes) == (width in s.headline_widths)
  # Every point has every seed, its seeds next to each other.
  points = {}
  for r in runs:
    points.setdefault(r.point_id, []).append(r.seed)
  assert all(seeds == list(s.seeds) for seeds in points.values())
  assert [r.point_id for r in runs[::len(s.seeds)]] == list(points)


def test_headline_pair_is_compute_matched():
  s = SETTINGS
  for width in s.widths:
    schedule = run.schedule_spec(width, 0, s)
    assert (schedule.image_size, schedule.text_length) == (min(s.image_sizes),
                                                           min(s.text_lengths))
    steps = run.matched_fullres_steps(width, s)
    base = run.RunSpec(width, max(s.image_sizes), max(s.text_lengths), 0, "fullres",
                       train_steps=steps)
    budget = run.compute_accounting(schedule, s)["total_flops"]
    spent = run.compute_accounting(base, s)
    assert spent["finetune_flops"] == 0 and spent["pretrain_samples"] == steps * s.batch_size
    # Within half a step of the schedule's FLOPs.
    assert abs(spent["total_flops"] - budget) <= 0.5 * spent["pretrain_train_flops_per_sample"] * (
        s.batch_size)
    # Fewer samples than the schedule: full resolution costs more per sample.
    assert steps < s.pretrain_steps + s.finetune_steps
  headline = [r for r in run.build_grid(s) if r.axis == "fullres"]
  assert {r.width for r in headline} == set(s.headline_widths)


def test_full_grid_and_combined_point():
  s = dataclasses.replace(SETTINGS, widths=(64, 128), grid="full", mask_ratio=0.0,
                          headline_widths=())
  runs = run.build_grid(s)
  n_seeds = len(s.seeds)
  assert len(runs) == 2 * len(s.image_sizes) * len(s.text_lengths) * n_seeds
  assert sum(r.axis == "both" for r in runs) == 2 * (len(s.image_sizes) - 1) * (
      len(s.text_lengths) - 1) * n_seeds
  combined = run.build_grid(dataclasses.replace(s, grid="axes", combined=True))
  both = [r for r in combined if r.axis == "both"]
  assert [(r.image_size, r.text_length) for r in both] == [(32, 8)] * (2 * n_seeds)
  # The headline reuses a combined point rather than training it twice.
  with_headline = run.build_grid(dataclasses.replace(s, grid="axes", combined=True,
                                                     headline_widths=(128,)))
  assert len(with_headline) == len(combined) + n_seeds


def test_grid_orders_widths_cheapest_first_and_the_headline_follows_its_width():
  s = dataclasses.replace(SETTINGS, widths=(192, 64), headline_widths=(64,))
  runs = run.build_grid(s)
  widths = [r.width for r in runs]
  assert widths == sorted(widths)
  last64 = max(i for i, r in enumerate(runs) if r.width == 64)
  assert runs[last64].axis == "fullres"


@pytest.mark.parametrize("change, message", [
    (dict(image_sizes=(64, 50)), "not divisible by the patch size 8"),
    (dict(widths=(64, 100)), "not a multiple of head_dim"),
    (dict(pretrain_steps=10, pretrain_warmup=10), "must exceed --pretrain_warmup"),
    (dict(headline_widths=(96,)), "not among --widths"),
    (dict(mask_ratio=1.0), "--mask_ratio must be in"),
    (dict(mask_ratio=0.999), "keeps no patch"),
    (dict(seeds=(0, 0)), "must not repeat"),
    (dict(seeds=()), "at least one seed"),
    (dict(image_sizes=(64,)), "the headline needs a reduced image size"),
    (dict(grid="diagonal"), "--grid must be one of"),
    (dict(text_lengths=(32, 1)), "text lengths must be >= 2"),
    (dict(widths=()), "non-empty list"),
])
def test_bad_settings_give_one_line_errors(change, message):
  with pytest.raises(ValueError, match=message):
    run.build_grid(dataclasses.replace(SETTINGS, **change))


def test_command_line_overrides_and_errors(capsys):
  settings, args = run.parse_args(["--widths", "64,128", "--pretrain_steps", "80",
                                   "--out", "/tmp/x"])
  assert settings.widths == (64, 128) and settings.pretrain_steps == 80
  assert settings.headline_widths == (128,)  # follows the new widths: the largest
  assert args.out == "/tmp/x"
  quick, qargs = run.parse_args(["--quick", "--out", "/tmp/q"])
  assert quick.pretrain_steps == run.QUICK.pretrain_steps
  assert dict(quick.data)["data_dir"] == os.path.join("/tmp/q", "data")
  assert run.main(["--image_sizes", "64,50"]) == 2
  assert "not divisible by the patch size" in capsys.readouterr().err
  assert run.main(["--list", "--widths", "64"]) == 0
  listing = capsys.readouterr().out
  assert "w64_px16_t16_s0" in listing and "w64_px32m75_t16_s1" in listing
  assert "w64_fullres_px32_t16_n" in listing
  none, _ = run.parse_args(["--headline_widths", "", "--mask_ratio", "0", "--seeds", "3,4"])
  assert none.headline_widths == () and none.mask_ratio == 0.0 and none.seeds == (3, 4)
  warm, _ = run.parse_args(["--pretrain_warmup", "7", "--finetune_warmup", "2"])
  assert (warm.pretrain_warmup, warm.finetune_warmup) == (7, 2)
  assert not any(r.axis in ("fullres", "mask") for r in run.build_grid(none))


def test_confirm_preset_is_the_declared_test(capsys):
  # README.md, "A confirmatory test at 9 tokens, declared before it ran".
  settings, args = run.parse_args(["--confirm"])
  declared = ([f"w32_px{px}_t16_s{s}" for px in (32, 24) for s in range(4, 12)]
              + [f"w96_px{px}_t16_s{s}" for px in (32, 24) for s in range(4, 8)])
  assert sorted(args.only) == sorted(declared)
  assert settings.seeds == tuple(range(4, 12))
  grid = {r.run_id for r in run.build_grid(settings)}
  assert set(args.only) <= grid  # every run is one the sweep knows
  assert run.main(["--confirm", "--list"]) == 0
  listing = capsys.readouterr().out
  assert "24 runs (4 points, 8 seeds)" in listing and "w96_px24_t16_s8" not in listing
  assert run.main(["--confirm", "--widths", "64"]) == 2
  assert "--confirm compares two widths" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    run.parse_args(["--confirm", "--seeds", "0,1"])


# --------------------------------------------------------- model, stages
def test_model_config_per_width():
  for width in (64, 128, 192):
    cfg = run.model_config(width, SETTINGS)
    for tower in (cfg.image, cfg.text):
      assert (tower.width, tower.heads, tower.mlp_dim, tower.depth) == (
          width, width // 32, 4 * width, SETTINGS.depth)
    assert cfg.image.patch_size == 8 and cfg.embed_dim == width


def test_stages_reduce_tokens_in_pretraining_only():
  s = SETTINGS
  reduced_text = run.RunSpec(128, 64, 8, 0, "text")
  pre, fine = run.make_stages(reduced_text, s)
  assert pre.mixture_or_task_name == "demo_glyphs_syntax"
  assert pre.eval_text_reduction == "syntax"
  assert dict(pre.task_feature_lengths) == {"image": 64, "text": 8}
  assert fine.mixture_or_task_name == "demo_glyphs"
  assert dict(fine.task_feature_lengths) == {"image": 64, "text": 32}
  assert fine.mask_ratio == s.finetune_mask_ratio
  pre, _ = run.make_stages(run.RunSpec(128, 32, 32, 0, "image"), s)
  assert pre.mixture_or_task_name == "demo_glyphs"
  assert dict(pre.task_feature_lengths) == {"image": 32, "text": 32}
  assert pre.train_steps == s.pretrain_steps and pre.batch_size == s.batch_size
  assert pre.mask_ratio == 0.0


def test_masked_pretraining_and_the_full_resolution_baseline():
  s = SETTINGS
  pre, fine = run.make_stages(run.RunSpec(128, 64, 32, 0, "mask", mask_ratio=0.75), s)
  assert pre.mask_ratio == 0.75 and dict(pre.task_feature_lengths) == {"image": 64, "text": 32}
  assert fine.mask_ratio == s.finetune_mask_ratio
  (only,) = run.make_stages(run.RunSpec(128, 64, 32, 0, "fullres", train_steps=77), s)
  assert only.name == "train" and only.train_steps == 77 and only.mask_ratio == 0.0
  assert dict(only.task_feature_lengths) == {"image": 64, "text": 32}
  assert only.optimizer.base_learning_rate == s.pretrain_lr
  spec = run.RunSpec(128, 64, 32, 1, "fullres", train_steps=77)
  assert spec.run_id == "w128_fullres_px64_t32_n77_s1"
  assert run.RunSpec(128, 64, 32, 1, "mask", mask_ratio=0.75).run_id == "w128_px64m75_t32_s1"


# ----------------------------------------------------- compute accounting
def _reference_train_flops(width, depth, image_size, text_length, patch=8, mask_ratio=0.0):
  """Independent count: 3 x forward matmul FLOPs (MLP 4w, cls token, heads).

  Masking drops patches after the patch embedding: every patch is embedded,
  only the kept ones (and cls) go through the blocks.
  """
  def blocks(n):
    return depth * (2 * n * (4 * width ** 2 + 2 * width * 4 * width) + 4 * n * n * width)
  patches = (image_size // patch) ** 2
  kept = int(patches * (1 - mask_ratio))
  image = 2 * patches * patch * patch * 3 * width + blocks(kept + 1) + 2 * width * width
  text = blocks(text_length) + 2 * width * width
  return 3 * (image + text)


def test_compute_accounting_matches_flops_and_an_independent_count():
  from clipa_t5x import flops
  s = SETTINGS
  for spec in run.build_grid(s):
    acc = run.compute_accounting(spec, s)
    cfg = run.model_config(spec.width, s)
    pre = flops.per_example_flops(cfg, spec.image_size, spec.text_length,
                                  spec.mask_ratio)["train"]
    fine = flops.per_example_flops(cfg, 64, 32, s.finetune_mask_ratio)["train"]
    assert acc["pretrain_train_flops_per_sample"] == pytest.approx(pre)
    assert acc["pretrain_train_flops_per_sample"] == pytest.approx(
        _reference_train_flops(spec.width, s.depth, spec.image_size, spec.text_length,
                               mask_ratio=spec.mask_ratio))
    if spec.axis == "fullres":
      assert acc["pretrain_samples"] == spec.train_steps * s.batch_size
      assert acc["total_flops"] == pytest.approx(pre * spec.train_steps * s.batch_size)
    else:
      assert acc["pretrain_samples"] == s.pretrain_steps * s.batch_size
      assert acc["total_flops"] == pytest.approx(
          pre * s.pretrain_steps * s.batch_size + fine * s.finetune_steps * s.batch_size)
    assert acc["image_tokens"] == int((spec.image_size // 8) ** 2 * (1 - spec.mask_ratio))


def test_default_grid_size():
  runs = run.build_grid(SETTINGS)
  s = SETTINGS
  per_width = len(s.image_sizes) + len(s.text_lengths) - 1 + 1  # axes + the masked point
  assert len(runs) == len(s.seeds) * (len(s.widths) * per_width + 2 * len(s.headline_widths))


def test_fewer_tokens_cost_less_with_the_same_samples():
  s = dataclasses.replace(SETTINGS, image_sizes=(64, 48, 32))
  for width in s.widths:
    rows = {(r.image_size, r.text_length): run.compute_accounting(r, s)
            for r in run.build_grid(s) if r.width == width and r.axis in ("full", "image", "text")}
    full = rows[(64, 32)]
    assert {r["pretrain_samples"] for r in rows.values()} == {full["pretrain_samples"]}
    assert rows[(48, 32)]["total_flops"] < full["total_flops"]
    assert rows[(32, 32)]["total_flops"] < rows[(48, 32)]["total_flops"]
    assert rows[(64, 8)]["total_flops"] < full["total_flops"]
    # The fine-tune is the same for every run of a width.
    assert {r["finetune_flops"] for r in rows.values()} == {full["finetune_flops"]}


# ------------------------------------------------------------ the report
def _row(width, px, t, seed, top1, pre=None, axis=None, mask_ratio=0.0, train_steps=None):
  s = SETTINGS
  axis = axis or run._axis(px, t, s)  # pylint: disable=protected-access
  spec = run.RunSpec(width, px, t, seed, axis, mask_ratio=mask_ratio, train_steps=train_steps)
  return {**dataclasses.asdict(spec), "run_id": spec.run_id, "point_id": spec.point_id,
          **run.compute_accounting(spec, s), "num_params": 1000 * width,
          "pretrain_top1": None if axis == "fullres" else (pre if pre is not None else top1 - 0.05),
          "pretrain_top5": 0.9, "top1": top1, "top5": 0.95,
          "factor_pair": min(1.0, top1 + 0.1), "eval_examples": 1000, "wall_seconds": 60.0,
          "cpu_seconds": 100.0}


def _fake_rows(drop64, drop128, drop192, noise=0.01, seeds=(0, 1), mask_gap=0.03,
               headline_gain=0.04):
  """Every point of a 3-width study; seed k adds k * noise to top-1."""
  points = []
  for width, drop in ((64, drop64), (128, drop128), (192, drop192)):
    base = 0.3 + width / 1000
    points += [dict(width=width, px=64, t=32, top1=base),
               dict(width=width, px=48, t=32, top1=base - drop / 2),
               dict(width=width, px=32, t=32, top1=base - drop),
               dict(width=width, px=64, t=8, top1=base - 0.01),
               dict(width=width, px=64, t=32, top1=base - drop - mask_gap, axis="mask",
                    mask_ratio=0.75)]
  base192 = 0.3 + 0.192
  steps = run.matched_fullres_steps(192, SETTINGS)
  points += [dict(width=192, px=32, t=8, top1=base192 - drop192 - 0.01),
             dict(width=192, px=64, t=32, top1=base192 - drop192 - 0.01 - headline_gain,
                  axis="fullres", train_steps=steps)]
  rows = []
  for p in points:
    for seed in seeds:
      rows.append(_row(p["width"], p["px"], p["t"], seed, p["top1"] + seed * noise,
                       axis=p.get("axis"), mask_ratio=p.get("mask_ratio", 0.0),
                       train_steps=p.get("train_steps")))
  return rows


def test_aggregate_averages_seeds_and_reports_spread():
  rows = _fake_rows(0.10, 0.05, 0.02, noise=0.02)
  agg = plot.aggregate(rows)
  assert len(agg) == 3 * 5 + 2
  full64 = next(r for r in agg if r["width"] == 64 and r["axis"] == "full")
  assert full64["seeds"] == [0, 1] and full64["n"] == 2
  assert full64["top1"] == pytest.approx(0.364 + 0.01)
  assert full64["top1_spread"] == pytest.approx(0.02)
  assert (full64["top1_min"], full64["top1_max"]) == pytest.approx((0.364, 0.384))
  noise = plot.noise_summary(rows)
  assert noise["largest_spread"] == pytest.approx(0.02) and noise["eval_images"] == 1000
  assert noise["dof"] == 17 and noise["sd"] == pytest.approx(0.02 / 2 ** 0.5)
  mean = sum(r["top1"] for r in agg) / len(agg)
  assert noise["sampling_error"] == pytest.approx((mean * (1 - mean) / 1000) ** 0.5)
  fullres = next(r for r in agg if r["axis"] == "fullres")
  assert fullres["pretrain_top1"] is None and fullres["pretrain_top1_n"] == 0


def test_pooled_noise_and_intervals():
  rows = _fake_rows(0.10, 0.05, 0.02, noise=0.02)
  sd, dof = plot.pooled_sd(rows)
  assert dof == 17 and sd == pytest.approx(0.02 / 2 ** 0.5)
  noise = plot.Noise(rows)
  assert noise.t == pytest.approx(2.1098, abs=1e-3)  # Student t, 17 dof, 95%
  assert noise.half_width(2, 2) == pytest.approx(noise.t * sd)
  one_seed = [r for r in rows if r["seed"] == 0]
  assert plot.pooled_sd(one_seed) == (None, 0)
  assert plot.Noise(one_seed).half_width(1, 1) is None
  assert plot.t_quantile(1000) == pytest.approx(1.962, abs=1e-3)


def test_drops_against_each_widths_full_run():
  d = {(x["width"], x["axis"], x["image_tokens"], x["text_tokens"]): x
       for x in plot.drops(_fake_rows(0.10, 0.05, 0.02, noise=0.0))}
  assert d[(64, "image", 16, 32)]["drop"] == pytest.approx(0.10)
  assert d[(192, "image", 16, 32)]["drop"] == pytest.approx(0.02)
  assert d[(128, "image", 36, 32)]["drop"] == pytest.approx(0.025)
  assert d[(128, "mask", 16, 32)]["drop"] == pytest.approx(0.08)
  assert d[(64, "image", 16, 32)]["ci"] == pytest.approx(0.0)
  assert 0 < d[(192, "image", 16, 32)]["compute_ratio"] < 1
  assert not any(x["axis"] == "fullres" for x in d.values())


def _trends(rows, metric="top1"):
  """``{(image tokens, (width a, width b)): trend}`` of ``plot.size_trends``."""
  return {(t["image_tokens"], t["widths"]): t for t in plot.size_trends(rows, metric)}


def test_size_trends_say_larger_models_lose_less_when_they_do():
  rows = _fake_rows(0.10, 0.05, 0.02, noise=0.01)
  trends = _trends(rows)
  fewest = trends[(16, (64, 192))]
  assert (fewest["difference"], fewest["ci"]) == pytest.approx((0.08, 0.021), abs=5e-4)
  assert fewest["verdict"] == "shrinks" and fewest["monotone"]
  assert trends[(16, (64, 128))]["difference"] == pytest.approx(0.05)
  assert trends[(16, (128, 192))]["verdict"] == "shrinks"
  # Every reduced count gets a verdict: 36 tokens (48 px) lose half of what 16 lose.
  assert trends[(36, (64, 192))]["difference"] == pytest.approx(0.04)
  assert trends[(36, (64, 192))]["verdict"] == "shrinks"
  assert list(trends)[0][0] == 36  # the larger count first
  assert _trends(rows, "pretrain_top1")[(16, (64, 192))]["verdict"] == "shrinks"
  assert _trends(_fake_rows(0.10, 0.10, 0.10))[(36, (64, 192))]["verdict"] == "no difference"
  within_noise = _fake_rows(0.02, 0.02, 0.02, noise=0.05)
  assert _trends(within_noise)[(36, (64, 192))]["verdict"] == "no cost"


def test_size_trends_go_step_by_step_and_report_every_verdict():
  # Width 64 gains 8 points from fewer tokens, 128 loses 10, 192 loses 2.
  trends = _trends(_fake_rows(-0.08, 0.10, 0.02, noise=0.01))
  assert trends[(16, (64, 128))]["verdict"] == "grows"
  assert trends[(16, (64, 128))]["difference"] == pytest.approx(-0.18)
  assert trends[(16, (128, 192))]["verdict"] == "shrinks"
  assert _trends(_fake_rows(0.03, 0.02, 0.01, noise=0.05))[(16, (64, 192))]["verdict"] == "no cost"
  assert _trends(_fake_rows(0.10, 0.10, 0.095))[(16, (64, 192))]["verdict"] == "no difference"
  assert _trends(_fake_rows(0.01, 0.05, 0.10))[(16, (64, 192))]["verdict"] == "grows"
  one_seed = [r for r in _fake_rows(0.1, 0.05, 0.02) if r["seed"] == 0]
  assert _trends(one_seed)[(16, (64, 192))]["verdict"] == "unknown"


def test_report_of_the_headline_pair_alone_draws_both_figures(tmp_path):
  # --only w192_px32_t8,w192_fullres_...: no full-token or resized run to join in the tokens plot.
  rows = [r for r in _fake_rows(0.10, 0.05, 0.02) if r["axis"] in ("both", "fullres")]
  paths = plot.write_report(rows, str(tmp_path), settings=None, command="run.py --only ...")
  for key in ("markdown", "tokens_png", "flops_png"):
    assert os.path.getsize(paths[key]) > 0
  md = open(paths["markdown"]).read()
  assert "## Headline" in md and "| 192 | 16 / 8 |" in md and "## Does the loss shrink" not in md


def test_budget_report_puts_each_budgets_headline_pair_side_by_side(tmp_path):
  def record(gain, steps):
    rows = [r for r in _fake_rows(0.10, 0.05, 0.02, headline_gain=gain)
            if r["axis"] in ("both", "fullres")]
    return {"runs": rows, "command": f"run.py --pretrain_steps {steps}",
            "settings": {"pretrain_steps": steps, "finetune_steps": steps // 5}}
  paths = plot.budget_report([record(0.04, 500), record(-0.001, 250)], str(tmp_path))
  text = open(paths["markdown"]).read()
  assert text.index("| 192 | 250 + 50 |") < text.index("| 192 | 500 + 100 |")
  assert "| +4.0 ± 3.0 | win | ± 3.0 (2.0 dof): win | 4 of 4, p = 0.333 |" in text
  assert "| -0.1 ± 3.0 | tie | ± 3.0 (2.0 dof): tie | 1 of 4, p = 0.667 |" in text
  assert "run.py --pretrain_steps 250" in text and "](headline_vs_budget.png)" in text
  assert os.path.getsize(paths["png"]) > 0
  no_pair = {"runs": [r for r in _fake_rows(0.1, 0.05, 0.02) if r["axis"] == "full"]}
  with pytest.raises(ValueError, match="no headline pair"):
    plot.budget_report([no_pair], str(tmp_path))
  assert plot.main(["--budgets", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2


def test_welch_interval_matches_scipy_and_is_given_beside_the_pooled_one():
  from scipy import stats
  a, b = [0.80, 0.85, 0.71, 0.88], [0.981, 0.983]
  terms = [(np.var(x, ddof=1) / len(x), len(x) - 1) for x in (a, b)]
  half, dof = plot.welch_interval(terms)
  ref = stats.ttest_ind(a, b, equal_var=False)
  assert dof == pytest.approx(ref.df)
  se = abs(np.mean(a) - np.mean(b)) / abs(ref.statistic)
  assert half == pytest.approx(stats.t.ppf(0.975, ref.df) * se)
  assert plot.welch_interval([(0.0, 1), (0.0, 1)]) is None
  assert _trends(_fake_rows(0.10, 0.05, 0.02, noise=0.01))[(16, (64, 192))]["welch"][
      "verdict"] == "shrinks"
  # The smallest width's seeds spread 10x the largest's: pooled and Welch disagree.
  noisy_small = [dict(r, top1=r["top1"] + (0.04 * r["seed"] if r["width"] == 64 else 0))
                 for r in _fake_rows(0.10, 0.05, 0.02, noise=0.005)]
  fewest = _trends(noisy_small)[(16, (64, 192))]
  assert fewest["verdict"] == "shrinks" and fewest["welch"]["verdict"] == "no difference"
  assert fewest["welch"]["dof"] < 3  # width 64 alone is noisy


def test_trend_verdicts():
  noise = plot.Noise(_fake_rows(0.1, 0.05, 0.02, noise=0.01))
  def drops_of(*values):
    return {w: {"drop": v, "ci": 0.01, "n": (2, 2)} for w, v in zip((64, 128, 192), values)}
  assert plot.trend(drops_of(0.10, 0.05, 0.02), noise)["verdict"] == "shrinks"
  assert plot.trend(drops_of(0.10, 0.01, 0.02), noise)["monotone"] is False
  assert plot.trend(drops_of(0.02, 0.05, 0.10), noise)["verdict"] == "grows"
  assert plot.trend(drops_of(0.05, 0.05, 0.05), noise)["verdict"] == "no difference"
  assert plot.trend(drops_of(0.005, 0.0, -0.01), noise)["verdict"] == "no cost"
  assert plot.trend(drops_of(0.1), noise)["verdict"] == "unknown"


@pytest.mark.parametrize("gap, verdict", [(0.05, "resizing"), (-0.05, "masking"), (0.0, "tie")])
def test_masking_is_compared_with_resizing_at_equal_tokens(gap, verdict):
  pairs = plot.masking_pairs(_fake_rows(0.10, 0.05, 0.02, noise=0.01, mask_gap=gap))
  assert [p["width"] for p in pairs] == [64, 128, 192]
  for p in pairs:
    assert p["masked"]["image_tokens"] == p["resized"]["image_tokens"] == 16
    assert p["resized"]["image_size"] == 32 and p["masked"]["mask_ratio"] == 0.75
    assert p["difference"] == pytest.approx(-gap) and p["verdict"] == verdict


@pytest.mark.parametrize("gain, verdict", [(0.05, "win"), (-0.05, "loss"), (0.0, "tie")])
def test_the_headline_either_way(gain, verdict):
  rows = _fake_rows(0.10, 0.05, 0.02, noise=0.01, headline_gain=gain)
  (pair,) = plot.headline_pairs(rows)
  assert pair["width"] == 192 and pair["verdict"] == verdict
  assert (pair["difference"], pair["ci"]) == pytest.approx((gain, 0.015), abs=5e-4)
  assert f"| {100 * gain:+.1f} ± 1.5 | {verdict} |" in plot.analysis(rows)
  no_headline = [r for r in rows if r["axis"] not in ("fullres", "both")]
  assert plot.headline_pairs(no_headline) == []
  assert "## Headline" not in plot.analysis(no_headline)


def test_headline_is_checked_with_each_arms_own_seed_variance_and_ranks():
  rows = _fake_rows(0.10, 0.05, 0.02, headline_gain=0.04)
  pair = plot.headline_pairs(rows)[0]
  assert pair["welch"]["verdict"] == "win"
  # Six seeds; the full-resolution arm stalls on half of them, the schedule never does
  # (the width-160 pair of the study's README): pooled says win, Welch says tie.
  rows = []
  for seed, (sched, full) in enumerate(zip((0.902, 0.920, 0.906, 0.886, 0.889, 0.907),
                                           (0.883, 0.438, 0.854, 0.495, 0.288, 0.882))):
    rows += [dict(r, seed=seed, run_id=f"{r['point_id']}_s{seed}",
                  top1=sched if r["axis"] == "both" else full)
             for r in _fake_rows(0.1, 0.05, 0.02, seeds=(0,)) if r["axis"] in ("both", "fullres")]
  pair = plot.headline_pairs(rows)[0]
  assert pair["verdict"] == "win"
  assert pair["welch"]["verdict"] == "tie" and pair["welch"]["dof"] == pytest.approx(5.0, abs=0.1)
  # Every schedule seed beats every full-resolution seed: the exact rank test says so.
  assert pair["rank"] == {"p": pytest.approx(2 / 924), "wins": 36.0, "pairs": 36}
  assert "| win | ± 27.7 (5.0 dof): tie | 36 of 36, p = 0.00216 |" in plot.analysis(rows)
  assert plot.rank_test([0.5, 0.6, 0.7], [0.55, 0.65, 0.75])["p"] == pytest.approx(0.7)
  assert plot.rank_test([0.9], [0.1, 0.2]) is None


def test_compute_matched_wins():
  rows = [r for r in _fake_rows(0.10, 0.05, 0.02) if r["axis"] not in ("both", "fullres")]
  assert plot.compute_matched_wins(rows) == []
  assert "| none | - | - | - | - |" in plot.analysis(rows)
  # Make width 192's token-reduced runs cheaper and better than width 128's full run.
  full128 = [r for r in rows if r["width"] == 128 and r["axis"] == "full"]
  full128_top1 = sum(r["top1"] for r in full128) / len(full128)
  for r in rows:
    if r["width"] == 192 and r["axis"] != "full":
      r["top1"] = full128_top1 + 0.05 + 0.01 * r["seed"]
      r["total_flops"] = full128[0]["total_flops"] / 2
  wider, narrower = plot.compute_matched_wins(rows)[0]
  assert (wider["width"], narrower["width"]) == (192, 128)
  assert "| width 128 |" in plot.analysis(rows) and "| 2.0x |" in plot.analysis(rows)


def test_analysis_tables_hold_the_changes_and_the_noise():
  text = plot.analysis(_fake_rows(0.10, 0.05, 0.02, noise=0.01))
  assert "| 64 | resize | 16 | 32 |" in text and "| -10.0 ± 1.5 | -10.0 ± 1.5 |" in text
  assert "| 192 | syntax text | 64 | 8 |" in text
  assert "| after the fine-tune | 16 | 64 vs 192 | +8.0 ± 2.1 | shrinks | yes |" in text
  assert "| pre-training only | 36 | 64 vs 192 |" in text
  assert "| 0.7 | 17 | 1.0 | 1000 |" in text  # pooled SD, dof, largest spread, eval images
  no_repeats = plot.analysis([r for r in _fake_rows(0.1, 0.05, 0.02) if r["seed"] == 0])
  assert "| - | 0 | - | 1000 |" in no_repeats and "| unknown |" in no_repeats


def test_table_has_one_row_per_point_with_the_numbers():
  table = plot.format_table(_fake_rows(0.10, 0.05, 0.02, noise=0.02))
  lines = table.splitlines()
  assert len(lines) == 2 + 17
  row = next(line for line in lines if line.startswith("| 64 | 0.06 | full tokens | 64 |"))
  assert "| 0,1 |" in row and "37.4 (36.4–38.4)" in row
  assert any("8 (syntax)" in line for line in lines)
  assert any("| random mask | 64 (75% masked) | 16 |" in line for line in lines)
  assert any("| full res, same FLOPs | 64 (only, " in line for line in lines)


def test_write_report_writes_json_markdown_and_pngs(tmp_path):
  rows = _fake_rows(0.10, 0.05, 0.02)
  paths = plot.write_report(rows, str(tmp_path), settings={"widths": [64, 128, 192]},
                            command="python experiments/inverse_scaling/run.py --quick")
  for key in ("tokens_png", "flops_png"):
    with open(paths[key], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(paths[key]) > 10_000
  with open(paths["json"]) as f:
    record = json.load(f)
  assert len(record["runs"]) == len(rows) and record["settings"]["widths"] == [64, 128, 192]
  assert record["command"].endswith("--quick")
  with open(paths["markdown"]) as f:
    md = f.read()
  assert plot.format_table(rows) in md and plot.analysis(rows) in md
  assert "Command: `python experiments/inverse_scaling/run.py --quick`" in md
  for key in ("tokens_png", "flops_png"):  # results.md links the figures written beside it
    assert f"]({os.path.basename(paths[key])})" in md
  os.remove(paths["tokens_png"])
  assert plot.main(["--out", str(tmp_path)]) == 0  # regenerated from results.json
  assert os.path.exists(paths["tokens_png"])
  with pytest.raises(ValueError, match="no result rows"):
    plot.write_report([], str(tmp_path))


def test_factor_columns_follow_the_data():
  rows = _fake_rows(0.10, 0.05, 0.02)
  table = plot.format_table(rows)
  assert "| pair % |" in table and "colour %" not in table
  shapes = [{**{k: v for k, v in r.items() if k != "factor_pair"},
             "factor_colour": 0.9, "factor_shape": r["top1"]} for r in rows]  # demo_shapes rows
  assert plot.factor_names(shapes) == ["colour", "shape"]
  table = plot.format_table(shapes)
  assert "| colour % | shape % |" in table and "| 90.0 |" in table
  agg = plot.aggregate(shapes)
  assert all(r["factor_colour"] == pytest.approx(0.9) for r in agg)


_RESULTS = os.path.join(_DIR, "results")


def _committed(study):
  """A committed study's ``results.json`` (experiments/inverse_scaling/results/<study>)."""
  with open(os.path.join(_RESULTS, study, "results.json")) as f:
    return json.load(f)


def test_the_declared_tests_read_from_the_committed_rows():
  # The study README's confirmatory test at 9 tokens: width 32's drop minus width 96's.
  rows = _committed("glyphs_confirm9")["runs"]
  (after,) = plot.size_trends(rows)
  assert (after["image_tokens"], after["widths"], after["verdict"]) == (9, (32, 96), "shrinks")
  assert (after["difference"], after["ci"]) == pytest.approx((0.116, 0.071), abs=5e-4)
  assert after["welch"]["verdict"] == "shrinks"
  assert (after["welch"]["ci"], after["welch"]["dof"]) == pytest.approx((0.051, 13.7), abs=0.05)
  (before,) = plot.size_trends(rows, "pretrain_top1")
  assert (before["difference"], before["ci"]) == pytest.approx((0.121, 0.070), abs=5e-4)
  # The fresh width-160 headline test: the rank test at p < 0.05 fails (26 of 36 pairs).
  rows = _committed("glyphs_w160_budget500_fresh")["runs"]
  (pair,) = plot.headline_pairs(rows)
  assert (pair["rank"]["wins"], pair["rank"]["pairs"]) == (26, 36)
  assert pair["rank"]["p"] == pytest.approx(0.240, abs=5e-4) and pair["verdict"] == "tie"
  # Its first look (seeds 0-5): pooled says win, Welch says tie.
  rows = _committed("glyphs_w160_budget500")["runs"]
  (pair,) = plot.headline_pairs(rows)
  assert (pair["verdict"], pair["welch"]["verdict"]) == ("win", "tie")
  assert (pair["difference"], pair["ci"]) == pytest.approx((0.262, 0.241), abs=5e-4)


def test_committed_reports_are_what_plot_writes_from_their_rows(tmp_path):
  studies = sorted(d for d in os.listdir(_RESULTS)
                   if os.path.exists(os.path.join(_RESULTS, d, "results.json")))
  assert len(studies) >= 10
  for study in studies:
    record = _committed(study)
    with open(os.path.join(_RESULTS, study, "results.md")) as f:
      assert plot.markdown_report(record["runs"], record["settings"], record["command"]) == (
          f.read()), f"results/{study}/results.md is stale: rerun plot.py --out on it"
  budgets = ("glyphs_budget250", "glyphs_budget500", "glyphs_schedule24",
             "glyphs_w160_budget500", "glyphs_w160_budget500_fresh")
  paths = plot.budget_report([_committed(b) for b in budgets], str(tmp_path))
  with open(paths["markdown"]) as new, open(
      os.path.join(_RESULTS, "headline_budgets", "headline_vs_budget.md")) as old:
    assert new.read() == old.read()


def test_the_scene_picks_the_tasks_and_the_evaluation(tmp_path, monkeypatch):
  from clipa_t5x import runner
  shapes = dataclasses.replace(SETTINGS, scene="shapes")
  pre, fine = run.make_stages(run.RunSpec(128, 32, 8, 0, "both"), shapes)
  assert (pre.mixture_or_task_name, fine.mixture_or_task_name) == (
      "demo_shapes_syntax", "demo_shapes")
  assert run.parse_args(["--scene", "shapes"])[0].scene == "shapes"
  assert run.DEFAULT.scene == "glyphs"
  seen = {}
  def fake_run(**kw):
    seen["evaluator"] = kw["evaluators"][0]
    return [{"stage": "pretrain"}]  # stops before the result row
  monkeypatch.setattr(runner, "run", fake_run)
  with pytest.raises(run.SweepInterrupted):
    run.run_one(run.build_grid(SETTINGS)[0], SETTINGS, str(tmp_path))
  evaluator = seen["evaluator"]
  assert (evaluator.name, evaluator.task) == ("demo_glyphs", "demo_glyphs_eval")
  assert evaluator.class_names()[0] == "letter E" and "pair" in evaluator.factors()


def test_a_run_directory_trained_with_other_settings_is_refused(tmp_path):
  s = SETTINGS
  spec = run.build_grid(s)[0]
  model_dir = tmp_path / "runs" / spec.run_id
  (model_dir / "pretrain").mkdir(parents=True)
  (model_dir / "pretrain" / "stage_summary.json").write_text("{}")
  (model_dir / run.RUN_FILE).write_text(json.dumps({"spec": "something else"}))
  with pytest.raises(ValueError, match="trained with other settings"):
    run.run_one(spec, s, str(tmp_path))


def test_a_finished_run_is_loaded_not_retrained(tmp_path, monkeypatch):
  from clipa_t5x import runner
  s = SETTINGS
  spec = run.build_grid(s)[0]
  model_dir = tmp_path / "runs" / spec.run_id
  model_dir.mkdir(parents=True)
  (model_dir / run.RUN_FILE).write_text(json.dumps(run._fingerprint(spec, s)))  # pylint: disable=protected-access
  (model_dir / run.RESULT_FILE).write_text(json.dumps({"run_id": spec.run_id, "top1": 0.5}))
  monkeypatch.setattr(runner, "run", lambda **kw: pytest.fail("trained a finished run"))
  assert run.run_one(spec, s, str(tmp_path))["top1"] == 0.5


def test_an_interrupted_run_stops_the_sweep(tmp_path, monkeypatch):
  from clipa_t5x import runner
  s = SETTINGS
  spec = run.build_grid(s)[0]
  monkeypatch.setattr(runner, "run", lambda **kw: [{"stage": "pretrain"}])  # preempted
  with pytest.raises(run.SweepInterrupted, match="rerun the same command to resume"):
    run.run_one(spec, s, str(tmp_path))


def test_a_relative_out_trains_in_an_absolute_model_dir(tmp_path, monkeypatch):
  # Orbax refuses relative checkpoint paths, and the default --out is relative.
  from clipa_t5x import runner
  seen = {}
  def fake_run(**kw):
    seen["model_dir"] = kw["model_dir"]
    return [{"stage": "pretrain"}]  # preempted: stops before the evaluation
  monkeypatch.setattr(runner, "run", fake_run)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(run.SweepInterrupted):
    run.run_one(run.build_grid(SETTINGS)[0], SETTINGS, "rel_out")
  assert os.path.isabs(seen["model_dir"])
  assert seen["model_dir"].startswith(str(tmp_path / "rel_out" / "runs"))


# ------------------------------------------------------------ end to end
def _cli(*flags):
  """Runs run.py as the command line does (one CPU device, compilation cache on)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return subprocess.run([sys.executable, os.path.join(_DIR, "run.py"), *flags], env=env,
                        capture_output=True, text=True, timeout=2400, check=False)


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
  out = str(tmp_path / "study")
  # The --quick preset with one seed: 3 widths x (full tokens, a resize, masking, short text)
  # and the headline pair at the largest width, 14 runs (mostly start-up, compilation and
  # evaluation), then a rerun that trains nothing. Seed repeats and their intervals are
  # checked on fake rows above; a second seed would double the time and test nothing more.
  flags = ["--quick", "--seeds", "0", "--out", out]
  proc = _cli(*flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  settings, _ = run.parse_args(flags)
  with open(os.path.join(out, "results.json")) as f:
    record = json.load(f)
  runs = record["runs"]
  assert sorted(r["run_id"] for r in runs) == sorted(r.run_id for r in run.build_grid(settings))
  assert record["command"] == "python experiments/inverse_scaling/run.py " + " ".join(flags)
  for r in runs:
    assert 0.0 <= r["top1"] <= 1.0
    assert r["factor_pair"] >= r["top1"]  # demo_glyphs: the letter's one-stroke pair
    assert r["total_flops"] > 0 and r["num_params"] > 0 and r["eval_examples"] > 0
    with open(os.path.join(out, "runs", r["run_id"], "summary.json")) as f:
      stages = json.load(f)  # an ordinary clipa_t5x MODEL_DIR
    if r["axis"] == "fullres":
      assert [s["stage"] for s in stages] == ["train"] and r["pretrain_top1"] is None
    else:
      assert [s["stage"] for s in stages] == ["pretrain", "finetune"]
      assert 0.0 <= r["pretrain_top1"] <= 1.0
    assert stages[-1]["zeroshot_top1"] == pytest.approx(r["top1"])
    if r["axis"] == "mask":
      assert stages[0]["image_tokens"] == r["image_tokens"] < (r["image_size"] // 8) ** 2
  assert {r["axis"] for r in runs} == {"full", "image", "mask", "text", "both", "fullres"}
  assert {r["seed"] for r in runs} == set(settings.seeds)
  for name in ("accuracy_vs_tokens.png", "accuracy_vs_flops.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(4) == b"\x89PNG"
  with open(os.path.join(out, "results.md")) as f:
    md = f.read()
  assert "## Does the loss shrink with model size?" in md and "## Headline" in md
  # A rerun trains nothing: every run is found finished.
  again = _cli(*flags)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished before") == len(runs)


def test_runs_recorded_before_masking_moved_to_the_stage_still_match():
  spec = run.build_grid(SETTINGS)[0]
  now = run._fingerprint(spec, SETTINGS)  # pylint: disable=protected-access
  old = {**now, "model_config": {**now["model_config"], "mask_ratio": 0.0, "mask_type": "random"}}
  assert run._upgrade_fingerprint(old) == now  # pylint: disable=protected-access
  other = {**now, "model_config": {**now["model_config"], "width": 1}}
  assert run._upgrade_fingerprint(other) != now  # pylint: disable=protected-access
  assert run._upgrade_fingerprint(None) is None  # pylint: disable=protected-access


def test_runs_recorded_before_the_loss_fields_still_match():
  spec = run.build_grid(SETTINGS)[0]
  now = run._fingerprint(spec, SETTINGS)  # pylint: disable=protected-access
  old_config = {k: v for k, v in now["model_config"].items()
                if k not in ("loss", "init_log_temperature", "init_logit_bias")}
  assert old_config != now["model_config"]
  assert run._upgrade_fingerprint({**now, "model_config": old_config}) == now  # pylint: disable=protected-access
