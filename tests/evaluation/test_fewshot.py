"""Tests of clipa_t5x.evaluation.fewshot: the closed-form probe, the shot draw, the evaluator."""

import numpy as np
import pytest

from clipa_t5x.evaluation import fewshot


def _direct_solve(features, labels, num_classes, l2_reg):
  """The same regularised least-squares problem, solved directly: (XᵀX + λI) W = XᵀY."""
  mean = features.mean(axis=0)
  std = features.std(axis=0) + 1e-5
  x = np.concatenate([(features - mean) / std,
                      np.full((features.shape[0], 1), fewshot.BIAS_FEATURE)], axis=1)
  y = 2.0 * np.eye(num_classes)[labels] - 1.0
  return np.linalg.solve(x.T @ x + l2_reg * np.eye(x.shape[1]), x.T @ y)


@pytest.mark.parametrize("n, d", [(40, 8), (10, 32)])  # primal (N >= D+1) and dual (N < D+1)
@pytest.mark.parametrize("l2_reg", [1.0, 2.0 ** 10])
def test_weights_equal_a_direct_numpy_solve(n, d, l2_reg):
  rng = np.random.RandomState(n + d)
  features = rng.randn(n, d) * rng.uniform(0.1, 3.0, d) + rng.randn(d)
  labels = np.arange(n) % 5
  probe = fewshot.fit_least_squares(features.astype(np.float32), labels, 5, l2_reg)
  expected = _direct_solve(features.astype(np.float32).astype(np.float64), labels, 5, l2_reg)
  assert probe.weights.shape == (d + 1, 5)
  np.testing.assert_allclose(probe.weights, expected, atol=1e-4, rtol=1e-4)
  # A wrong λ gives other weights: the check can fail.
  assert np.max(np.abs(_direct_solve(features, labels, 5, 2 * l2_reg) - expected)) > 1e-4


def test_probe_separates_separable_classes():
  rng = np.random.RandomState(0)
  centres = rng.randn(4, 16) * 5
  labels = np.repeat(np.arange(4), 10)
  features = centres[labels] + rng.randn(40, 16)
  probe = fewshot.fit_least_squares(features, labels, 4, l2_reg=1.0)
  test_labels = np.repeat(np.arange(4), 25)
  test = centres[test_labels] + rng.randn(100, 16)
  assert np.mean(probe.predict(test) == test_labels) > 0.95


def test_shot_draws_are_per_class_seeded_and_nested():
  labels = np.array([0, 1, 2] * 10)
  one = fewshot.sample_shots(labels, 3, 1, seed=0)
  five = fewshot.sample_shots(labels, 3, 5, seed=0)
  assert sorted(labels[one]) == [0, 1, 2]
  assert np.bincount(labels[five]).tolist() == [5, 5, 5]
  assert set(one) <= set(five)  # a seed's 1-shot set is inside its 5-shot set
  assert not np.array_equal(five, fewshot.sample_shots(labels, 3, 5, seed=1))
  np.testing.assert_array_equal(five, fewshot.sample_shots(labels, 3, 5, seed=0))
  with pytest.raises(ValueError, match="class 0 has 10 training examples, fewer than 11"):
    fewshot.sample_shots(labels, 3, 11, seed=0)


def _examples(images, labels):
  def fn():
    for image, label in zip(images, labels):
      yield {"image": image, "label": np.int64(label)}
  return fn


def test_evaluator_reports_every_shot_count_and_seed():
  # Images whose mean colour is their class: an encoder of mean colours separates them.
  rng = np.random.RandomState(1)
  def split(n):
    labels = rng.randint(0, 3, n)
    images = np.clip(60 * labels[:, None, None, None] + rng.randint(0, 40, (n, 4, 4, 3)),
                     0, 255).astype(np.uint8)
    return images, labels
  train, test = split(60), split(30)
  calls = []
  def encode(images):
    calls.append(images.shape[0])
    return np.concatenate([images.mean(axis=(1, 2)), rng.randn(images.shape[0], 2)], axis=1)
  evaluator = fewshot.FewShotEvaluator("toy", _examples(*train), _examples(*test),
                                       shots=(1, 5), num_seeds=2, l2_reg=1.0, batch_size=16,
                                       image_size=4)
  results = evaluator.evaluate(encode)
  assert set(calls) == {16}  # fixed-size encoder calls
  assert set(results) == {"toy/1shot_top1", "toy/5shot_top1", "toy/1shot_top1_seed0",
                          "toy/1shot_top1_seed1", "toy/5shot_top1_seed0",
                          "toy/5shot_top1_seed1", "toy/num_examples"}
  assert results["toy/num_examples"] == 30
  assert results["toy/5shot_top1"] == pytest.approx(
      (results["toy/5shot_top1_seed0"] + results["toy/5shot_top1_seed1"]) / 2)
  assert results["toy/5shot_top1"] > 0.75  # chance: 1/3


@pytest.mark.parametrize("kwargs, match", [
    ({"shots": (0,)}, "shots"),
    ({"num_seeds": 0}, "num_seeds"),
    ({"features": "logits"}, "features"),
    ({"l2_reg": 0.0}, "l2_reg"),
])
def test_bad_settings_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    fewshot.FewShotEvaluator("x", lambda: iter(()), lambda: iter(()), **kwargs)
