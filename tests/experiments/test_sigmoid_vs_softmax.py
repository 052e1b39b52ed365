"""Tests of experiments/sigmoid_vs_softmax/run.py (no training) and of its committed results."""

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name, path):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


study = _load("sigmoid_vs_softmax_run", "experiments/sigmoid_vs_softmax/run.py")


def test_eighteen_runs_seed_by_seed():
  runs = study.Comparison().runs()
  assert len(runs) == 18 and len({r["run_id"] for r in runs}) == 18
  # The first six cover every (loss, batch) point once: a study cut short still compares.
  assert {(r["loss"], r["batch_size"]) for r in runs[:6]} == {
      (loss, b) for loss in ("softmax", "sigmoid") for b in (32, 128, 512)}
  assert {r["seed"] for r in runs[:6]} == {0}


def test_every_batch_sees_the_same_samples_under_the_clipa_schedule():
  isr = study._inverse_scaling()  # pylint: disable=protected-access
  comparison = study.Comparison()
  for batch in comparison.batch_sizes:
    settings = study._settings(isr, comparison, batch)  # pylint: disable=protected-access
    assert settings.pretrain_steps * batch == comparison.pretrain_samples
    assert settings.finetune_steps * batch == comparison.finetune_samples
    spec = isr.schedule_spec(comparison.width, 0, settings)
    pretrain, finetune = isr.make_stages(spec, settings)
    # CLIPA: few tokens first (16 px, 8 syntax tokens), then full resolution briefly.
    assert (pretrain.image_size, pretrain.text_length) == (16, 8)
    assert (finetune.image_size, finetune.text_length) == (32, 16)
    assert 1 <= settings.pretrain_warmup < settings.pretrain_steps


def test_a_finished_run_trained_with_other_steps_is_refused():
  isr = study._inverse_scaling()  # pylint: disable=protected-access
  comparison = study.Comparison()
  run = comparison.runs()[0]
  settings = study._settings(isr, comparison, run["batch_size"])  # pylint: disable=protected-access
  row = {**run, "pretrain_steps": settings.pretrain_steps,
         "finetune_steps": settings.finetune_steps, "top1": 0.3}
  study.check_reusable(row, run, settings)  # the same settings: reused
  with pytest.raises(ValueError, match="another --out"):
    study.check_reusable({**row, "pretrain_steps": 3 * settings.pretrain_steps}, run, settings)


def test_paired_differences_and_their_interval():
  rows = [{"loss": loss, "batch_size": 32, "seed": s, "top1": top1}
          for loss, s, top1 in [("softmax", 0, 0.30), ("sigmoid", 0, 0.35),
                                ("softmax", 1, 0.40), ("sigmoid", 1, 0.41),
                                ("softmax", 2, 0.20), ("sigmoid", 2, 0.23),
                                ("softmax", 3, 0.50)]]  # seed 3 has no sigmoid run: unpaired
  seeds, diffs = study.paired_differences(rows, 32)
  assert seeds == [0, 1, 2]
  np.testing.assert_allclose(diffs, [0.05, 0.01, 0.03], atol=1e-12)
  low, high = study.interval95(diffs)
  # mean 0.03, sd 0.02, t(2) = 4.303: 0.03 -/+ 4.303 * 0.02 / sqrt(3)
  np.testing.assert_allclose([low, high], [0.03 - 0.049687, 0.03 + 0.049687], atol=1e-5)
  assert study.interval95([0.1]) is None


RESULTS = os.path.join(ROOT, "experiments", "sigmoid_vs_softmax", "results")


def _committed(folder):
  with open(os.path.join(folder, "results.json")) as f:
    saved = json.load(f)
  settings = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["settings"].items()}
  return study.Comparison(**settings), saved["rows"]


@pytest.mark.parametrize("folder", [RESULTS, RESULTS + "_3x"])
def test_committed_results_match_their_settings_and_tables(folder):
  comparison, rows = _committed(folder)
  planned = {r["run_id"] for r in comparison.runs()}
  assert {r["run_id"] for r in rows} <= planned
  for r in rows:  # every row trained with the steps its settings give
    assert r["pretrain_steps"] * r["batch_size"] == comparison.pretrain_samples
    assert r["finetune_steps"] * r["batch_size"] == comparison.finetune_samples
  with open(os.path.join(folder, "results.md")) as f:
    assert study.tables(rows, comparison) in f.read()


@pytest.mark.parametrize("folder", [RESULTS, RESULTS + "_3x"])
def test_committed_study_has_all_eighteen_runs_and_the_readme_quotes_them(folder):
  comparison, rows = _committed(folder)
  assert len(rows) == 18 and {r["run_id"] for r in rows} == {r["run_id"] for r in comparison.runs()}
  with open(os.path.join(ROOT, "experiments", "sigmoid_vs_softmax", "README.md")) as f:
    readme = f.read()
  for b in comparison.batch_sizes:
    means = [100 * np.mean([r["top1"] for r in rows if r["loss"] == loss and r["batch_size"] == b])
             for loss in study.LOSSES]
    _, diffs = study.paired_differences(rows, b)
    low, high = study.interval95(diffs)
    row = (f"| {b} | {means[0]:.1f} | {means[1]:.1f} | {100 * np.mean(diffs):+.1f} "
           f"[{100 * low:+.1f}, {100 * high:+.1f}] |")
    assert row in readme, row
