"""Host data throughput: clipa_t5x's TF pipeline vs an open_clip-style reference.

Measures images per second per CPU core for "read webdataset tar -> decode
JPEG -> Inception (random-resized) crop -> resize to S x S -> uint8" at several
output sides S, on the same synthetic ~500 px JPEGs, for two pipelines:

* **ours**: ``WebDatasetSource`` (TF-native tar reading) +
  ``train_image_preprocessor(colour_jitter=False)``, i.e. the training path:
  DCT-scaled JPEG decode where the crop allows it, stateless
  ``sample_distorted_bounding_box`` crop, bilinear antialiased resize.
* **reference**: what open_clip does per DataLoader worker: ``webdataset``
  reading, PIL full-size decode (webdataset's ``"pil"`` decoder), torchvision's
  ``RandomResizedCrop`` sampling (written out here, no torch needed), PIL crop
  + bilinear resize, ``np.asarray``.

Both run on one thread (TF's intra/inter-op pools and tf.data's private pool
are set to ``--threads``, default 1; the reference runs in this process's
main thread) and are timed alternately, ours, ref, ours, ref, ..., so load
from other processes hits both alike; the median of the repetitions is
reported. "Per core" is images / process CPU seconds, which counts every
thread TF may start and is not inflated by time the scheduler gave to other
processes; wall-clock images/s are printed too.

Usage::

  python bench/data_throughput.py [--images N] [--sizes 64,84,112,224]
                                  [--threads 1] [--repeats 5]

Needs the ``bench`` extra: ``pip install webdataset==1.0.2``.
"""

import argparse
import io
import math
import os
import random
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import (Callable, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Tuple)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

# Source sizes (width, height) of the synthetic photos: the 500x375 .. 640x480
# range of typical ~500 px web images, landscape and portrait.
SOURCE_SIZES = ((500, 375), (512, 384), (600, 450), (640, 480), (375, 500),
                (480, 640), (500, 500))
JPEG_QUALITY = 90
CROP_AREA = (0.4, 1.0)  # CLIPA's crop scale
CROP_ASPECT = (3 / 4, 4 / 3)
DEFAULT_SIZES = (64, 84, 112, 224)


# ------------------------------------------------------------------ data ---
def synthetic_photo(rng: np.random.Generator, width: int,
                    height: int) -> np.ndarray:
  """A deterministic, photo-like ``uint8 [height, width, 3]`` image.

  Gradient sky, low-frequency "cloud" texture, random filled shapes and lines,
  a slight blur and sensor-like grain: enough mixed frequencies that a JPEG of
  it costs about as much to entropy-decode as a real photo of that size.

  Args:
    rng: the image's own generator.
    width: image width in pixels.
    height: image height in pixels.

  Returns:
    The image.
  """
  # Linear gradient between two colours along a random direction.
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  angle = rng.uniform(0, 2 * np.pi)
  t = x * np.cos(angle) + y * np.sin(angle)
  t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
  a, b = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
  img = a + (b - a) * t[..., None]
  # Multi-octave value noise (upsampled random grids) for organic texture.
  for cells, amp in ((4, 40.0), (16, 20.0), (64, 10.0)):
    grid = rng.uniform(-1, 1, size=(cells, cells, 3)).astype(np.float32)
    grid_img = Image.fromarray(((grid + 1) * 127.5).astype(np.uint8))
    up = np.asarray(grid_img.resize((width, height), Image.BICUBIC),
                    np.float32) / 127.5 - 1
    img += amp * up
  image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for _ in range(int(rng.integers(8, 20))):
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    r = rng.uniform(0.03, 0.25) * min(width, height)
    kind = rng.integers(3)
    if kind == 0:
      draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r,
                    cy + r * rng.uniform(0.5, 1.5)], fill=colour)
    elif kind == 1:
      n = int(rng.integers(3, 8))
      pts = [(cx + r * math.cos(2 * math.pi * k / n + rng.uniform(-.3, .3)),
              cy + r * math.sin(2 * math.pi * k / n + rng.uniform(-.3, .3)))
             for k in range(n)]
      draw.polygon(pts, fill=colour)
    else:
      x2, y2 = rng.uniform(0, width), rng.uniform(0, height)
      draw.line([cx, cy, x2, y2], fill=colour, width=int(rng.integers(1, 8)))
  image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
  grain = rng.normal(0, 5.0, size=(height, width, 1)).astype(np.float32)
  out = np.asarray(image, np.float32) + grain
  return np.clip(out, 0, 255).astype(np.uint8)


def write_shards(out_dir: str, num_images: int, images_per_shard: int = 128,
                 seed: int = 0) -> Tuple[List[str], Dict[str, float]]:
  """Writes ``num_images`` synthetic JPEGs as webdataset tar shards.

  Each sample is ``KEY.jpg`` + ``KEY.txt`` (img2dataset's layout, 9-digit
  keys). The same arguments give byte-identical files.

  Args:
    out_dir: an existing directory.
    num_images: number of images in total.
    images_per_shard: images per ``shard-XXXXX.tar``.
    seed: the data seed.

  Returns:
    ``(paths, stats)``: the sorted shard paths and ``stats`` with the mean
    JPEG size in KiB (``mean_kib``) and mean pixel count (``mean_mpix``).
  """
  if num_images < 1 or images_per_shard < 1:
    raise ValueError(f"num_images={num_images} and images_per_shard="
                     f"{images_per_shard} must both be >= 1.")
  from clipa_t5x.data.shard_writer import ShardWriter  # pylint: disable=import-outside-toplevel
  sizes, pixels = [], []
  with ShardWriter(out_dir, images_per_shard, prefix="shard-", key_digits=4, mtime=0) as writer:
    for i in range(num_images):
      rng = np.random.default_rng((seed, i))
      w, h = SOURCE_SIZES[int(rng.integers(len(SOURCE_SIZES)))]
      buf = io.BytesIO()
      Image.fromarray(synthetic_photo(rng, w, h)).save(
          buf, format="JPEG", quality=JPEG_QUALITY)
      writer.write({"jpg": buf.getvalue(), "txt": f"a synthetic photo {i}".encode()})
      sizes.append(len(buf.getvalue()))
      pixels.append(w * h)
  paths = writer.shards
  stats = {"mean_kib": float(np.mean(sizes)) / 1024,
           "mean_mpix": float(np.mean(pixels)) / 1e6}
  return paths, stats


# -------------------------------------------------------------- threads ---
def configure_tf_threads(threads: int) -> None:
  """Pins TF's intra- and inter-op thread pools to ``threads`` threads.

  Must run before TF executes its first op; afterwards the pools are fixed,
  and a differing setting raises.

  Args:
    threads: threads per pool (>= 1).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if threads < 1:
    raise ValueError(f"threads must be >= 1, got {threads}.")
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError as e:  # TF already initialised in this process.
    now = (tf.config.threading.get_intra_op_parallelism_threads(),
           tf.config.threading.get_inter_op_parallelism_threads())
    if now != (threads, threads):
      raise ValueError(
          f"TF is already initialised with (intra, inter) = {now} threads, "
          f"not {threads}; call configure_tf_threads before any TF op (run "
          "the benchmark in a fresh process).") from e


# ------------------------------------------------------------ pipelines ---
def _single_threaded(dataset, threads: int):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  return dataset.with_options(options)


def ours_dataset(files: Sequence[str], size: int, batch_size: int,
                 threads: int = 1, seed: int = 0, repeat: bool = False):
  """clipa_t5x's training image path as a ``tf.data.Dataset`` of uint8 batches.

  Args:
    files: webdataset tar shards.
    size: output side S.
    batch_size: images per batch (the last may be smaller).
    threads: size of tf.data's private thread pool.
    seed: augmentation seed.
    repeat: loop over the files forever (as training does).

  Returns:
    A dataset of ``uint8 [B, S, S, 3]``.
  """
  from clipa_t5x.data import image_ops, sources  # pylint: disable=import-outside-toplevel
  source = sources.WebDatasetSource({"train": list(files)}, label_key=None)
  ds = source.get_dataset("train", shuffle=False)
  if repeat:
    ds = ds.repeat()
  ds = image_ops.train_image_preprocessor(
      ds, {"image": size}, colour_jitter=False, seed=seed,
      area_range=CROP_AREA, aspect_ratio_range=CROP_ASPECT)
  ds = ds.map(lambda ex: ex["image"]).batch(batch_size)
  return _single_threaded(ds, threads)


def iterate_ours(dataset) -> Iterator[np.ndarray]:
  """Yields the numpy batches of an ``ours_dataset`` (a fresh iterator)."""
  yield from dataset.as_numpy_iterator()


def random_resized_crop_box(rng: random.Random, width: int, height: int,
                            scale: Tuple[float, float] = CROP_AREA,
                            ratio: Tuple[float, float] = CROP_ASPECT
                            ) -> Tuple[int, int, int, int]:
  """torchvision ``RandomResizedCrop.get_params``, written out in Python.

  Args:
    rng: random source.
    width: image width.
    height: image height.
    scale: range of the crop's fraction of the image area.
    ratio: range of the crop's width / height.

  Returns:
    ``(left, top, crop_width, crop_height)``.
  """
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return rng.randint(0, width - w), rng.randint(0, height - h), w, h
  # Fallback: the largest central crop with the aspect clamped to ``ratio``.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def reference_transform(image: Image.Image, size: int,
                        rng: random.Random) -> np.ndarray:
  """torchvision-style ``RandomResizedCrop(size, scale=(0.4, 1))`` on PIL.

  Crop, then bilinear resize (PIL antialiases when it shrinks), as
  ``torchvision.transforms.functional.resized_crop`` does for PIL images.

  Args:
    image: decoded RGB image.
    size: output side S.
    rng: random source for the crop.

  Returns:
    ``uint8 [S, S, 3]``.
  """
  left, top, w, h = random_resized_crop_box(rng, *image.size)
  crop = image.crop((left, top, left + w, top + h))
  return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _batches(items: Iterable, batch_size: int,
             collate: Callable[[list], object]) -> Iterator:
  batch = []
  for item in items:
    batch.append(item)
    if len(batch) == batch_size:
      yield collate(batch)
      batch = []
  if batch:
    yield collate(batch)


def _webdataset(files: Sequence[str], repeat: bool, decode: bool
                ) -> Iterator:
  """webdataset's samples as ``(jpg,)`` tuples, PIL-decoded if ``decode``."""
  import webdataset as wds  # pylint: disable=import-outside-toplevel
  while True:
    ds = wds.WebDataset(list(files), shardshuffle=False)
    if decode:
      ds = ds.decode("pil")
    yield from ds.to_tuple("jpg")
    if not repeat:
      return


def iterate_reference(files: Sequence[str], size: int, batch_size: int,
                      seed: int = 0, repeat: bool = False
                      ) -> Iterator[np.ndarray]:
  """open_clip's per-worker path: webdataset + PIL decode + RRC, batched.

  Args:
    files: webdataset tar shards.
    size: output side S.
    batch_size: images per batch (the last may be smaller).
    seed: crop seed.
    repeat: loop over the files forever.

  Yields:
    ``uint8 [B, S, S, 3]`` batches.
  """
  rng = random.Random(seed)
  samples = _webdataset(files, repeat, decode=True)
  images = (reference_transform(image, size, rng) for (image,) in samples)
  yield from _batches(images, batch_size, np.stack)


def ours_read_only(files: Sequence[str], batch_size: int, threads: int = 1,
                   repeat: bool = False):
  """Ours without decoding: ``WebDatasetSource``'s JPEG bytes, batched.

  Returns:
    A dataset of ``[B]`` tf.string batches.
  """
  from clipa_t5x.data import sources  # pylint: disable=import-outside-toplevel
  source = sources.WebDatasetSource({"train": list(files)}, label_key=None)
  ds = source.get_dataset("train", shuffle=False)
  if repeat:
    ds = ds.repeat()
  ds = ds.map(lambda ex: ex["image"]).batch(batch_size)
  return _single_threaded(ds, threads)


def reference_read_only(files: Sequence[str], batch_size: int,
                        repeat: bool = False) -> Iterator[List[bytes]]:
  """The reference without decoding: webdataset's JPEG bytes, batched."""
  samples = _webdataset(files, repeat, decode=False)
  yield from _batches((data for (data,) in samples), batch_size, list)


# --------------------------------------------------------------- timing ---
@dataclass
class Timing:
  """One timed pass: images seen, wall and process-CPU seconds."""
  images: int
  wall_s: float
  cpu_s: float


def time_pass(batches: Iterator, num_batches: int,
              size: Optional[int]) -> Timing:
  """Takes ``num_batches`` batches from a running iterator and times it.

  Timing a long-lived iterator measures steady-state throughput, as in
  training, without the one-off cost of starting a tf.data iterator.

  Args:
    batches: iterator of uint8 ``[B, S, S, 3]`` batches (or, with
      ``size=None``, of any batches with a length).
    num_batches: batches to take.
    size: the expected S (each batch is checked), or None for no check.

  Returns:
    The pass's ``Timing``.
  """
  images = 0
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    batch = next(batches)
    if size is not None and (batch.dtype != np.uint8 or
                             batch.shape[1:] != (size, size, 3)):
      raise ValueError(f"Expected uint8 [B, {size}, {size}, 3] batches, got "
                       f"{batch.dtype} {batch.shape}.")
    images += len(batch)
  return Timing(images, time.perf_counter() - wall,
                time.process_time() - cpu)


def alternate(ours: Iterator, ref: Iterator, num_batches: int, repeats: int,
              size: Optional[int]) -> Tuple[List[Timing], List[Timing]]:
  """One untimed warm-up pass each, then ``repeats`` rounds of (ours, ref).

  Args:
    ours: running iterator of our batches.
    ref: running iterator of the reference's batches.
    num_batches: batches per pass.
    repeats: timed rounds.
    size: the expected S, or None.

  Returns:
    ``(ours_timings, ref_timings)``.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}.")
  time_pass(ours, num_batches, size)
  time_pass(ref, num_batches, size)
  ours_t, ref_t = [], []
  for _ in range(repeats):
    ours_t.append(time_pass(ours, num_batches, size))
    ref_t.append(time_pass(ref, num_batches, size))
  return ours_t, ref_t


@dataclass
class Result:
  """Medians over the repetitions for one output side."""
  size: int
  ours_per_core: float   # images / CPU second
  ref_per_core: float
  ours_wall: float       # images / wall second
  ref_wall: float
  ours_cores: float      # CPU seconds / wall second while running
  ref_cores: float
  dct_scales: str        # our JPEG decode scale(s) at this size

  @property
  def ratio(self) -> float:
    return self.ours_per_core / self.ref_per_core


def dct_scales(shapes: Sequence[Tuple[int, int]], size: int,
               crops_per_image: int = 8) -> str:
  """How often ours decodes at each DCT scale at ``size``, e.g. ``'1/2 80%, 1/4 20%'``.

  Mirrors ``image_ops.jpeg_inception_crop``: per crop (drawn as training does),
  the largest of 1/1, 1/2, 1/4, 1/8 at which the crop keeps >= ``size``
  pixels on both sides.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  counts = {1: 0, 2: 0, 4: 0, 8: 0}
  for i, (w, h) in enumerate(shapes):
    for j in range(crops_per_image):
      _, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
          [h, w, 3], tf.zeros([1, 0, 4]), seed=[i, j], min_object_covered=0.0,
          area_range=CROP_AREA, aspect_ratio_range=CROP_ASPECT, max_attempts=10,
          use_image_if_no_bounding_boxes=True)
      ch, cw = (int(v) for v in crop.numpy()[:2])
      counts[max(r for r in counts if r == 1 or min(ch, cw) // r >= size)] += 1
  total = sum(counts.values())
  return ", ".join(f"1/{r} {100 * n / total:.0f}%" for r, n in counts.items() if n)


def _median_rate(timings: List[Timing], attr: str) -> float:
  return statistics.median(t.images / max(getattr(t, attr), 1e-9)
                           for t in timings)


def _median_cores(timings: List[Timing]) -> float:
  return statistics.median(t.cpu_s / max(t.wall_s, 1e-9) for t in timings)


def benchmark_size(files: Sequence[str], num_images: int, size: int,
                   repeats: int, batch_size: int, threads: int,
                   shapes: Sequence[Tuple[int, int]]) -> Result:
  """Times ours and the reference alternately at one output side.

  Both pipelines loop over the files forever; a pass is
  ``num_images // batch_size`` batches of each (see ``alternate``).

  Args:
    files: webdataset tar shards.
    num_images: images per pass (rounded down to whole batches).
    size: output side S.
    repeats: timed rounds.
    batch_size: images per batch.
    threads: tf.data private pool size.
    shapes: (width, height) of the images, for the DCT-scale column.

  Returns:
    The medians as a ``Result``.
  """
  ours = iterate_ours(ours_dataset(files, size, batch_size, threads,
                                   repeat=True))
  ref = iterate_reference(files, size, batch_size, repeat=True)
  ours_t, ref_t = alternate(ours, ref, max(num_images // batch_size, 1),
                            repeats, size)
  return Result(size=size,
                ours_per_core=_median_rate(ours_t, "cpu_s"),
                ref_per_core=_median_rate(ref_t, "cpu_s"),
                ours_wall=_median_rate(ours_t, "wall_s"),
                ref_wall=_median_rate(ref_t, "wall_s"),
                ours_cores=_median_cores(ours_t),
                ref_cores=_median_cores(ref_t),
                dct_scales=dct_scales(shapes, size))


def benchmark_read_only(files: Sequence[str], num_images: int, repeats: int,
                        batch_size: int, threads: int) -> Tuple[float, float]:
  """Tar reading alone (no decode), timed as in ``benchmark_size``.

  Returns:
    Median ``(ours, reference)`` images per CPU second.
  """
  ours = ours_read_only(files, batch_size, threads,
                        repeat=True).as_numpy_iterator()
  ref = reference_read_only(files, batch_size, repeat=True)
  ours_t, ref_t = alternate(ours, ref, max(num_images // batch_size, 1),
                            repeats, None)
  return _median_rate(ours_t, "cpu_s"), _median_rate(ref_t, "cpu_s")


def image_shapes(files: Sequence[str]) -> List[Tuple[int, int]]:
  """(width, height) of every JPEG in the shards (headers only)."""
  shapes = []
  for path in files:
    with tarfile.open(path) as tar:
      for member in tar:
        if member.name.endswith(".jpg"):
          with Image.open(tar.extractfile(member)) as im:
            shapes.append(im.size)
  return shapes


def run(files: Sequence[str], sizes: Sequence[int], repeats: int = 5,
        batch_size: int = 32, threads: int = 1) -> List[Result]:
  """Benchmarks every output side in ``sizes`` on the shards ``files``.

  Args:
    files: webdataset tar shards of JPEGs.
    sizes: output sides S.
    repeats: timed rounds per side.
    batch_size: images per batch.
    threads: TF/tf.data threads for ours.

  Returns:
    One ``Result`` per size, in order.
  """
  if not sizes or any(s < 1 for s in sizes):
    raise ValueError(f"sizes must be positive ints, got {list(sizes)}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  shapes = image_shapes(files)
  return [benchmark_size(files, len(shapes), s, repeats, batch_size, threads,
                         shapes) for s in sizes]


def format_table(results: Sequence[Result]) -> str:
  """The results as a fixed-width text table (one row per size)."""
  head = (f"{'size':>5} {'ours img/s/core':>16} {'ref img/s/core':>15} "
          f"{'ratio':>6} | {'ours img/s':>10} {'ref img/s':>9} "
          f"{'ours cores':>10} {'ref cores':>9} {'our DCT scale':>13}")
  rows = [head, "-" * len(head)]
  for r in results:
    rows.append(
        f"{r.size:>5} {r.ours_per_core:>16.1f} {r.ref_per_core:>15.1f} "
        f"{r.ratio:>5.2f}x | {r.ours_wall:>10.1f} {r.ref_wall:>9.1f} "
        f"{r.ours_cores:>10.2f} {r.ref_cores:>9.2f} {r.dct_scales:>13}")
  return "\n".join(rows)


def _parse_sizes(text: str) -> List[int]:
  try:
    sizes = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    sizes = []
  if not sizes or any(s < 1 for s in sizes):
    raise argparse.ArgumentTypeError(
        f"--sizes must be comma-separated positive ints, e.g. 64,84, got "
        f"{text!r}.")
  return sizes


def main(argv: Optional[Sequence[str]] = None) -> List[Result]:
  """Command line entry point; prints the table and returns the results."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=512,
                      help="synthetic JPEGs to generate (default 512)")
  parser.add_argument("--sizes", type=_parse_sizes,
                      default=list(DEFAULT_SIZES),
                      help="output sides, comma-separated (default "
                      "64,84,112,224)")
  parser.add_argument("--threads", type=int, default=1,
                      help="TF intra/inter-op and tf.data threads for ours "
                      "(default 1); the reference always uses one thread")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed (ours, reference) rounds per size")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--images_per_shard", type=int, default=128)
  parser.add_argument("--no_read_only", action="store_true",
                      help="skip the tar-reading-only comparison row")
  args = parser.parse_args(argv)
  if args.images < 1 or args.threads < 1 or args.repeats < 1:
    parser.error("--images, --threads and --repeats must be >= 1.")
  configure_tf_threads(args.threads)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import webdataset  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory(prefix="clipa_bench_") as tmp:
    start = time.perf_counter()
    files, stats = write_shards(tmp, args.images, args.images_per_shard)
    print(f"data: {args.images} JPEGs (q{JPEG_QUALITY}, mean "
          f"{stats['mean_mpix']:.3f} Mpix, {stats['mean_kib']:.1f} KiB) in "
          f"{len(files)} shards, written in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"ours: TF {tf.__version__}, threads={args.threads}; reference: "
          f"webdataset {webdataset.__version__} + Pillow "
          f"{Image.__version__}, 1 thread; batch {args.batch_size}, "
          f"median of {args.repeats} alternating rounds of "
          f"{args.images // args.batch_size} batches from long-lived "
          f"iterators; per core = images / process CPU s")
    sys.stdout.flush()
    results = run(files, args.sizes, args.repeats, args.batch_size,
                  args.threads)
    print(format_table(results))
    if not args.no_read_only:
      ours, ref = benchmark_read_only(files, args.images, args.repeats,
                                      args.batch_size, args.threads)
      print(f"tar reading only (no decode): ours {ours:.1f}, reference "
            f"{ref:.1f} img/s/core ({ours / ref:.2f}x)")
  return results


if __name__ == "__main__":
  main()
