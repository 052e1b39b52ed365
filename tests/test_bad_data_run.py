"""End to end: training over shards with 10% corrupt records finishes and reports the count."""

import io
import json
import os
import tarfile

import pytest

import clipa_t5x.tasks  # noqa: F401  (registers the demo Tasks)
from clipa_t5x import partitioning
from clipa_t5x import runner
from clipa_t5x.data import bad_records
from clipa_t5x.demo import data as demo_data
from clipa_t5x.demo import generate as demo_generate
from clipa_t5x.models import configs
from clipa_t5x.tasks import demo


def _corrupt_every_tenth_image(tar_path: str) -> int:
  """Rewrites a shard with every 10th JPEG cut to 100 bytes; returns how many."""
  with tarfile.open(tar_path) as tar:
    members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
  corrupted, jpg_index = 0, 0
  with tarfile.open(tar_path, "w") as tar:
    for member, data in members:
      if member.name.endswith(".jpg"):
        if jpg_index % 10 == 0:
          data, corrupted = data[:100], corrupted + 1
        jpg_index += 1
      member.size = len(data)
      tar.addfile(member, io.BytesIO(data))
  return corrupted


@pytest.mark.slow
def test_training_over_corrupt_shards_reports_the_bad_records(tmp_path):
  data_dir = str(tmp_path / "data")
  kwargs = dict(num_train=200, num_eval=60, image_size=32, num_train_shards=2)
  root = demo_generate.ensure_demo_data(data_dir, **kwargs)
  corrupted = sum(_corrupt_every_tenth_image(os.path.join(root, name))
                  for name in sorted(os.listdir(root)) if name.startswith("train-"))
  assert corrupted == 20  # 10% of the 200 training records
  bad_records.reset()
  try:
    stage = runner.Stage(name="pretrain",
                         mixture_or_task_name=demo.task(
                             "truncate", demo_data.DemoData(data_dir, **kwargs)),
                         task_feature_lengths={"image": 16, "text": 8}, batch_size=16,
                         train_steps=15)
    rows = runner.run(model_dir=str(tmp_path / "run"), stages=[stage],
                      model_config=configs.get_config("Ti/8"),
                      partitioner=partitioning.PjitPartitioner(
                          logical_axis_rules=partitioning.data_parallel_logical_axis_rules()),
                      log_every=5)
  finally:
    demo.register()  # back to the default location
  # 15 steps x 16 = 240 examples > 180 good ones: every corrupt image was met at least once.
  assert rows[0]["bad_records"]["bad_image"] >= corrupted
  logged = [json.loads(line) for line in
            (tmp_path / "run" / "pretrain" / "train_metrics.jsonl").read_text().splitlines()]
  assert logged[-1]["bad_records/bad_image"] >= corrupted
  assert logged[-1]["loss"] == logged[-1]["loss"]  # finite: training went on
