"""The data position saved with checkpoints: a resumed run sees the exact same batches."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import clipa_t5x.tasks  # noqa: F401  (registers the demo Tasks)
from clipa_t5x import checkpoints
from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import partitioning
from clipa_t5x import runner
from clipa_t5x.demo import data as demo_data
from clipa_t5x.data import iterator_state
from clipa_t5x.models import configs
from clipa_t5x.tasks import demo


def _dataset():
  ds = tf.data.Dataset.range(100).shuffle(30, seed=1).map(lambda x: {"x": x * 2}).batch(4)
  return ds.prefetch(2)


def test_save_and_restore_continue_the_exact_stream(tmp_path):
  reference = [b["x"].tolist() for b in iterator_state.CheckpointableBatches(_dataset())]
  batches = iterator_state.CheckpointableBatches(_dataset())
  for _ in range(5):
    next(batches)
  batches.save(str(tmp_path), 5)
  assert iterator_state.has_state(str(tmp_path), 5)
  resumed = iterator_state.CheckpointableBatches(_dataset())
  assert resumed.restore(str(tmp_path), 5)
  assert [b["x"].tolist() for b in resumed] == reference[5:]
  assert not iterator_state.CheckpointableBatches(_dataset()).restore(str(tmp_path), 7)


def test_remove_except_keeps_only_listed_steps(tmp_path):
  batches = iterator_state.CheckpointableBatches(_dataset())
  for step in (2, 4, 6):
    next(batches)
    batches.save(str(tmp_path), step)
  iterator_state.remove_except(str(tmp_path), [4, 6])
  assert sorted(os.listdir(tmp_path / "data_iterators")) == ["step_4", "step_6"]


@pytest.mark.slow
def test_a_resumed_stage_reproduces_the_uninterrupted_losses(tmp_path):
  data = demo_data.DemoData(str(tmp_path / "data"), num_train=256, num_eval=60, image_size=32,
                            num_train_shards=2)
  try:
    stage = runner.Stage(name="pretrain", mixture_or_task_name=demo.task("truncate", data),
                         task_feature_lengths={"image": 16, "text": 8}, batch_size=16,
                         train_steps=6, mask_ratio=0.25)
    kwargs = dict(model_dir=str(tmp_path / "run"), stages=[stage],
                  model_config=configs.get_config("Ti/8"),
                  partitioner=partitioning.PjitPartitioner(
                      logical_axis_rules=partitioning.data_parallel_logical_axis_rules()),
                  checkpoint_config=checkpoints.SaveCheckpointConfig(period=2, keep=None),
                  log_every=1)
    runner.run(**kwargs)
    stage_dir = tmp_path / "run" / "pretrain"
    first = [json.loads(l) for l in (stage_dir / "train_metrics.jsonl").read_text().splitlines()]
    # Interrupted after step 2: the later checkpoints and the summary never got written.
    os.remove(stage_dir / model_dir_lib.STAGE_SUMMARY)
    for step in (4, 6):
      shutil.rmtree(stage_dir / f"checkpoint_{step}")
    runner.run(**kwargs)
    rows = [json.loads(l) for l in (stage_dir / "train_metrics.jsonl").read_text().splitlines()]
    again = rows[len(first):]
    assert [r["step"] for r in again] == [3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in again], [r["loss"] for r in first[2:]],
                               rtol=1e-5)
  finally:
    demo.register()  # back to the default location
