"""Tests of clipa_t5x.evaluation.batching: fixed-size calls and the one-host pass-through."""

import numpy as np
import pytest

from clipa_t5x.evaluation import batching


def test_synchronized_yields_dummies_only_for_other_hosts():
  # One host: no dummy batches after the data ends.
  assert list(batching.synchronized(iter([1, 2]), lambda: 0)) == [1, 2]


def test_gather_rows_on_one_host_is_identity():
  x = np.arange(6).reshape(3, 2)
  (out,) = batching.gather_rows(x)
  np.testing.assert_array_equal(out, x)


def test_encode_in_batches_pads_with_the_last_row_and_drops_padding():
  calls = []

  def fn(x):
    calls.append(x.copy())
    return x.astype(np.float32) * 2

  x = np.arange(14, dtype=np.int32).reshape(7, 2)
  out = batching.encode_in_batches(fn, x, 3, "enc")
  np.testing.assert_array_equal(out, 2 * x)
  assert [c.shape for c in calls] == [(3, 2)] * 3
  np.testing.assert_array_equal(calls[-1], x[[6, 6, 6]])


def test_encode_batches_keeps_payloads_in_order():
  batches = [(np.ones((2, 1)), "a"), (np.zeros((1, 1)), "b")]
  out = list(batching.encode_batches(lambda x: x, iter(batches), 2, "enc",
                                     (np.zeros((1, 1)), None)))
  assert [p for _, p in out] == ["a", "b"] and [f.shape for f, _ in out] == [(2, 1), (1, 1)]


def test_encode_in_batches_errors():
  with pytest.raises(ValueError, match="nothing to encode"):
    batching.encode_in_batches(lambda x: x, np.zeros((0, 2)), 4, "enc")
  with pytest.raises(ValueError, match=r"enc must return \[batch_size=4, D\]"):
    batching.encode_in_batches(lambda x: x[:1], np.zeros((3, 2)), 4, "enc")
