"""Tests for the user_data Tasks (tasks/user_data.py) and gin/runs/custom_data.gin."""

import os

import pytest
import seqio

import clipa_t5x.tasks  # noqa: F401  (registers the Tasks)
from clipa_t5x import gin_utils
from clipa_t5x import runner
from clipa_t5x.tasks import user_data
import helpers  # tests/helpers.py

LENGTHS = {"image": 16, "text": 8}


_helpers = helpers.shard_writers  # tests/helpers.py


def test_task_reads_a_brace_range_and_returns_its_name(tmp_path):
  root = os.path.dirname(_helpers().write_webdataset(str(tmp_path / "wds"), 3, 4))
  name = user_data.task(os.path.join(root, "{00000..00001}.tar"), text_reduction="syntax")
  assert name == "user_data_syntax"
  ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, split="train", shuffle=False)
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == 8  # shards 0 and 1 only
  assert examples[0]["image"].shape == (16, 16, 3) and examples[0]["text"].shape == (8,)


def test_task_reads_tfrecords_and_names_the_macro_when_empty(tmp_path):
  path = _helpers().write_tfrecords(str(tmp_path / "rec"), n=3)
  name = user_data.task(path, name="my_records")
  ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, split="train", shuffle=False)
  assert len(list(ds.as_numpy_iterator())) > 0
  user_data.task(str(tmp_path / "none" / "*.tar"))
  with pytest.raises(ValueError, match="TRAIN_DATA: no files match"):
    seqio.get_mixture_or_task("user_data").get_dataset(LENGTHS, split="train")
  with pytest.raises(ValueError, match="text_reduction"):
    user_data.task(path, text_reduction="nouns")


@pytest.mark.usefixtures("clean_gin")
def test_custom_data_gin_wires_train_data_and_eval(captured, tmp_path):
  root = os.path.dirname(_helpers().write_webdataset(str(tmp_path / "wds"), 2, 4))
  data = os.path.join(root, "{00000..00001}.tar")
  gin_utils.parse_gin_flags(["gin/runs/custom_data.gin"], [
      f"MODEL_DIR = '{tmp_path / 'run'}'", f"TRAIN_DATA = '{data}'", f"EVAL_DATA = '{data}'",
      "CAPTION_KEY = 'txt'"])
  gin_utils.configured(runner.run)()
  (pre, _, pre_kwargs), (ft, _, _) = captured
  assert pre.mixture_or_task_name.endswith("_syntax")
  assert ft.mixture_or_task_name == pre.mixture_or_task_name[:-len("_syntax")]
  assert pre.eval_text_reduction == "syntax"
  evals = pre_kwargs["evaluators"]
  assert [e.name for e in evals] == ["user_data_retrieval"]  # no class names: retrieval only
