"""Tests for the DataComp-1B Tasks and Mixtures (tasks/datacomp.py)."""

import pytest
import seqio

import clipa_t5x.tasks  # noqa: F401  (registers the Tasks)
from clipa_t5x.tasks import datacomp
from clipa_t5x.tasks import laion
import helpers  # tests/helpers.py

LENGTHS = {"image": 16, "text": 8}


_helpers = helpers.shard_writers  # tests/helpers.py


@pytest.fixture
def restore_config():
  """Registers the Tasks and Mixtures at their default locations again afterwards."""
  yield
  laion.register()
  datacomp.register()


def test_recipe_task_names_are_registered():
  # gin/stages/*.gin and gin/runs/clipav2_*.gin name these.
  for name in ("datacomp1b", "datacomp1b_syntax"):
    assert name in seqio.TaskRegistry.names()
  for name in ("laion2b_datacomp1b_mix", "laion2b_datacomp1b_syntax_mix"):
    mix = seqio.get_mixture_or_task(name)
    suffix = "_syntax" if "syntax" in name else ""
    assert sorted(t.name for t in mix.tasks) == [f"datacomp1b{suffix}",
                                                 f"laion2b{suffix}"]
    assert mix.get_rate(mix.tasks[0]) == 1.0


def test_missing_path_names_datacomp_settings(monkeypatch, restore_config):
  monkeypatch.delenv("CLIPA_DATACOMP1B_PATTERN", raising=False)
  datacomp.register()
  with pytest.raises(ValueError, match=r"--gin\.DATACOMP1B_DATA=.*CLIPA_DATACOMP1B_PATTERN"):
    seqio.get_mixture_or_task("datacomp1b_syntax").get_dataset(
        LENGTHS, split="train")


def test_mixture_reads_both_formats(tmp_path, monkeypatch, restore_config):
  h = _helpers()
  monkeypatch.setenv("CLIPA_DATACOMP1B_PATTERN",
                     h.write_tfrecords(str(tmp_path / "dc"), n=3))
  laion.register(train_pattern=h.write_webdataset(str(tmp_path / "laion")))
  datacomp.register()
  assert seqio.get_mixture_or_task("datacomp1b").source.corpus.resolved_format() == "tfrecord"
  mix = seqio.get_mixture_or_task("laion2b_datacomp1b_mix")
  ds = mix.get_dataset(LENGTHS, split="train", shuffle=False, seed=0,
                       num_epochs=1)
  examples = list(ds.take(10).as_numpy_iterator())
  assert len(examples) == 10
  assert all(e["image"].shape == (16, 16, 3) for e in examples)
  assert all(e["text"].shape == (8,) for e in examples)


def test_task_factory_points_one_task_at_its_data(tmp_path, restore_config):
  pattern = _helpers().write_webdataset(str(tmp_path / "dc"), num_shards=1, n=3)
  assert datacomp.task("syntax", train_pattern=pattern) == "datacomp1b_syntax"
  assert datacomp.mixture("syntax") == "laion2b_datacomp1b_syntax_mix"
  ds = seqio.get_mixture_or_task("datacomp1b_syntax").get_dataset(
      LENGTHS, split="train", shuffle=False)
  assert len(list(ds.as_numpy_iterator())) == 3
  # The other Task keeps its own (default) location.
  assert seqio.get_mixture_or_task("datacomp1b").source.corpus.train_pattern is None
