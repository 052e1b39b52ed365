"""Smoke test of bench/data_throughput.py on a few tiny images."""
import importlib.util
import os
import random
import re
import tarfile

import numpy as np
import pytest

pytest.importorskip("webdataset")

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "bench",
                     "data_throughput.py")


@pytest.fixture(scope="module")
def dt():
  spec = importlib.util.spec_from_file_location("data_throughput", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def shards(dt, tmp_path_factory):
  out = tmp_path_factory.mktemp("shards")
  return dt.write_shards(str(out), num_images=5, images_per_shard=3, seed=1)


def test_write_shards_is_deterministic_webdataset(dt, shards, tmp_path):
  files, stats = shards
  assert [os.path.basename(f) for f in files] == ["shard-00000.tar",
                                                   "shard-00001.tar"]
  with tarfile.open(files[0]) as tar:
    names = tar.getnames()
  assert names == ["000000000.jpg", "000000000.txt", "000000001.jpg",
                   "000000001.txt", "000000002.jpg", "000000002.txt"]
  again, _ = dt.write_shards(str(tmp_path), 5, 3, seed=1)
  for a, b in zip(files, again):
    with open(a, "rb") as fa, open(b, "rb") as fb:
      assert fa.read() == fb.read()
  lo = min(w * h for w, h in dt.SOURCE_SIZES) / 1e6
  hi = max(w * h for w, h in dt.SOURCE_SIZES) / 1e6
  assert lo <= stats["mean_mpix"] <= hi
  assert stats["mean_kib"] > 10  # Textured content, not a flat colour.


def test_random_resized_crop_box_matches_torchvision_rules(dt):
  rng = random.Random(0)
  for w, h in [(500, 375), (480, 640), (10, 400)]:
    for _ in range(50):
      left, top, cw, ch = dt.random_resized_crop_box(rng, w, h)
      assert 0 <= left and left + cw <= w and 0 <= top and top + ch <= h
      if (w, h) != (10, 400):  # Crops within the scale range fit here.
        assert 0.4 * w * h * 0.97 <= cw * ch <= w * h
  # A 10x400 image never fits the aspect range: central fallback crop.
  # Aspect clamped to 3/4: 10 x round(10 / 0.75) = 10 x 13, centred.
  assert dt.random_resized_crop_box(random.Random(0), 10, 400) == (
      0, 193, 10, 13)


def test_pipelines_agree_on_format_and_content(dt, shards):
  files, _ = shards
  ref = list(dt.iterate_reference(files, 24, batch_size=2))
  ours = list(dt.iterate_ours(dt.ours_dataset(files, 24, batch_size=2)))
  for batches in (ref, ours):
    assert [b.shape for b in batches] == [(2, 24, 24, 3)] * 2 + [(1, 24, 24,
                                                                    3)]
    assert all(b.dtype == np.uint8 for b in batches)
  # The same images (ours interleaves the files, so the order differs):
  # each of our crops matches a distinct reference crop of the same image by
  # mean colour (both crops cover >= 40 % of it).
  ref_mean = np.concatenate(ref).mean(axis=(1, 2))
  ours_mean = np.concatenate(ours).mean(axis=(1, 2))
  dist = np.abs(ours_mean[:, None] - ref_mean[None]).mean(-1)
  assert sorted(dist.argmin(1)) == list(range(5))
  assert dist.min(1).max() < 25


def test_run_and_table_format(dt, shards):
  files, _ = shards
  results = dt.run(files, sizes=[16, 32], repeats=1, batch_size=4)
  assert [r.size for r in results] == [16, 32]
  for r in results:
    assert r.ours_per_core > 0 and r.ref_per_core > 0
    assert r.ratio == pytest.approx(r.ours_per_core / r.ref_per_core)
    assert re.fullmatch(r"1/[1248] \d+%(, 1/[1248] \d+%)*", r.dct_scales)
  lines = dt.format_table(results).splitlines()
  assert lines[0].split()[:4] == ["size", "ours", "img/s/core", "ref"]
  assert set(lines[1]) == {"-"}
  assert [line.split()[0] for line in lines[2:]] == ["16", "32"]
  assert all(line.split()[3].endswith("x") for line in lines[2:])
  ours, ref = dt.benchmark_read_only(files, num_images=5, repeats=1,
                                     batch_size=4, threads=1)
  assert ours > 0 and ref > 0


def test_dct_scales(dt):
  # A crop decodes at 1/r when both its sides are >= r * size.
  assert dt.dct_scales([(500, 375)], 224) == "1/1 100%"     # 1/2 needs >= 448 px
  assert dt.dct_scales([(4000, 3000)], 84) == "1/8 100%"
  mixed = dt.dct_scales([(500, 375), (640, 480)], 84)
  scales = dict(part.split() for part in mixed.split(", "))
  assert set(scales) == {"1/2", "1/4"}                       # 1/4 needs >= 336 px
  assert abs(sum(int(v[:-1]) for v in scales.values()) - 100) <= 1


def test_time_pass_counts_images_from_a_running_iterator(dt, shards):
  files, _ = shards
  # Repeating: 3 batches of 2 from 5 images wrap around into the second pass.
  ref = dt.iterate_reference(files, 16, batch_size=2, repeat=True)
  timing = dt.time_pass(ref, num_batches=3, size=16)
  assert timing.images == 6 and timing.wall_s > 0 and timing.cpu_s > 0
  with pytest.raises(ValueError, match="Expected uint8"):
    dt.time_pass(ref, num_batches=1, size=17)


def test_bad_arguments_raise(dt, shards):
  files, _ = shards
  with pytest.raises(ValueError, match="sizes"):
    dt.run(files, sizes=[])
  with pytest.raises(ValueError, match="num_images"):
    dt.write_shards("/nonexistent", 0)
  with pytest.raises(SystemExit):
    dt.main(["--sizes", "84,abc"])
