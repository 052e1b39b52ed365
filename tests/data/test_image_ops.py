"""Tests for clipa_t5x.data.image_ops: decoding, crops, jitter, SeqIO preprocessors."""

import io
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from clipa_t5x.data import image_ops


def _scene(h=240, w=320, seed=0):
  """A smooth image with a few flat blobs (JPEG-friendly, like a photo)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  img = np.stack([x / w * 255, y / h * 255, (x + y) / (h + w) * 255], -1)
  for _ in range(4):
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(15, 50)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
  return img.astype(np.uint8)


def _encode(img, fmt="JPEG", **kw):
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format=fmt, **kw)
  return tf.constant(buf.getvalue())


def test_decode_picks_dct_ratio_from_target():
  jpeg = _encode(_scene(480, 640), quality=95)
  cases = {None: (480, 640), 60: (60, 80), 100: (120, 160), 120: (120, 160),
           121: (240, 320), 240: (240, 320), 241: (480, 640), 999: (480, 640)}
  for target, shape in cases.items():
    image = image_ops.decode_image(jpeg, target)
    assert image.dtype == tf.uint8 and tuple(image.shape) == shape + (3,)
  with pytest.raises(ValueError, match="target_size"):
    image_ops.decode_image(jpeg, 0)


def test_dct_decode_close_to_full_decode_and_resize():
  jpeg = _encode(_scene(480, 640, seed=1), quality=95)
  full = image_ops.eval_resize(image_ops.decode_image(jpeg), 56).numpy()
  fast_decoded = image_ops.decode_image(jpeg, 56)
  assert tuple(fast_decoded.shape) == (60, 80, 3)  # ratio 8 was used
  fast = image_ops.eval_resize(fast_decoded, 56).numpy()
  diff = np.abs(full.astype(np.float64) - fast)
  assert diff.mean() < 3.0, diff.mean()


def test_decode_png_grey_jpeg_webp_to_three_channels():
  img = _scene(40, 50)
  png = image_ops.decode_image(_encode(img, "PNG"), 10)
  np.testing.assert_array_equal(png.numpy(), img)  # lossless path
  grey = image_ops.decode_image(_encode(img[..., 0], "JPEG"), 10)
  assert tuple(grey.shape) == (10, 13, 3)  # DCT ratio 4, expanded to RGB
  np.testing.assert_array_equal(grey.numpy()[..., 0], grey.numpy()[..., 2])
  webp = image_ops.decode_image(_encode(img, "WEBP", lossless=True))
  np.testing.assert_array_equal(webp.numpy(), img)


def test_min_side_rule_keeps_every_crop_at_least_target():
  size, area, aspect = 70, (0.4, 1.0), (3 / 4, 4 / 3)
  need = image_ops.min_side_for_crop(size, area, aspect)
  assert need == math.ceil(70 / math.sqrt(0.4 * 0.75)) == 128
  for shape in ([need, need, 3], [need, 3 * need, 3], [2 * need, need, 3]):
    for s in range(200):
      _, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
          shape, tf.zeros([1, 0, 4]), seed=[s, 7], min_object_covered=0.0,
          area_range=area, aspect_ratio_range=aspect, max_attempts=10,
          use_image_if_no_bounding_boxes=True)
      assert min(crop.numpy()[:2]) >= size


def test_jpeg_crop_matches_crop_of_the_full_decode():
  """Same crop box as inception_crop on the full-size image; pixels differ only
  by DCT-scaled decoding (a cheaper, equally antialiased downscale)."""
  img = _scene(480, 640)
  jpeg = _encode(img, quality=95)
  full = tf.io.decode_jpeg(jpeg, channels=3)
  for size in (32, 70, 112, 224):
    for s in range(4):
      fast = image_ops.jpeg_inception_crop(jpeg, size, [s, 3])
      ref = image_ops.inception_crop(full, size, [s, 3])
      assert fast.dtype == tf.uint8 and tuple(fast.shape) == (size, size, 3)
      diff = np.abs(fast.numpy().astype(int) - ref.numpy().astype(int))
      assert diff.mean() < 5, (size, s, diff.mean())  # another crop: 12-40
  # Deterministic in the seed, and a different seed gives another crop.
  a = image_ops.jpeg_inception_crop(jpeg, 64, [1, 2]).numpy()
  np.testing.assert_array_equal(a, image_ops.jpeg_inception_crop(jpeg, 64, [1, 2]).numpy())
  assert not np.array_equal(a, image_ops.jpeg_inception_crop(jpeg, 64, [2, 2]).numpy())


def test_jpeg_crop_of_tiny_and_grey_images():
  # Crops smaller than the output are upsampled from a full-scale decode.
  tiny = image_ops.jpeg_inception_crop(_encode(_scene(20, 30)), 48, [0, 1])
  assert tuple(tiny.shape) == (48, 48, 3)
  grey = image_ops.jpeg_inception_crop(_encode(_scene(200, 200)[..., 0]), 32, [0, 1]).numpy()
  assert grey.shape == (32, 32, 3)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_inception_crop_shapes_range_and_determinism():
  image = tf.constant(_scene(100, 150))
  a = image_ops.inception_crop(image, 32, tf.constant([1, 2]))
  b = image_ops.inception_crop(image, 32, tf.constant([1, 2]))
  c = image_ops.inception_crop(image, 32, tf.constant([3, 4]))
  assert a.dtype == tf.uint8 and tuple(a.shape) == (32, 32, 3)
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert not np.array_equal(a.numpy(), c.numpy())
  # Full-area, square-aspect crop of a square image is a plain resize.
  square = tf.constant(_scene(64, 64))
  whole = image_ops.inception_crop(square, 16, [5, 6], area=(1.0, 1.0),
                                   aspect=(1.0, 1.0))
  np.testing.assert_array_equal(whole.numpy(),
                                image_ops.eval_resize(square, 16).numpy())
  with pytest.raises(ValueError, match="area"):
    image_ops.inception_crop(image, 8, [1, 1], area=(0.0, 1.0))
  with pytest.raises(ValueError, match="shape"):
    image_ops.inception_crop(image, 8, [1, 2, 3])


def _triangle_resize_reference(img, out_h, out_w):
  """Separable antialiased bilinear (triangle kernel widened by the scale)."""

  def weights(n_in, n_out):
    scale = n_in / n_out
    width = max(scale, 1.0)
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
      centre = (i + 0.5) * scale
      x = np.arange(n_in) + 0.5
      w[i] = np.maximum(0.0, 1.0 - np.abs(x - centre) / width)
      w[i] /= w[i].sum()
    return w

  rows, cols = weights(img.shape[0], out_h), weights(img.shape[1], out_w)
  out = np.einsum("oh,hwc->owc", rows, img.astype(np.float64))
  return np.einsum("pw,owc->opc", cols, out)


def test_eval_resize_matches_numpy_triangle_filter():
  img = np.random.default_rng(0).integers(0, 256, (45, 30, 3)).astype(np.uint8)
  out = image_ops.eval_resize(tf.constant(img), 12).numpy()
  assert out.dtype == np.uint8 and out.shape == (12, 12, 3)
  ref = np.clip(np.round(_triangle_resize_reference(img, 12, 12)), 0, 255)
  assert np.abs(out.astype(int) - ref).max() <= 1
  const = np.full((37, 53, 3), 200, np.uint8)
  np.testing.assert_array_equal(image_ops.eval_resize(const, 11).numpy(),
                                np.full((11, 11, 3), 200, np.uint8))


def test_color_jitter_probability_dtype_and_seed():
  image = tf.constant(_scene(32, 32))
  same = image_ops.simclr_color_jitter(image, [1, 2], p=0.0)
  np.testing.assert_array_equal(same.numpy(), image.numpy())
  outs = [image_ops.simclr_color_jitter(image, [s, 9], p=1.0).numpy()
          for s in range(4)]
  assert all(o.dtype == np.uint8 and o.shape == (32, 32, 3) for o in outs)
  assert all(np.abs(o.astype(int) - image.numpy()).mean() > 1 for o in outs)
  assert len({o.tobytes() for o in outs}) == 4
  again = image_ops.simclr_color_jitter(image, [0, 9], p=1.0).numpy()
  np.testing.assert_array_equal(again, outs[0])
  fixed = image_ops.simclr_color_jitter(image, [0, 9], p=1.0,
                                        random_order=False).numpy()
  assert fixed.shape == (32, 32, 3)
  as_float = tf.image.convert_image_dtype(image, tf.float32)
  f = image_ops.simclr_color_jitter(as_float, [1, 2], strength=1.0, p=1.0)
  assert f.dtype == tf.float32
  assert 0.0 <= float(tf.reduce_min(f)) and float(tf.reduce_max(f)) <= 1.0
  with pytest.raises(ValueError, match="strength"):
    image_ops.simclr_color_jitter(image, [1, 2], strength=3.0)


def test_jitter_hue_bound_keeps_hue_when_zero():
  # Only hue changes with brightness/contrast/saturation pinned to 1: a zero
  # hue bound must then give back the image.
  image = tf.constant(_scene(16, 16))
  out = image_ops.simclr_color_jitter(image, [4, 4], strength=1e-9, p=1.0,
                                      hue_max_delta=0.0)
  assert np.abs(out.numpy().astype(int) - image.numpy()).max() <= 1


def test_random_grayscale():
  image = tf.constant(_scene(16, 16))
  grey = image_ops.random_grayscale(image, [1, 2], p=1.0).numpy()
  ref = tf.image.rgb_to_grayscale(image).numpy()
  for c in range(3):
    np.testing.assert_array_equal(grey[..., c], ref[..., 0])
  np.testing.assert_array_equal(
      image_ops.random_grayscale(image, [1, 2], p=0.0).numpy(), image.numpy())
  hits = [bool(np.all(image_ops.random_grayscale(image, [s, 0], p=0.2).numpy()
                      == grey)) for s in range(100)]
  assert 5 <= sum(hits) <= 40


def _dataset(n=6, size=(60, 80)):
  imgs = [_encode(_scene(*size, seed=i)) for i in range(n)]
  return tf.data.Dataset.from_tensor_slices(
      {"image": tf.stack(imgs), "text": tf.constant(["x"] * n)})


@pytest.mark.slow
def test_train_preprocessor_shapes_and_seeded_determinism():
  lengths = {"image": 24, "text": 8}
  run = lambda seed: [ex["image"].numpy() for ex in
                      image_ops.train_image_preprocessor(
                          _dataset(), sequence_length=lengths, seed=seed)]
  a, b, c = run(7), run(7), run(8)
  assert all(x.shape == (24, 24, 3) and x.dtype == np.uint8 for x in a)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(a, c))
  # Per-example seeds differ: identical inputs get different crops.
  same_input = _dataset().map(lambda ex: {**ex, "image": ex["image"]})
  ds = tf.data.Dataset.from_tensors(next(iter(same_input))).repeat(3)
  outs = [ex["image"].numpy() for ex in image_ops.train_image_preprocessor(
      ds, sequence_length=lengths, seed=1)]
  assert len({o.tobytes() for o in outs}) == 3
  ex = next(iter(image_ops.train_image_preprocessor(
      _dataset(), sequence_length=lengths, colour_jitter=False, seed=1)))
  assert ex["text"].numpy() == b"x"  # other features kept


def test_train_preprocessor_uses_seqio_seed_manager():
  import seqio
  lengths = {"image": 16}

  def run():
    with seqio.utils.map_seed_manager(123):
      ds = image_ops.train_image_preprocessor(_dataset(), sequence_length=lengths)
    return [ex["image"].numpy() for ex in ds]

  for x, y in zip(run(), run()):
    np.testing.assert_array_equal(x, y)


def test_preprocessors_accept_decoded_images_and_check_lengths():
  decoded = _dataset().map(
      lambda ex: {**ex, "image": tf.io.decode_jpeg(ex["image"], channels=3)})
  out = next(iter(image_ops.eval_image_preprocessor(
      decoded, sequence_length={"image": 20})))
  assert tuple(out["image"].shape) == (20, 20, 3)
  with pytest.raises(ValueError, match="sequence_length"):
    image_ops.train_image_preprocessor(_dataset(), sequence_length=None)
  with pytest.raises(ValueError, match="positive int"):
    image_ops.eval_image_preprocessor(_dataset(),
                                      sequence_length={"image": (3, 3)})
  floats = _dataset().map(lambda ex: {**ex, "image": tf.zeros([4, 4, 3])})
  with pytest.raises(ValueError, match="uint8"):
    image_ops.eval_image_preprocessor(floats, sequence_length={"image": 4})


def test_eval_preprocessor_is_decode_then_square_resize():
  ds = _dataset(n=3, size=(200, 300))
  outs = list(image_ops.eval_image_preprocessor(
      ds, sequence_length={"image": 32}))
  for ex, out in zip(ds, outs):
    ref = image_ops.eval_resize(image_ops.decode_image(ex["image"], 32), 32)
    np.testing.assert_array_equal(out["image"].numpy(), ref.numpy())
    full = image_ops.eval_resize(tf.io.decode_jpeg(ex["image"]), 32).numpy()
    assert np.abs(full.astype(int) - out["image"].numpy()).mean() < 3


def test_undecodable_images_are_skipped_in_training_only():
  good = _dataset(n=3)
  bad = tf.data.Dataset.from_tensor_slices(
      {"image": [b"\xff\xd8\xff not a jpeg"], "text": ["y"]})
  ds = good.take(1).concatenate(bad).concatenate(good.skip(1))
  out = list(image_ops.train_image_preprocessor(
      ds, sequence_length={"image": 8}, seed=0))
  assert len(out) == 3
  with pytest.raises(tf.errors.InvalidArgumentError):
    list(image_ops.eval_image_preprocessor(ds, sequence_length={"image": 8}))
  kept = list(image_ops.eval_image_preprocessor(
      ds, sequence_length={"image": 8}, skip_bad_images=True))
  assert len(kept) == 3


def test_decode_resize_takes_bytes_rgb_and_greyscale_arrays():
  # One transform for evaluation and inference, whatever form the image has.
  grey = _scene(40, 30)[:, :, :1]
  rgb = np.repeat(grey, 3, axis=2)
  want = image_ops.eval_resize(tf.constant(rgb), 10).numpy()
  for value in (grey, rgb):
    np.testing.assert_array_equal(image_ops.decode_resize(tf.constant(value), 10).numpy(), want)
  png = _encode(rgb, "PNG")
  np.testing.assert_array_equal(image_ops.decode_resize(png, 10).numpy(), want)
  ds = tf.data.Dataset.from_tensors({"image": tf.constant(grey)})
  out = next(iter(image_ops.eval_image_preprocessor(ds, {"image": 10})))
  np.testing.assert_array_equal(out["image"].numpy(), want)
