"""End to end: training over shards with 10% corrupt records finishes and reports the count."""

import io
import json
import os
import re
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


def _shard_with_non_image_members(path: str, n: int = 40) -> int:
  """A webdataset shard where every 8th ``.jpg`` holds text (as a crawl's error pages do)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng, bad = np.random.default_rng(0), 0
  with tarfile.open(path, "w") as tar:
    for i in range(n):
      if i % 8 == 3:
        image, bad = b"<html>404 not found</html>", bad + 1
      else:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
        image = buffer.getvalue()
      for name, data in ((f"{i:09d}.jpg", image), (f"{i:09d}.txt", f"photo {i}".encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  return bad


@pytest.mark.slow
def test_bad_records_are_counted_not_logged_one_by_one(tmp_path):
  """TF's per-record warning (three lines per bad image) stays off the console; the run's
  own counter line is printed."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  os.makedirs(tmp_path / "shards")
  assert _shard_with_non_image_members(str(tmp_path / "shards" / "00000.tar")) == 5
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # The user's environment: no TF_CPP_MIN_LOG_LEVEL from the test session.
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  proc = subprocess.run(
      [sys.executable, "-m", "clipa_t5x.train", "--gin_file=gin/runs/custom_data.gin",
       "--gin_file=gin/models/mu8.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
       f"--gin.TRAIN_DATA='{tmp_path / 'shards'}/*.tar'", "--gin.PRETRAIN_IMAGE_SIZE=32",
       "--gin.PRETRAIN_BATCH_SIZE=8", "--gin.PRETRAIN_STEPS=4",
       "--gin.PRETRAIN_WARMUP_STEPS=1", "--gin.STAGES=[@pretrain/runner.Stage()]"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "ignore_errors_dataset_op" not in proc.stderr, proc.stderr[-3000:]
  assert "Unknown image file format" not in proc.stderr, proc.stderr[-3000:]
  assert re.search(r"\[pretrain\] the input pipeline skipped \d+ bad records so far: "
                   r"bad_image \d+", proc.stdout), proc.stdout
