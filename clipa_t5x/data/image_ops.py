"""Image decoding and augmentation as pure TensorFlow ops, plus SeqIO preprocessors.

Images stay ``uint8`` on the host: the preprocessors here end with a uint8
``[S, S, 3]`` tensor (S = ``sequence_length['image']``); normalisation with the
ImageNet mean/std happens on device inside the model.

CLIPA's image-token reduction is *resizing*: the training crop is resized
straight to the (small) pretraining resolution, e.g. 70 or 84 px, so changing
the resolution of a stage is a change of ``TASK_FEATURE_LENGTHS['image']``.

Determinism: every random op is a stateless ``tf.random``/``tf.image`` op fed
an explicit seed. The preprocessors get one seed per example from SeqIO's
``map_over_dataset(num_seeds=1)``, which zips the data with
``tf.data.Dataset.random(seed)``: when the Task is read with a seed
(``seqio.get_dataset(..., seed=s)``) that stream, hence every crop and jitter,
is a pure function of ``s``, the preprocessor's position in the Task and the
example's position in the stream; the stream keeps running across epochs, so
each epoch sees new augmentations. Passing ``seed=`` to a preprocessor fixes
its stream independently of the Task seed; with neither, augmentation is
random.
"""

import functools
import math
from typing import Mapping, Optional, Tuple

import seqio
import tensorflow as tf

from clipa_t5x.data import bad_records

_JPEG_RATIOS = (1, 2, 4, 8)  # The DCT scale factors libjpeg supports.

# Images with more pixels are skipped before decoding (a 50 MP RGB image is
# 150 MB decoded; decompression bombs are far larger).
MAX_IMAGE_PIXELS = 50_000_000
_INDEX_KEY = "_bad_records_index"  # internal features of the skipping maps
_OK_KEY = "_bad_records_ok"
_END_KEY = "_bad_records_end"


def _le(b: tf.Tensor, pos: int, width: int) -> tf.Tensor:
  return sum(b[pos + i] * (256 ** i) for i in range(width))


def _be(b: tf.Tensor, pos: int, width: int) -> tf.Tensor:
  return sum(b[pos + i] * (256 ** (width - 1 - i)) for i in range(width))


def encoded_image_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
  """Pixel count (H*W) of an encoded image, read from its header only.

  JPEG via ``tf.io.extract_jpeg_shape`` (which fails on a JPEG whose header
  is cut); PNG from IHDR; GIF from the logical screen; BMP from the info
  header; WebP from its VP8X, VP8 or VP8L header. Nothing is decoded.

  Args:
    image_bytes: scalar ``tf.string``.

  Returns:
    int64 scalar, -1 when the format is not recognised (decoding decides).
  """
  def jpeg():
    shape = tf.cast(tf.io.extract_jpeg_shape(image_bytes), tf.int64)
    return shape[0] * shape[1]

  # Built inside the cond's branch so that JPEGs (nearly all of a web crawl)
  # skip these ~100 scalar TF ops (~0.15 ms per example, measured).
  return tf.cond(tf.io.is_jpeg(image_bytes), jpeg,
                 lambda: _header_pixels_not_jpeg(image_bytes))


def _header_pixels_not_jpeg(image_bytes: tf.Tensor) -> tf.Tensor:
  """``encoded_image_pixels`` for PNG, GIF, BMP and WebP; -1 for others."""
  head = tf.strings.substr(tf.strings.join([image_bytes, "\0" * 32]), 0, 32)
  b = tf.unstack(tf.cast(tf.io.decode_raw(head, tf.uint8, fixed_length=32),
                         tf.int64))
  # Compared on the zero-padded head: substr past the end of short input
  # would fail.
  start = lambda magic, pos=0: tf.equal(
      tf.strings.substr(head, pos, len(magic)), magic)
  png = _be(b, 16, 4) * _be(b, 20, 4)
  gif = _le(b, 6, 2) * _le(b, 8, 2)
  signed = lambda v: tf.where(v >= 2 ** 31, 2 ** 32 - v, v)  # |int32|
  bmp = signed(_le(b, 18, 4)) * signed(_le(b, 22, 4))
  vp8x = (_le(b, 24, 3) + 1) * (_le(b, 27, 3) + 1)
  vp8 = (_le(b, 26, 2) % 16384) * (_le(b, 28, 2) % 16384)
  bits = _le(b, 21, 4)
  vp8l = (bits % 16384 + 1) * (bits // 16384 % 16384 + 1)
  webp = start("RIFF") & start("WEBP", 8)
  other = tf.where(
      start(b"\x89PNG\r\n\x1a\n"), png, tf.where(
          start("GIF8"), gif, tf.where(
              start("BM"), bmp, tf.where(
                  webp & start("VP8X", 12), vp8x, tf.where(
                      webp & start("VP8 ", 12), vp8, tf.where(
                          webp & start("VP8L", 12), vp8l,
                          tf.constant(-1, tf.int64)))))))
  return other


def _check_seed(seed) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64):
    seed = tf.cast(seed, tf.int64)
  if seed.shape.rank is not None and seed.shape != [2]:
    raise ValueError(f"A stateless seed must have shape [2], got {seed.shape}; "
                     "pass e.g. tf.constant([1, 2]).")
  return seed


def _decode_any(image_bytes: tf.Tensor) -> tf.Tensor:
  # expand_animations=False gives the first frame of a GIF as a 3-D tensor.
  return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def _dct_scale(short_side: tf.Tensor, min_side) -> tf.Tensor:
  """Index in ``_JPEG_RATIOS`` of the largest DCT downscale keeping ``min_side``.

  Ratio r decodes to ceil(side / r); the floor keeps a safety margin. 0 (full
  size) when no ratio keeps it. Shared by the eval decode and the training crop.
  """
  ok = tf.math.floordiv(short_side, tf.constant(_JPEG_RATIOS)) >= min_side
  return tf.reduce_max(tf.where(ok, tf.range(len(_JPEG_RATIOS)), 0))


def _decode_jpeg_scaled(image_bytes: tf.Tensor, min_side: int) -> tf.Tensor:
  """Decodes a JPEG with the largest DCT downscale keeping ``min_side``."""
  shape = tf.io.extract_jpeg_shape(image_bytes)
  branches = [
      functools.partial(tf.io.decode_jpeg, image_bytes, channels=3, ratio=r)
      for r in _JPEG_RATIOS
  ]
  return tf.switch_case(_dct_scale(tf.minimum(shape[0], shape[1]), min_side), branches)


def decode_image(image_bytes: tf.Tensor,
                 target_size: Optional[int] = None) -> tf.Tensor:
  """Decodes encoded image bytes to a ``uint8 [H, W, 3]`` tensor.

  JPEG fast path: when ``target_size`` is given and the image's shorter side
  is at least 2, 4 or 8 times ``target_size``, the JPEG is decoded directly at
  1/2, 1/4 or 1/8 of its size (libjpeg DCT-domain scaling: a decode that
  skips most of the inverse DCT work). The shorter side of the result stays
  ``>= target_size``, so a later resize to ``target_size`` only ever
  downsamples. PNG, GIF (first frame), BMP and WebP go through
  ``tf.io.decode_image``. Every output is RGB (grey and CMYK converted).

  Args:
    image_bytes: scalar ``tf.string`` with the encoded image.
    target_size: the shorter side the decoded image must keep, or None for a
      full-size decode.

  Returns:
    ``uint8 [H, W, 3]``.
  """
  if target_size is not None and target_size < 1:
    raise ValueError(f"target_size must be a positive int or None, got "
                     f"{target_size}.")
  if target_size is None:
    image = _decode_any(image_bytes)
  else:
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: _decode_jpeg_scaled(image_bytes, int(target_size)),
        lambda: _decode_any(image_bytes))
  image.set_shape([None, None, 3])
  return image


def eval_resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Square resize to ``size x size`` with no crop (CLIPA's eval transform).

  Bilinear and antialiased; the training crops are resized with it too.

  Args:
    image: ``[H, W, 3]`` image (uint8 stays uint8, rounded and clipped).
    size: output side in pixels.

  Returns:
    ``[size, size, 3]`` of the input dtype.
  """
  resized = tf.image.resize(image, [size, size], method="bilinear",
                            antialias=True)
  if image.dtype == tf.uint8:
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  return tf.cast(resized, image.dtype)


def min_side_for_crop(size: int, area_range: Tuple[float, float],
                      aspect_ratio_range: Tuple[float, float]) -> int:
  """Shorter side an image needs so every inception crop is >= ``size``.

  A crop covers area a*H*W with aspect w/h = r, so its shorter side is
  sqrt(a*H*W*min(r, 1/r)) >= short_side * sqrt(a_min * min(r_min, 1/r_max)).
  Decoding the JPEG with a DCT ratio that keeps ``short_side`` at or above the
  returned value therefore never makes the crop smaller than the final
  ``size``: the resize after the crop only downsamples (1.83 x size for
  CLIPA's area 0.4-1 and aspect 3/4-4/3).

  Args:
    size: final crop side in pixels.
    area_range: (min, max) fraction of the image area the crop covers.
    aspect_ratio_range: (min, max) crop width / height.

  Returns:
    The minimum shorter side, in pixels.
  """
  a_min = area_range[0]
  r = min(aspect_ratio_range[0], 1.0 / aspect_ratio_range[1])
  return int(math.ceil(size / math.sqrt(a_min * min(r, 1.0))))


def inception_crop(image: tf.Tensor, size: int, seed,
                   area: Tuple[float, float] = (0.4, 1.0),
                   aspect: Tuple[float, float] = (3 / 4, 4 / 3)) -> tf.Tensor:
  """Random-resized ("Inception") crop, resized to ``size x size``.

  Args:
    image: ``[H, W, 3]`` image.
    size: output side in pixels.
    seed: stateless seed, int ``[2]``.
    area: range of the crop's fraction of the image area.
    aspect: range of the crop's width / height.

  Returns:
    ``[size, size, 3]`` of the input dtype (uint8 rounded and clipped).
    After 10 failed attempts to fit a crop the whole image is used.
  """
  if not 0 < area[0] <= area[1] <= 1:
    raise ValueError(f"area must satisfy 0 < min <= max <= 1, got {area}.")
  if not 0 < aspect[0] <= aspect[1]:
    raise ValueError(f"aspect must satisfy 0 < min <= max, got {aspect}.")
  begin, crop_size = _sample_crop(tf.shape(image), seed, area, aspect)
  crop = tf.slice(image, tf.concat([begin, [0]], 0),
                  tf.concat([crop_size, [-1]], 0))
  return eval_resize(crop, size)


def _sample_crop(shape: tf.Tensor, seed, area: Tuple[float, float],
                 aspect: Tuple[float, float]) -> Tuple[tf.Tensor, tf.Tensor]:
  """(begin [y, x], size [h, w]) of a random crop of an image of ``shape``."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.zeros([1, 0, 4]),
      seed=_check_seed(seed), min_object_covered=0.0,
      aspect_ratio_range=aspect, area_range=area, max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return begin[:2], crop_size[:2]


def jpeg_inception_crop(image_bytes: tf.Tensor, size: int, seed,
                        area: Tuple[float, float] = (0.4, 1.0),
                        aspect: Tuple[float, float] = (3 / 4, 4 / 3)
                        ) -> tf.Tensor:
  """``inception_crop`` of a JPEG, decoding only what the crop needs.

  The crop is drawn on the full-size shape read from the JPEG header (the
  same distribution as ``inception_crop`` on the decoded image); then the
  JPEG is decoded at the largest DCT scale (1/1, 1/2, 1/4, 1/8) at which the
  crop still has at least ``size`` pixels on both sides -- a choice per
  crop, so large crops of a large image decode at 1/4 -- and only the crop's
  window is decoded (libjpeg stops after the window's last row and skips the
  inverse DCT outside it). The resize never upsamples unless the crop itself
  is smaller than ``size``.

  Args: as ``inception_crop``'s, ``image_bytes`` a scalar ``tf.string`` holding a JPEG.

  Returns:
    ``uint8 [size, size, 3]``.
  """
  shape = tf.io.extract_jpeg_shape(image_bytes)
  begin, crop = _sample_crop(shape, seed, area, aspect)
  index = _dct_scale(tf.minimum(crop[0], crop[1]), size)
  ratio = tf.gather(tf.constant(_JPEG_RATIOS), index)
  # libjpeg's output at scale 1/r is ceil(side / r); keep the window inside.
  scaled = tf.math.floordiv(shape[:2] + ratio - 1, ratio)
  top_left = tf.math.floordiv(begin, ratio)
  extent = tf.maximum(tf.minimum(tf.math.floordiv(crop, ratio),
                                 scaled - top_left), 1)
  window = tf.concat([top_left, extent], axis=0)
  branches = [
      functools.partial(tf.io.decode_and_crop_jpeg, image_bytes, window,
                        channels=3, ratio=r)
      for r in _JPEG_RATIOS
  ]
  image = tf.switch_case(index, branches)
  image.set_shape([None, None, 3])
  return eval_resize(image, size)


def _as_float(image: tf.Tensor) -> tf.Tensor:
  return tf.image.convert_image_dtype(image, tf.float32)


def _as_dtype(image: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  if dtype == tf.uint8:
    return tf.cast(tf.clip_by_value(tf.round(image * 255.0), 0, 255), tf.uint8)
  return tf.image.convert_image_dtype(image, dtype, saturate=True)


def _clipped(op, x: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(op(x), 0.0, 1.0)


def simclr_color_jitter(image: tf.Tensor, seed, strength: float = 0.4,
                        p: float = 0.8, random_order: bool = True,
                        hue_max_delta: Optional[float] = None) -> tf.Tensor:
  """SimCLR colour jitter, applied with probability ``p``.

  Brightness (multiplicative, SimCLR v2 style), contrast and saturation by
  factors in [1 - 0.8*strength, 1 + 0.8*strength], hue shift up to
  0.2*strength; CLIPA uses strength 0.4 in a random order.

  Args:
    image: ``[H, W, 3]`` uint8 or float image in [0, 1].
    seed: stateless seed, int ``[2]``.
    strength: jitter strength s.
    p: probability of jittering at all.
    random_order: apply the four ops in a random order (else the fixed order
      brightness, contrast, saturation, hue).
    hue_max_delta: overrides the hue shift bound 0.2*strength (a fraction of
      the colour wheel, <= 0.5); e.g. small when colour names are labels.

  Returns:
    The jittered image, same shape and dtype.
  """
  hue_delta = 0.2 * strength if hue_max_delta is None else hue_max_delta
  if strength < 0 or not 0 <= hue_delta <= 0.5:
    raise ValueError(f"Need strength >= 0 and a hue shift in [0, 0.5], got "
                     f"strength={strength}, hue_max_delta={hue_delta}.")
  if strength == 0 or p <= 0:
    return image
  dtype = image.dtype
  s = 0.8 * strength
  apply_seed, order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(
      tf.random.experimental.stateless_split(_check_seed(seed), 6))

  def brightness(x):
    factor = tf.random.stateless_uniform([], b_seed, max(0.0, 1 - s), 1 + s)
    return x * factor

  def contrast(x):
    return tf.image.stateless_random_contrast(x, max(0.0, 1 - s), 1 + s,
                                              c_seed)

  def saturation(x):
    return tf.image.stateless_random_saturation(x, max(0.0, 1 - s), 1 + s,
                                                s_seed)

  def hue(x):
    return tf.image.stateless_random_hue(x, hue_delta, h_seed)

  ops = [brightness, contrast, saturation, hue]

  def jitter(x):
    if random_order:
      order = tf.argsort(tf.random.stateless_uniform([len(ops)], order_seed))
      for i in range(len(ops)):
        x = tf.switch_case(order[i],
                           [functools.partial(_clipped, op, x) for op in ops])
    else:
      for op in ops:
        x = _clipped(op, x)
    return x

  x = _as_float(image)
  do = tf.random.stateless_uniform([], apply_seed) < p
  x = tf.cond(do, lambda: jitter(x), lambda: x)
  return _as_dtype(x, dtype)


def random_grayscale(image: tf.Tensor, seed, p: float = 0.2) -> tf.Tensor:
  """Converts to 3-channel greyscale with probability ``p``.

  Args:
    image: ``[H, W, 3]`` image.
    seed: stateless seed, int ``[2]``.
    p: probability of the conversion.

  Returns:
    Same shape and dtype.
  """
  do = tf.random.stateless_uniform([], _check_seed(seed)) < p
  return tf.cond(
      do, lambda: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)),
      lambda: image)


def _image_side(sequence_length: Optional[Mapping[str, int]],
                key: str) -> int:
  if not sequence_length or sequence_length.get(key) is None:
    raise ValueError(f"The image preprocessors take the image side from "
                     f"sequence_length['{key}'] (t5x TASK_FEATURE_LENGTHS), got "
                     f"{sequence_length}; set e.g. {{'{key}': 224, 'text': 32}}.")
  side = sequence_length[key]
  if not isinstance(side, int) or side < 1:
    raise ValueError(f"sequence_length['{key}'] must be a positive int image "
                     f"side, got {side!r}.")
  return side


def _to_image(value: tf.Tensor, min_side: int) -> tf.Tensor:
  """Decodes encoded bytes, or checks an already-decoded uint8 image.

  The one decoder of training, evaluation and inference: bytes go through
  ``decode_image`` (DCT-scaled JPEGs keeping ``min_side``); a uint8
  ``[H, W, 1]`` (greyscale) image becomes RGB.
  """
  if value.dtype == tf.string:
    return decode_image(value, target_size=min_side)
  if value.dtype != tf.uint8 or value.shape.rank != 3:
    raise ValueError(f"'image' must be encoded bytes (tf.string) or a uint8 "
                     f"[H, W, 3] tensor, got {value.dtype.name} of rank "
                     f"{value.shape.rank}.")
  if value.shape[-1] == 1:
    value = tf.image.grayscale_to_rgb(value)
  return value


def decode_resize(value: tf.Tensor, size: int) -> tf.Tensor:
  """The evaluation and inference transform: decode, square-resize, no crop.

  CLIPA's fine-tuning/eval transform ("directly resize works better"): JPEGs
  are decoded at the smallest DCT scale that keeps the shorter side >= size,
  then ``eval_resize``. ``eval_image_preprocessor`` (every evaluation data
  set) and ``image_files.load_image`` (inference) both call this, so their
  features match exactly.

  Args:
    value: scalar ``tf.string`` of encoded bytes, or a uint8 ``[H, W, 3]``
      (or greyscale ``[H, W, 1]``) image.
    size: output side in pixels.

  Returns:
    uint8 ``[size, size, 3]``.
  """
  out = eval_resize(_to_image(value, size), size)
  out.set_shape([size, size, 3])
  return out


# do_not_convert: no Python control flow on tensors here, and autograph's
# source transformation would otherwise cost seconds per pipeline build.
@seqio.map_over_dataset(num_seeds=1)
@tf.autograph.experimental.do_not_convert
def _train_map(ex, seed, *, size: int, key: str, area_range, aspect_ratio_range,
               colour_jitter: bool, jitter_strength: float, jitter_p: float,
               jitter_hue: Optional[float], grayscale_p: float,
               max_pixels: Optional[int]):
  crop_seed, jitter_seed, gray_seed = tf.unstack(
      tf.random.experimental.stateless_split(_check_seed(seed), 3))

  def transform(value):
    if value.dtype == tf.string:
      image = tf.cond(
          tf.io.is_jpeg(value),
          lambda: jpeg_inception_crop(value, size, crop_seed, area_range,
                                      aspect_ratio_range),
          lambda: inception_crop(decode_image(value), size, crop_seed,
                                 area_range, aspect_ratio_range))
    else:
      image = inception_crop(_to_image(value, size), size, crop_seed,
                             area_range, aspect_ratio_range)
    if colour_jitter:
      image = simclr_color_jitter(image, jitter_seed, jitter_strength,
                                  jitter_p, hue_max_delta=jitter_hue)
      image = random_grayscale(image, gray_seed, grayscale_p)
    return image

  return _guarded(ex, key, size, transform, max_pixels)


def _guarded(ex, key: str, size: int, transform, max_pixels: Optional[int]):
  """Applies ``transform`` to ``ex[key]`` under one of two bad-image policies.

  Raise (``max_pixels`` None): an encoded image over ``MAX_IMAGE_PIXELS`` by
  its header fails the pipeline with ``InvalidArgumentError`` before it is
  decoded, as an undecodable one does. Skip (``max_pixels`` set; the example
  then carries the ``_add_index`` features): an encoded image over the limit
  is not decoded: it becomes a zero image, is counted as ``too_large_image``
  and is flagged for ``_drop_bad`` to remove; so is the end-of-data sentinel,
  uncounted.
  """
  value = ex[key]
  out = {k: v for k, v in ex.items() if k != _END_KEY}
  if max_pixels is None:
    checks = []
    if value.dtype == tf.string:
      pixels = encoded_image_pixels(value)
      checks = [tf.debugging.Assert(pixels <= MAX_IMAGE_PIXELS, [
          "image too large (pixels, limit):", pixels, MAX_IMAGE_PIXELS])]
    with tf.control_dependencies(checks):
      image = transform(value)
  else:
    end = ex[_END_KEY]
    too_large = tf.constant(False)
    if value.dtype == tf.string:
      too_large = tf.logical_not(end) & (
          encoded_image_pixels(value) > max_pixels)

    def skip():
      update = bad_records.count("too_large_image", tf.cast(too_large,
                                                            tf.int64))
      with tf.control_dependencies([update]):
        return tf.zeros([size, size, 3], tf.uint8)

    image = tf.cond(end | too_large, skip, lambda: transform(value))
    out[_OK_KEY] = tf.logical_not(end | too_large)
  image.set_shape([size, size, 3])
  out[key] = image
  return out


def _add_index(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Numbers the examples and appends an end sentinel, for ``_drop_bad``.

  The sentinel (zeros/empty strings, flagged by ``_END_KEY``) carries the
  index one past the last example, so failures at the very end show as a
  gap too. Datasets with non-dense features get no sentinel.
  """
  spec = dataset.element_spec
  dense = all(isinstance(s, tf.TensorSpec) for s in spec.values())
  mark = tf.autograph.experimental.do_not_convert(
      lambda ex: {**ex, _END_KEY: tf.constant(False)})
  dataset = dataset.map(mark)
  if dense:
    end = {k: tf.zeros([d if d is not None else 0 for d in s.shape],
                       s.dtype) for k, s in spec.items()}
    end[_END_KEY] = tf.constant(True)
    dataset = dataset.concatenate(tf.data.Dataset.from_tensors(end))
  return dataset.enumerate().map(
      tf.autograph.experimental.do_not_convert(
          lambda i, ex: {**ex, _INDEX_KEY: i}))


def _drop_bad(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Skips failed and flagged examples, counting them in ``bad_records``.

  tf.data cannot catch the error of a single op, so an example whose decode
  fails is dropped by ``ignore_errors`` (a web-scale crawl always holds some
  undecodable images; one must not stop a run). The examples were numbered
  before the map (``_add_index``), so a gap in the numbers after it is the
  count of failures, added to ``bad_image`` by a ``scan``; this assumes the
  map keeps the order (tf.data's default, ``deterministic=True``). The end
  sentinel of ``_add_index`` makes failures at the very end count too.
  """
  # No per-record log: TF's warning (three lines per bad image, 1-5% of a web crawl)
  # would bury the progress lines; the counters and the run's "skipped N bad records"
  # line report them instead.
  dataset = dataset.ignore_errors(log_warning=False)

  @tf.autograph.experimental.do_not_convert
  def step(last, ex):
    index = ex[_INDEX_KEY]
    update = bad_records.count("bad_image",
                               tf.maximum(index - last - 1, 0))
    with tf.control_dependencies([update]):
      ex = {k: tf.identity(v) for k, v in ex.items() if k != _INDEX_KEY}
    return tf.maximum(last, index), ex

  dataset = dataset.scan(tf.constant(-1, tf.int64), step)
  dataset = dataset.filter(lambda ex: ex[_OK_KEY])
  dataset = dataset.map(tf.autograph.experimental.do_not_convert(
      lambda ex: {k: v for k, v in ex.items() if k != _OK_KEY}))
  return dataset.with_options(bad_records.pipeline_options())


def train_image_preprocessor(
    dataset: tf.data.Dataset,
    sequence_length: Optional[Mapping[str, int]] = None,
    colour_jitter: bool = True,
    seed: Optional[int] = None,
    area_range: Tuple[float, float] = (0.4, 1.0),
    aspect_ratio_range: Tuple[float, float] = (3 / 4, 4 / 3),
    jitter_strength: float = 0.4,
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    jitter_hue: Optional[float] = None,
    skip_bad_images: bool = True,
    key: str = "image") -> tf.data.Dataset:
  """SeqIO preprocessor: decode, Inception crop to S x S, SimCLR jitter + grey.

  CLIPA's training transform: ``inception_crop(S, area 40-100%)`` with
  bilinear antialiased resize, then (if ``colour_jitter``) colour jitter
  (strength 0.4, p 0.8, random order) and greyscale (p 0.2). A JPEG is
  decoded only as far as its crop needs, at the largest DCT scale that keeps
  the crop >= S (``jpeg_inception_crop``).

  Args:
    dataset: examples whose ``key`` feature is encoded bytes or uint8 HxWx3.
    sequence_length: SeqIO's lengths; S = ``sequence_length[key]``.
    colour_jitter: apply jitter and random greyscale after the crop.
    seed: fixes this preprocessor's per-example seed stream; None uses the
      Task's seed (see the module docstring).
    area_range: crop area fraction range.
    aspect_ratio_range: crop aspect-ratio range.
    jitter_strength: SimCLR jitter strength.
    jitter_p: probability of colour jitter.
    grayscale_p: probability of greyscale.
    jitter_hue: hue shift bound; None is CLIPA's 0.2 * strength.
    skip_bad_images: drop (and log) examples whose image fails to decode
      (counted as ``bad_records`` ``bad_image``) or has more than
      ``MAX_IMAGE_PIXELS`` pixels by its header (``too_large_image``, never
      decoded) instead of stopping training; see ``_drop_bad``.
    key: the image feature.

  Returns:
    The dataset with ``key`` replaced by uint8 ``[S, S, 3]``; other features
    are kept.
  """
  kwargs = dict(size=_image_side(sequence_length, key), key=key,
                area_range=tuple(area_range),
                aspect_ratio_range=tuple(aspect_ratio_range),
                colour_jitter=colour_jitter, jitter_strength=jitter_strength,
                jitter_p=jitter_p, jitter_hue=jitter_hue,
                grayscale_p=grayscale_p,
                max_pixels=MAX_IMAGE_PIXELS if skip_bad_images else None)
  if skip_bad_images:
    dataset = _add_index(dataset)
  if seed is None:
    out = _train_map(dataset, **kwargs)
  else:
    with seqio.utils.map_seed_manager(seed):
      out = _train_map(dataset, **kwargs)
  return _drop_bad(out) if skip_bad_images else out


def eval_image_preprocessor(
    dataset: tf.data.Dataset,
    sequence_length: Optional[Mapping[str, int]] = None,
    skip_bad_images: bool = False,
    key: str = "image") -> tf.data.Dataset:
  """SeqIO preprocessor: ``decode_resize`` to S x S, with a bad-image policy.

  The one evaluation image map: SeqIO eval Tasks and every source of
  ``clipa_t5x.evaluation.datasets`` read their images through it.

  Args:
    dataset: examples whose ``key`` feature is encoded bytes or uint8 HxWx3
      (or HxWx1).
    sequence_length: SeqIO's lengths; S = ``sequence_length[key]``.
    skip_bad_images: the bad-image policy. True: skip-and-count, i.e. drop
      (and log and count, as in ``train_image_preprocessor``) undecodable
      or too large images. False (the default, so that an eval set never
      shrinks silently): raise, i.e. such an image stops the pipeline with
      ``tf.errors.InvalidArgumentError``.
    key: the image feature.

  Returns:
    The dataset with ``key`` replaced by uint8 ``[S, S, 3]``.
  """
  size = _image_side(sequence_length, key)

  max_pixels = MAX_IMAGE_PIXELS if skip_bad_images else None

  @tf.autograph.experimental.do_not_convert
  def fn(ex):
    return _guarded(ex, key, size, lambda v: decode_resize(v, size),
                    max_pixels)

  if skip_bad_images:
    dataset = _add_index(dataset)
  out = dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
  return _drop_bad(out) if skip_bad_images else out
