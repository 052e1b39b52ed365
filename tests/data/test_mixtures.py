"""TRAIN_DATA values, tagged Mixtures and per-source counts (clipa_t5x/data/mixtures.py)."""

import math
import os

import numpy as np
import pytest

import clipa_t5x.tasks  # noqa: F401  (registers the Tasks)
from clipa_t5x.data import dataset
from clipa_t5x.data import iterator_state
from clipa_t5x.data import mixtures
from clipa_t5x.tasks import train_data
import helpers  # tests/helpers.py

LENGTHS = {"image": 16, "text": 8}


_helpers = helpers.shard_writers  # tests/helpers.py


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
  """A tar source and a TFRecord source, two tiny shards each."""
  root = tmp_path_factory.mktemp("mix")
  h = _helpers()
  tars = os.path.dirname(h.write_webdataset(str(root / "mine"), 2, 8))
  records = os.path.dirname(h.write_tfrecords(str(root / "theirs"), 2, 8))
  return os.path.join(tars, "{00000..00001}.tar"), os.path.join(records, "*.tfrecord")


def test_parse_normalises_and_refuses_bad_values():
  assert mixtures.parse("a/*.tar") == [("a/*.tar", 1.0)]
  assert mixtures.parse(["a/*.tar", "b/*.tar"]) == [("a/*.tar,b/*.tar", 1.0)]
  entries = mixtures.parse({"a/*.tar": 3, "laion2b": 7})
  assert mixtures.parse([("a/*.tar", 3), ("laion2b", 7)]) == entries
  assert entries == [("a/*.tar", 3.0), ("laion2b", 7.0)]
  assert mixtures.normalise([r for _, r in entries]) == pytest.approx([0.3, 0.7])
  for bad, match in (({}, "empty mapping"), ({"a/*.tar": 0}, "positive number"),
                     ({"a/*.tar": -1}, "positive"), ({"a/*.tar": True}, "positive"),
                     ({"a/*.tar": float("nan")}, "positive"), ({"": 1.0}, "every key"),
                     (None, "TRAIN_DATA is not set"), ("  ", "TRAIN_DATA is not set")):
    with pytest.raises(ValueError, match=match):
      mixtures.parse(bad)


def test_files_and_names_are_told_apart():
  for files in ("/d/{00000..00099}.tar", "gs://b/laion/*.tar", "shards.tar", "a/*.csv",
                "x.tfrecord", "a.tar,b.tar"):
    assert mixtures.is_file_location(files), files
  for name in ("laion2b", "datacomp1b_syntax", "demo_shapes"):
    assert not mixtures.is_file_location(name), name


def test_names_are_deterministic_and_distinct():
  a = mixtures.files_task_name("/data/mine/{00000..00099}.tar", "_syntax")
  assert a == mixtures.files_task_name("/data/mine/{00000..00099}.tar", "_syntax")
  assert a.startswith("user_data_mine_") and a.endswith("_syntax")
  assert a != mixtures.files_task_name("/data/mine/{00000..00098}.tar", "_syntax")
  assert a != mixtures.files_task_name("/data/mine/{00000..00099}.tar", "_syntax", "format=csv")
  m = mixtures.mixture_name({"x": 0.3, "y": 0.7})
  assert m == mixtures.mixture_name({"y": 7, "x": 3})  # order and scale do not matter
  assert m != mixtures.mixture_name({"x": 0.5, "y": 0.5})


def _batches(name, batch_size=16, seed=0):
  cfg = dataset.DatasetConfig(name, LENGTHS, "train", batch_size, shuffle=True, seed=seed)
  return iterator_state.CheckpointableBatches(dataset.get_dataset(cfg, 0, 1))


@pytest.mark.slow
def test_two_source_counts_match_the_rates_within_sampling_error(two_sources):
  mine, theirs = two_sources
  name = train_data.task({mine: 3, theirs: 7}, text_reduction="syntax")  # rates 30/70
  batches, steps, batch_size = _batches(name), 40, 16
  for _ in range(steps):
    batch = next(batches)
  assert set(batch) == {"image", "text"}  # the source id never reaches the device batch
  counts = batches.host_values[mixtures.COUNTS]
  n = steps * batch_size
  assert counts.sum() == n
  record = mixtures.data_record(name, counts)
  by_source = {s["source"]: s for s in record["sources"]}
  assert by_source[mine]["rate"] == pytest.approx(0.3)
  assert by_source[theirs]["rate"] == pytest.approx(0.7)
  # Binomial: each example is drawn from `mine` with p = 0.3; 5 sigma fails ~1 in 1.7 million.
  sigma = math.sqrt(n * 0.3 * 0.7)
  assert abs(by_source[mine]["examples"] - 0.3 * n) < 5 * sigma
  assert by_source[mine]["examples"] + by_source[theirs]["examples"] == n
  text = mixtures.format_data_record(record)
  assert "rate  30.0%" in text and mine in text and "examples seen" in text


@pytest.mark.slow
def test_counts_resume_with_the_data_position(two_sources, tmp_path):
  name = train_data.task({two_sources[0]: 1, two_sources[1]: 1})
  reference = _batches(name, seed=3)
  for _ in range(8):
    next(reference)
  batches = _batches(name, seed=3)
  for _ in range(5):
    next(batches)
  batches.save(str(tmp_path), 5)
  resumed = _batches(name, seed=3)
  assert resumed.restore(str(tmp_path), 5)
  for _ in range(3):
    next(resumed)
  np.testing.assert_array_equal(resumed.host_values[mixtures.COUNTS],
                                reference.host_values[mixtures.COUNTS])


def test_resolve_sources_counts_files_without_reading(two_sources, tmp_path, monkeypatch):
  mine, theirs = two_sources
  missing = str(tmp_path / "none" / "{00000..00003}.tar")
  monkeypatch.delenv("CLIPA_LAION2B_PATTERN", raising=False)
  found = mixtures.resolve_sources({mine: 1, theirs: 1, missing: 2, "laion2b": 4})
  assert [s.source for s in found] == [mine, theirs, missing, "laion2b"]
  assert [s.rate for s in found] == pytest.approx([0.125, 0.125, 0.25, 0.5])
  assert [s.files for s in found[:3]] == [2, 2, 0]
  assert found[0].problem is None and "no files match" in found[2].problem
  assert found[3].task == "laion2b" and "LAION2B_DATA" in found[3].problem
  (unknown,) = mixtures.resolve_sources("laoin2b")
  assert "did you mean ['laion2b'" in unknown.problem
  # A registered Mixture (a stage's mixture_or_task_name) expands to its Tasks.
  name = train_data.task({mine: 1, theirs: 3}, text_reduction="syntax")
  expanded = mixtures.resolve_sources(name)
  assert [(s.source, s.files) for s in expanded] == [(mine, 2), (theirs, 2)]
  assert [s.rate for s in expanded] == pytest.approx([0.25, 0.75])
  assert all(s.task.endswith("_syntax") for s in expanded)
