"""Tests of clipa_t5x.data.image_files: sources with keys and robust image loading."""

import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from clipa_t5x.data import image_files
from clipa_t5x.data import image_ops


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def _image(h=20, w=30, seed=0) -> np.ndarray:
  return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _tf_resize(array: np.ndarray, size: int) -> np.ndarray:
  """Independent reference: the evaluation resize applied directly."""
  return image_ops.eval_resize(tf.constant(array), size).numpy()


def _write(path, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


# ------------------------------------------------------------------ loading
def test_png_bytes_path_pil_and_array_agree_with_eval_resize(tmp_path):
  array = _image(20, 30)
  data = _png(array)
  path = tmp_path / "x.png"
  path.write_bytes(data)
  want = _tf_resize(array, 16)
  for image in (data, str(path), path, Image.open(path), array):
    got = image_files.load_image(image, 16)
    assert got.dtype == np.uint8 and got.shape == (16, 16, 3)
    np.testing.assert_array_equal(got, want)


def test_array_at_size_is_returned_unchanged():
  array = _image(16, 16)
  np.testing.assert_array_equal(image_files.load_image(array, 16), array)


def test_greyscale_and_rgba_become_rgb(tmp_path):
  grey = _image(12, 12)[:, :, 0]
  got = image_files.load_image(grey, 12)
  np.testing.assert_array_equal(got, np.repeat(grey[:, :, None], 3, axis=2))
  rgba = np.concatenate([_image(12, 12), np.full((12, 12, 1), 7, np.uint8)], axis=2)
  buf = io.BytesIO()
  Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
  np.testing.assert_array_equal(image_files.load_image(buf.getvalue(), 12), rgba[:, :, :3])
  np.testing.assert_array_equal(image_files.load_image(Image.fromarray(rgba, "RGBA"), 12),
                                rgba[:, :, :3])


def test_jpeg_decodes_like_the_eval_pipeline():
  array = _image(64, 48)
  data = _jpeg(array)
  want = image_ops.eval_resize(image_ops.decode_image(tf.constant(data), target_size=8), 8)
  np.testing.assert_array_equal(image_files.load_image(data, 8), want.numpy())
  # The evaluation map itself gives the same pixels (one decode-and-resize).
  ds = tf.data.Dataset.from_tensors({"image": tf.constant(data)})
  out = next(iter(image_ops.eval_image_preprocessor(ds, {"image": 8})))
  np.testing.assert_array_equal(image_files.load_image(data, 8), out["image"].numpy())


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"not an image at all", "cannot decode"),
    (_png(_image())[:60], "cannot decode"),  # truncated PNG
])
def test_bad_bytes_raise_bad_image_error(data, reason):
  with pytest.raises(image_files.BadImageError, match=reason):
    image_files.load_image(data, 16)


def test_missing_file_and_bad_types(tmp_path):
  with pytest.raises(image_files.BadImageError, match="not found"):
    image_files.load_image(str(tmp_path / "nope.jpg"), 16)
  with pytest.raises(image_files.BadImageError, match="uint8"):
    image_files.load_image(np.zeros((4, 4, 3), np.float32), 16)
  with pytest.raises(image_files.BadImageError, match=r"\[H, W, 3\]"):
    image_files.load_image(np.zeros((4, 4, 2), np.uint8), 16)
  with pytest.raises(image_files.BadImageError, match="unsupported image type"):
    image_files.load_image(3.5, 16)
  with pytest.raises(image_files.BadImageError, match="boom"):
    image_files.load_image(image_files.Unreadable("boom"), 16)
  with pytest.raises(ValueError, match="positive int"):
    image_files.load_image(_image(), 0)


def test_too_many_pixels_is_refused_from_the_header(monkeypatch):
  monkeypatch.setattr(image_ops, "MAX_IMAGE_PIXELS", 100)
  with pytest.raises(image_files.BadImageError, match="too large"):
    image_files.load_image(_png(_image(20, 30)), 8)


# ------------------------------------------------------------------ sources
def test_folder_is_recursive_sorted_filtered(tmp_path):
  png = _png(_image())
  for rel in ("b/2.png", "a/z.JPG", "a/sub/1.jpeg", "top.webp", "notes.txt", ".hidden.png",
              "a/._x.jpg", ".git/objects/y.png"):
    _write(str(tmp_path / rel), png)
  source = image_files.FolderImages(str(tmp_path))
  assert source.keys == ["a/sub/1.jpeg", "a/z.JPG", "b/2.png", "top.webp"]
  assert len(source) == 4
  pairs = list(source)
  assert [k for k, _ in pairs] == source.keys
  assert pairs[0][1] == os.path.join(str(tmp_path), "a/sub/1.jpeg")
  assert source.skipped == []


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    image_files.FolderImages(str(tmp_path / "missing"))
  (tmp_path / "f.txt").write_text("x")
  with pytest.raises(ValueError, match="not a folder"):
    image_files.FolderImages(str(tmp_path / "f.txt"))


def _tar(path, members):
  with tarfile.open(path, "w") as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_tar_groups_members_by_key(tmp_path):
  a, b = _png(_image(seed=1)), _jpeg(_image(seed=2))
  path = str(tmp_path / "shard.tar")
  _tar(path, [("s/001.txt", b"caption"), ("s/001.png", a), ("s/001.jpg", b),
              ("s/002.json", b"{}"), ("s/003.jpg", b)])
  source = image_files.TarImages(path)
  assert len(source) == 2
  pairs = list(source)
  assert [k for k, _ in pairs] == ["s/001", "s/003"]
  assert pairs[0][1] == b  # jpg comes first in IMAGE_EXTENSIONS
  assert source.skipped == [("s/002", "no image member (has json)")]
  # Iterable twice (a new pass re-reads the file).
  assert [k for k, _ in source] == ["s/001", "s/003"]


def test_tar_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    image_files.TarImages(str(tmp_path / "missing.tar"))
  bad = tmp_path / "bad.tar"
  bad.write_bytes(b"\x01" * 1000)
  with pytest.raises(ValueError, match="not a readable tar"):
    image_files.TarImages(str(bad))


def test_tar_cut_short_is_an_error_or_a_bad_member(tmp_path):
  path = str(tmp_path / "cut.tar")
  _tar(path, [("001.png", _png(_image(64, 64))), ("002.png", _png(_image(64, 64, seed=3)))])
  data = open(path, "rb").read()
  cut = tmp_path / "cut2.tar"
  cut.write_bytes(data[:len(data) // 2 + 700])  # inside the second member
  try:
    source = image_files.TarImages(str(cut))
  except ValueError as e:
    assert "not a readable tar" in str(e)
    return
  # tarfile may list the cut member: reading it must give a marker, not a crash.
  values = dict(source)
  assert isinstance(values["002"], image_files.Unreadable)


def test_list_source_resolves_relative_paths(tmp_path):
  _write(str(tmp_path / "imgs" / "a.png"), _png(_image()))
  listing = tmp_path / "list.txt"
  listing.write_text("imgs/a.png\n\n  \nimgs/missing.png\n" + str(tmp_path / "imgs/a.png") + "\n")
  source = image_files.ListImages(str(listing))
  assert source.keys == ["imgs/a.png", "imgs/missing.png", str(tmp_path / "imgs/a.png")]
  pairs = list(source)
  assert pairs[0][1] == os.path.join(str(tmp_path), "imgs/a.png")
  image_files.load_image(pairs[0][1], 8)
  with pytest.raises(image_files.BadImageError, match="not found"):
    image_files.load_image(pairs[1][1], 8)


def test_open_image_source_dispatch(tmp_path):
  (tmp_path / "d").mkdir()
  assert isinstance(image_files.open_image_source(str(tmp_path / "d")), image_files.FolderImages)
  _tar(str(tmp_path / "x.tar"), [("1.png", _png(_image()))])
  assert isinstance(image_files.open_image_source(str(tmp_path / "x.tar")),
                    image_files.TarImages)
  (tmp_path / "l.txt").write_text("a.png\n")
  assert isinstance(image_files.open_image_source(str(tmp_path / "l.txt")),
                    image_files.ListImages)
  with pytest.raises(ValueError, match="does not exist"):
    image_files.open_image_source(str(tmp_path / "nope"))
  (tmp_path / "one.jpg").write_bytes(b"x")
  with pytest.raises(ValueError, match="single image"):
    image_files.open_image_source(str(tmp_path / "one.jpg"))
  (tmp_path / "latin1.txt").write_bytes(b"caf\xe9.png\n")
  with pytest.raises(ValueError, match="not UTF-8"):
    image_files.open_image_source(str(tmp_path / "latin1.txt"))


def test_names_with_line_breaks_are_reported_not_listed(tmp_path):
  # One key per line in the CLI's keys file: such a name would shift every later row.
  (tmp_path / "ok.png").write_bytes(_png(_image()))
  (tmp_path / "two\nlines.png").write_bytes(_png(_image()))
  source = image_files.FolderImages(str(tmp_path))
  assert source.keys == ["ok.png"]
  assert source.skipped == [("two\\nlines.png", "the name contains a line break")]
