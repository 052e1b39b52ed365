"""Tests of experiments/sigmoid_vs_softmax/run.py: the run list and each run's settings (no training)."""

import importlib.util
import os

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
