"""Tests for clipa_t5x.data.bad_records and the skips wired to it."""

import io
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from clipa_t5x.data import bad_records
from clipa_t5x.data import image_ops
from clipa_t5x.data.sources import WebDatasetSource

LENGTHS = {"image": 16, "text": 8}


def _rgb(h=24, w=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def _jpeg_with_size(h: int, w: int) -> bytes:
  """A small JPEG whose SOF header claims h x w (its data cannot decode)."""
  data = bytearray(_encode(Image.fromarray(_rgb()), "JPEG"))
  sof = data.index(b"\xff\xc0")
  data[sof + 5:sof + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
  return bytes(data)


def _png_with_size(h: int, w: int) -> bytes:
  data = bytearray(_encode(Image.fromarray(_rgb()), "PNG"))
  data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
  return bytes(data)


def _delta(before):
  after = bad_records.snapshot()
  return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_snapshot_count_reset_and_unknown_kind():
  snap = bad_records.snapshot()
  assert set(snap) == set(bad_records.KINDS)
  bad_records.count("bad_image", 3)
  bad_records.count("bad_image")
  assert _delta(snap) == {"bad_image": 4}
  bad_records.reset()
  assert set(bad_records.snapshot().values()) == {0}
  with pytest.raises(ValueError, match="Unknown bad-record kind"):
    bad_records.count("nope")


def test_header_pixel_counts_match_pil():
  img = Image.fromarray(_rgb(21, 37))
  cases = {"JPEG": {}, "PNG": {}, "GIF": {}, "BMP": {},
           "WEBP": {}, "WEBP_LOSSLESS": {"lossless": True}}
  for name, kw in cases.items():
    data = _encode(img, name.split("_")[0], **kw)
    assert int(image_ops.encoded_image_pixels(data)) == 21 * 37, name
  # VP8X (extended) WebP: written when the image has an alpha channel.
  rgba = Image.fromarray(np.dstack([_rgb(21, 37), _rgb(21, 37)[..., :1]]))
  data = _encode(rgba, "WEBP", exif=b"Exif\0\0")
  assert data[12:16] == b"VP8X"
  assert int(image_ops.encoded_image_pixels(data)) == 21 * 37
  assert int(image_ops.encoded_image_pixels(b"not an image")) == -1
  assert int(image_ops.encoded_image_pixels(b"")) == -1
  assert int(image_ops.encoded_image_pixels(_png_with_size(9000, 7000))) == (
      63_000_000)


def test_valid_formats_decode_to_rgb_uint8():
  rgb = _rgb(20, 30)
  grey = rgb[..., 0]
  g16 = (grey.astype(np.uint16) * 257)
  cmyk = Image.fromarray(rgb).convert("CMYK")
  cases = {
      "png": (_encode(Image.fromarray(rgb), "PNG"), rgb, 0),
      "gif": (_encode(Image.fromarray(grey), "GIF"), np.stack([grey] * 3, -1),
              0),
      "webp": (_encode(Image.fromarray(rgb), "WEBP", lossless=True), rgb, 0),
      "grey_jpeg": (_encode(Image.fromarray(grey), "JPEG", quality=95),
                    np.stack([grey] * 3, -1), 12),
      "png16": (_encode(Image.fromarray(g16), "PNG"),
                np.stack([grey] * 3, -1), 1),
      "cmyk_jpeg": (_encode(cmyk, "JPEG", quality=95),
                    np.asarray(cmyk.convert("RGB")), 40),
  }
  for name, (data, want, tol) in cases.items():
    got = image_ops.decode_image(tf.constant(data)).numpy()
    assert got.dtype == np.uint8 and got.shape == (20, 30, 3), name
    err = np.abs(got.astype(int) - want.astype(int)).mean()
    assert err <= tol, (name, err)


def _image_dataset(images):
  return tf.data.Dataset.from_tensor_slices(
      {"image": images, "text": [f"t{i}" for i in range(len(images))]})


@pytest.mark.parametrize("preprocessor", ["train", "eval"])
def test_bad_images_are_skipped_and_counted(preprocessor):
  good = _encode(Image.fromarray(_rgb()), "JPEG")
  png = _encode(Image.fromarray(_rgb()), "PNG")
  images = [
      good,                          # t0 ok
      good[:len(good) // 2],         # t1 truncated JPEG
      b"",                           # t2 zero bytes
      png,                           # t3 ok
      b"<html>not found</html>",     # t4 not an image
      _jpeg_with_size(8000, 8000),   # t5 64 MP by header: never decoded
      _png_with_size(10000, 6000),   # t6 60 MP PNG
      png[:40],                      # t7 truncated PNG
      good,                          # t8 ok
      b"\x89PNG\r\n\x1a\n broken",      # t9 bad, last: still counted
  ]
  before = bad_records.snapshot()
  ds = _image_dataset(images)
  if preprocessor == "train":
    out = image_ops.train_image_preprocessor(ds, LENGTHS, seed=0)
  else:
    out = image_ops.eval_image_preprocessor(ds, LENGTHS, skip_bad_images=True)
  assert set(out.element_spec) == {"image", "text"}
  examples = list(out.as_numpy_iterator())
  assert [e["text"] for e in examples] == [b"t0", b"t3", b"t8"]
  assert all(e["image"].shape == (16, 16, 3) for e in examples)
  assert _delta(before) == {"bad_image": 5, "too_large_image": 2}


def test_no_skipping_raises_on_a_bad_image():
  ds = _image_dataset([b"junk"])
  with pytest.raises(tf.errors.InvalidArgumentError):
    list(image_ops.eval_image_preprocessor(ds, LENGTHS))


@pytest.mark.parametrize("image", [_jpeg_with_size(8000, 8000), _png_with_size(10000, 6000)])
def test_no_skipping_raises_on_a_too_large_image_before_decoding(image):
  # The raise policy checks the same header limit as skip-and-count.
  ds = _image_dataset([image])
  with pytest.raises(tf.errors.InvalidArgumentError, match="too large"):
    list(image_ops.eval_image_preprocessor(ds, LENGTHS))


def _tar(path, members, truncate_to=None):
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w") as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  data = buf.getvalue()
  with open(path, "wb") as f:
    f.write(data[:truncate_to] if truncate_to else data)


def test_webdataset_caption_and_member_problems_are_counted(tmp_path):
  jpg = _encode(Image.fromarray(_rgb()), "JPEG")
  _tar(str(tmp_path / "s-0.tar"), [
      ("000.jpg", jpg), ("000.txt", b"a fine caption"),
      ("001.jpg", jpg), ("001.txt", b"   "),              # empty caption
      ("002.jpg", jpg),                                    # no caption
      ("003.txt", b"no image"),                            # no image
      ("004.jpg", jpg), ("004.txt", b"na\xefve \xff"),     # not UTF-8
      ("005.jpg", b"garbage"), ("005.txt", b"bad image"),
      ("006.png", jpg), ("006.txt", b"ok"),  # extension need not match
      ("007.jpg", jpg[:100]), ("007.txt", b"truncated, last"),
  ])
  before = bad_records.snapshot()
  source = WebDatasetSource({"train": str(tmp_path / "s-*.tar")},
                            with_labels=False)
  ds = image_ops.train_image_preprocessor(
      source.get_dataset("train", shuffle=False), LENGTHS, seed=1)
  examples = list(ds.as_numpy_iterator())
  assert [e["key"] for e in examples] == [b"000", b"004", b"006"]
  assert examples[1]["text"] == "na\ufffdve \ufffd".encode()
  assert _delta(before) == {"missing_caption": 2, "missing_image": 1,
                            "incomplete_sample": 3, "bad_caption_utf8": 1,
                            "bad_image": 2}


def test_truncated_tar_counts_corrupt_shard(tmp_path):
  jpg = _encode(Image.fromarray(_rgb()), "JPEG")
  members = [(f"{i:03d}.{e}", jpg if e == "jpg" else b"caption")
             for i in range(3) for e in ("jpg", "txt")]
  _tar(str(tmp_path / "t.tar"), members, truncate_to=2 * (512 + 1536) + 700)
  before = bad_records.snapshot()
  source = WebDatasetSource({"train": str(tmp_path / "t.tar")})
  keys = [e["key"] for e in source.get_dataset("train").as_numpy_iterator()]
  assert keys and len(keys) < 3
  assert _delta(before)["corrupt_shard"] == 1
