"""Tests for clipa_t5x.evaluation.metrics against loop-based numpy references."""

import numpy as np
import pytest

from clipa_t5x.evaluation import metrics


def _ref_topk(logits, labels, ks):
  """Brute force: rank = classes scoring higher (NaN = higher) + tied classes with lower index."""
  out = {}
  for k in ks:
    hits = 0
    for i in range(logits.shape[0]):
      y = labels[i]
      if np.isnan(logits[i, y]):
        continue
      rank = 0
      for j in range(logits.shape[1]):
        if j == y:
          continue
        if np.isnan(logits[i, j]) or logits[i, j] > logits[i, y]:
          rank += 1
        elif logits[i, j] == logits[i, y] and j < y:
          rank += 1
      hits += rank < k
    out[k] = hits / logits.shape[0]
  return out


def _ref_class_embeddings(feats, c, t):
  out = []
  for ci in range(c):
    acc = np.zeros(feats.shape[1])
    for ti in range(t):
      row = feats[ci * t + ti].astype(np.float64)
      acc += row / np.sqrt(np.sum(row ** 2))
    acc /= t
    out.append(acc / np.sqrt(np.sum(acc ** 2)))
  return np.stack(out)


@pytest.mark.parametrize("seed,n,c", [(0, 50, 10), (1, 7, 5), (2, 33, 1000)])
def test_topk_matches_brute_force_random(seed, n, c):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(n, c)).astype(np.float32)
  labels = rng.integers(0, c, size=n)
  got = metrics.topk_accuracy(logits, labels, ks=(1, 5))
  assert got == pytest.approx(_ref_topk(logits, labels, (1, 5)))
  # Without ties this is the usual argsort definition too.
  order = np.argsort(-logits, axis=1)
  assert got[1] == pytest.approx(np.mean(order[:, 0] == labels))
  assert got[5] == pytest.approx(np.mean((order[:, :5] == labels[:, None]).any(axis=1)))


def test_ties_go_to_the_lower_class_index():
  logits = np.array([
      [1.0, 1.0, 0.0],   # label 0 tied with 1: rank 0 (lower index wins)
      [1.0, 1.0, 0.0],   # label 1 tied with 0: rank 1
      [0.0, 0.0, 0.0],   # all equal, label 2: rank 2
      [2.0, 1.0, 1.0],   # label 2 below 0, tied with 1: rank 2
  ], np.float32)
  labels = np.array([0, 1, 2, 2])
  np.testing.assert_array_equal(metrics.label_ranks(logits, labels), [0, 1, 2, 2])
  got = metrics.topk_accuracy(logits, labels, ks=(1, 2, 3))
  assert got == {1: 0.25, 2: 0.5, 3: 1.0}
  assert got == pytest.approx(_ref_topk(logits, labels, (1, 2, 3)))


def test_ties_random_integer_logits_match_brute_force_and_stable_sort():
  rng = np.random.default_rng(3)
  logits = rng.integers(0, 3, size=(40, 6)).astype(np.float32)  # many exact ties
  labels = rng.integers(0, 6, size=40)
  got = metrics.topk_accuracy(logits, labels, ks=(1, 2, 5))
  assert got == pytest.approx(_ref_topk(logits, labels, (1, 2, 5)))
  assert got[1] == pytest.approx(np.mean(np.argmax(logits, axis=1) == labels))
  order = np.argsort(-logits, axis=1, kind="stable")  # ties keep index order
  for k in (2, 5):
    assert got[k] == pytest.approx(np.mean((order[:, :k] == labels[:, None]).any(axis=1)))


def test_collapsed_model_scores_chance():
  labels = np.arange(20) % 10
  assert metrics.topk_accuracy(np.zeros((20, 10)), labels, ks=(1, 5)) == {1: 0.1, 5: 0.5}


def test_nan_is_never_a_hit():
  logits = np.array([[np.nan, 0.0, 1.0], [2.0, np.nan, 1.0], [2.0, 0.0, 1.0]])
  labels = np.array([0, 0, 0])
  # Row 0: NaN true score -> miss for every k. Row 1: the NaN class counts as higher.
  np.testing.assert_array_equal(metrics.label_ranks(logits, labels), [3, 1, 0])
  got = metrics.topk_correct(logits, labels, ks=(1, 2, 3))
  np.testing.assert_array_equal(got[1], [False, False, True])
  np.testing.assert_array_equal(got[3], [False, True, True])
  assert metrics.topk_accuracy(logits, labels, ks=(1, 3)) == pytest.approx(
      _ref_topk(logits, labels, (1, 3)))


def test_topk_correct_returns_per_example_bools():
  logits = np.array([[0.1, 0.9], [0.8, 0.2]])
  got = metrics.topk_correct(logits, np.array([1, 1]), ks=(1,))
  assert got[1].dtype == bool
  np.testing.assert_array_equal(got[1], [True, False])


@pytest.mark.parametrize("logits,labels,ks,match", [
    (np.zeros((2, 3)), np.array([0, 1]), (5,), "top-5 is undefined with only 3"),
    (np.zeros((2, 3)), np.array([0, 3]), (1,), r"labels must lie in \[0, 3\)"),
    (np.zeros((2, 3)), np.array([0, -1]), (1,), r"labels must lie in \[0, 3\)"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), (1,), "labels must be integers"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), (1,), "labels must be"),
    (np.zeros(3), np.array([0]), (1,), r"logits must be \[N, C\]"),
    (np.zeros((2, 3)), np.array([0, 1]), (0,), "positive int"),
    (np.zeros((0, 3)), np.zeros(0, np.int32), (1,), "at least one example"),
])
def test_topk_bad_input(logits, labels, ks, match):
  with pytest.raises(ValueError, match=match):
    metrics.topk_accuracy(logits, labels, ks=ks)


def test_class_embeddings_matches_loops():
  rng = np.random.default_rng(4)
  c, t, d = 5, 3, 8
  feats = rng.normal(size=(c * t, d)).astype(np.float32) * rng.uniform(0.1, 10, size=(c * t, 1))
  got = metrics.class_embeddings(feats, c, t)
  assert got.shape == (c, d) and got.dtype == np.float32
  np.testing.assert_allclose(got, _ref_class_embeddings(feats, c, t), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)


def test_class_embeddings_normalises_each_prompt_first():
  # A prompt with a huge norm must not dominate its class average.
  a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  got = metrics.class_embeddings(np.stack([100 * a, b]), 1, 2)
  np.testing.assert_allclose(got, [[np.sqrt(0.5), np.sqrt(0.5)]], rtol=1e-6)


def test_class_embeddings_is_class_major():
  feats = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)  # C=2, T=2
  np.testing.assert_allclose(metrics.class_embeddings(feats, 2, 2), [[1, 0], [0, 1]])


@pytest.mark.parametrize("shape,c,t", [((6, 4), 4, 2), ((8,), 4, 2), ((8, 4), 0, 2)])
def test_class_embeddings_bad_shape(shape, c, t):
  with pytest.raises(ValueError):
    metrics.class_embeddings(np.ones(shape), c, t)


def test_class_embeddings_keep_zero_rows_finite():
  out = metrics.class_embeddings(np.array([[3.0, 4.0], [0.0, 0.0]]), 2, 1)
  np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
