"""Images for inference: from a folder, a tar file or a list of paths, with keys.

Three kinds of *image source* give ``(key, image)`` pairs in a fixed order,
with their count known before the first image is read (for progress bars):

* ``FolderImages``: every image file under a folder, recursively, sorted by
  relative path (the key); hidden files and folders (``.name``) are skipped,
  among them macOS ``._x.jpg`` resource forks, which are not images;
* ``TarImages``: a tar file grouped into samples as webdataset does, by the
  rules of ``sources.group_members`` (key = member path up to the first dot
  of its basename; a sample is a run of consecutive members with one key);
  each sample's image member is the key;
* ``ListImages``: a text file with one image path per line (relative paths
  are resolved against the list's folder); the key is the line as written.

``load_image`` turns one image (a path, encoded bytes, a PIL image or a uint8
array) into the ``uint8 [size, size, 3]`` array the model sees. It decodes and
resizes with ``image_ops.decode_resize``, the function the evaluation pipeline
maps (a square, antialiased resize with no crop), so features match
evaluation exactly. The bad-image policy here is *raise*: anything unreadable
(or over ``image_ops.MAX_IMAGE_PIXELS``) raises ``BadImageError`` naming the
reason; callers decide whether to skip it (the CLI does, and reports it) or to
stop.
"""

import dataclasses
import functools
import os
import tarfile
import threading
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif")
# Larger files are not read at all (an encoded image this big is an error or
# an attack; decoded-size limits are checked from the header as well).
MAX_IMAGE_BYTES = 256 * 1024 * 1024

# What ``load_image`` takes: a path, encoded bytes, a PIL image or an array.
Image = Any


class BadImageError(ValueError):
  """An image that cannot be read or decoded; the message says why."""


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """Stands in for an image that failed while being listed or read (with why)."""
  reason: str


# ------------------------------------------------------------------ decoding
_TRACE_LOCK = threading.Lock()


def keep_tensorflow_on_host() -> None:
  """Hides GPUs from TensorFlow so it never takes accelerator memory from JAX.

  The one place that does it (the input pipeline runs on the host, as in t5x):
  the entry points' TensorFlow import hook and inference call it. A no-op when
  TensorFlow has already initialised its devices.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError, AttributeError):
    pass  # devices already initialised: too late to change, nothing to hide


@functools.lru_cache(maxsize=None)
def _tf_functions(size: int):
  """(pixels_of_bytes, decode_resize, resize) traced for one output side."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from clipa_t5x.data import image_ops  # pylint: disable=import-outside-toplevel

  @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
  def pixels(data):
    return image_ops.encoded_image_pixels(data)

  # The evaluation transform itself, traced for bytes and for arrays.
  decode_resize, resize = (
      tf.function(lambda x: image_ops.decode_resize(x, size), input_signature=[spec],
                  autograph=False)
      for spec in (tf.TensorSpec([], tf.string), tf.TensorSpec([None, None, 3], tf.uint8)))

  # Traced here, once, under a lock: worker threads then only call them.
  pixels.get_concrete_function()
  decode_resize.get_concrete_function()
  resize.get_concrete_function()
  return pixels, decode_resize, resize


def _functions(size: int):
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"image size must be a positive int, got {size!r}.")
  with _TRACE_LOCK:
    return _tf_functions(int(size))


def decode_and_resize(data: bytes, size: int) -> np.ndarray:
  """Encoded image bytes (JPEG, PNG, GIF, BMP, WebP) -> uint8 ``[size, size, 3]``.

  Args:
    data: the file's bytes.
    size: output side in pixels.

  Returns:
    The decoded RGB image, square-resized as in evaluation.

  Raises:
    BadImageError: empty, undecodable, or over ``image_ops.MAX_IMAGE_PIXELS``.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from clipa_t5x.data import image_ops  # pylint: disable=import-outside-toplevel
  pixels, decode_resize, _ = _functions(size)
  if not data:
    raise BadImageError("empty file")
  try:
    count = int(pixels(tf.constant(data)))
    if count > image_ops.MAX_IMAGE_PIXELS:
      raise BadImageError(f"too large ({count} pixels > {image_ops.MAX_IMAGE_PIXELS})")
    return decode_resize(tf.constant(data)).numpy()
  except tf.errors.OpError as e:
    raise BadImageError(f"cannot decode ({_op_error_reason(e)})") from None


def _op_error_reason(error: Exception) -> str:
  """The decoder's own words from a TF error (without graph traces and node names)."""
  skip = ("Graph execution error", "Detected at node", "File ", "[[")
  lines = [line.strip() for line in str(getattr(error, "message", "") or "").splitlines()]
  lines = [line for line in lines if line and not line.startswith(skip)]
  return lines[-1].rstrip(".") if lines else type(error).__name__


def resize_array(image: np.ndarray, size: int) -> np.ndarray:
  """A uint8 ``[H, W, 3]`` (or greyscale ``[H, W]`` / ``[H, W, 1]``) array -> ``[size, size, 3]``.

  An image already ``size x size`` is returned unchanged (as a copy).

  Raises:
    BadImageError: not uint8, or not an image shape.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise BadImageError(
        f"image arrays must be uint8 in 0..255, got {image.dtype}; convert with "
        "np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for floats in [0, 1].")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3) or 0 in image.shape[:2]:
    raise BadImageError(
        f"an image array must be [H, W, 3] (or greyscale [H, W]), got shape {image.shape}.")
  if image.shape[2] == 1:
    image = np.repeat(image, 3, axis=2)
  if image.shape[:2] == (size, size):
    return np.array(image)
  _, _, resize = _functions(size)
  return resize(image).numpy()


def read_file(path: str) -> bytes:
  """The bytes of an image file; ``BadImageError`` when missing, unreadable or huge."""
  try:
    nbytes = os.path.getsize(path)
    if nbytes > MAX_IMAGE_BYTES:
      raise BadImageError(f"file too large ({nbytes} bytes > {MAX_IMAGE_BYTES})")
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise BadImageError(f"file not found: {path}") from None
  except IsADirectoryError:
    raise BadImageError(f"is a directory: {path}") from None
  except OSError as e:
    raise BadImageError(f"cannot read {path} ({e.strerror or e})") from None


def load_image(image: Image, size: int) -> np.ndarray:
  """Any supported image -> uint8 ``[size, size, 3]``, resized as in evaluation.

  Args:
    image: a file path (``str`` / ``os.PathLike``), encoded bytes, a PIL image
      (any mode; converted to RGB, first frame of an animation), a uint8
      ``[H, W, 3]`` / ``[H, W]`` array, or an ``Unreadable`` marker.
    size: output side in pixels.

  Returns:
    uint8 ``[size, size, 3]``.

  Raises:
    BadImageError: the image cannot be read; the message says why.
  """
  if isinstance(image, Unreadable):
    raise BadImageError(image.reason)
  if isinstance(image, (str, os.PathLike)):
    return decode_and_resize(read_file(os.fspath(image)), size)
  if isinstance(image, (bytes, bytearray, memoryview)):
    return decode_and_resize(bytes(image), size)
  if isinstance(image, np.ndarray):
    return resize_array(image, size)
  if is_pil_image(image):
    try:
      array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as e:  # a lazily loaded, truncated file
      raise BadImageError(f"cannot decode PIL image ({e})") from None
    return resize_array(array, size)
  raise BadImageError(
      f"unsupported image type {type(image).__name__}; pass a file path, encoded bytes, a PIL "
      "image or a uint8 [H, W, 3] array.")


def is_pil_image(image: Any) -> bool:
  """Whether ``image`` is a PIL image."""
  try:
    from PIL import Image as PILImage  # pylint: disable=import-outside-toplevel
  except ImportError:  # pragma: no cover (pillow is a dependency)
    return False
  return isinstance(image, PILImage.Image)


# -------------------------------------------------------------------- sources
def has_image_extension(name: str, extensions=IMAGE_EXTENSIONS) -> bool:
  """Whether ``name`` ends in one of ``extensions`` (case-insensitive)."""
  return name.lower().rsplit(".", 1)[-1] in extensions if "." in name else False


def _bad_key(key: str) -> Optional[str]:
  # One key per line in the keys file: a line break inside a name would shift rows.
  if "\n" in key or "\r" in key:
    return "the name contains a line break"
  return None


class ImageSource:
  """A sized, re-iterable sequence of ``(key, image)`` pairs.

  Attributes:
    path: where the images come from.
    skipped: ``(key, reason)`` of entries found while listing that have no
      usable image (e.g. a tar sample without an image member); they are not
      yielded and not counted in ``len``.
  """

  def __init__(self, path: str):
    self.path = path
    self.skipped: List[Tuple[str, str]] = []

  def __len__(self) -> int:
    return len(self.keys)  # the keys a subclass lists (TarImages: its samples)

  def __iter__(self) -> Iterator[Tuple[str, Image]]:
    raise NotImplementedError


class FolderImages(ImageSource):
  """Image files under a folder, recursively, sorted by relative path (the key)."""

  def __init__(self, directory: str, extensions=IMAGE_EXTENSIONS):
    """Lists the folder.

    Args:
      directory: the folder.
      extensions: file extensions read (case-insensitive, without the dot).

    Raises:
      ValueError: the folder does not exist or is not a folder.
    """
    super().__init__(directory)
    if not os.path.exists(directory):
      raise ValueError(f"image folder {directory!r} does not exist; check the path.")
    if not os.path.isdir(directory):
      raise ValueError(f"{directory!r} is not a folder; pass a folder of images.")
    extensions = tuple(e.lower().lstrip(".") for e in extensions)
    keys = []

    def on_error(e: OSError) -> None:
      rel = os.path.relpath(e.filename, directory) if e.filename else directory
      self.skipped.append((rel, f"cannot list folder ({e.strerror or e})"))

    for root, dirs, files in os.walk(directory, onerror=on_error):
      dirs[:] = [d for d in dirs if not d.startswith(".")]
      for name in files:
        if name.startswith(".") or not has_image_extension(name, extensions):
          continue
        key = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
        problem = _bad_key(key)
        if problem:
          self.skipped.append((key.replace("\n", "\\n").replace("\r", "\\r"), problem))
        else:
          keys.append(key)
    self.keys = sorted(keys)

  def __iter__(self) -> Iterator[Tuple[str, Image]]:
    for key in self.keys:
      yield key, os.path.join(self.path, key)


class TarImages(ImageSource):
  """The image of every sample of a (webdataset-style) tar file, keyed as webdataset does."""

  def __init__(self, path: str, extensions=IMAGE_EXTENSIONS):
    """Reads the tar's index (member headers only).

    Args:
      path: a ``.tar`` file, optionally gzip/bzip2/xz-compressed.
      extensions: member extensions taken as the image, in order of preference.

    Raises:
      ValueError: missing file, not a tar file, or a tar cut short.
    """
    super().__init__(path)
    if not os.path.isfile(path):
      raise ValueError(f"tar file {path!r} does not exist; check the path.")
    self._extensions = tuple(e.lower().lstrip(".") for e in extensions)
    try:
      with tarfile.open(path, "r:*") as tar:
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
      raise ValueError(f"{path!r} is not a readable tar file ({e}); check that it is complete "
                       "and not corrupt.") from None
    self._samples: List[Tuple[str, tarfile.TarInfo]] = []
    infos = [i for i in members if i.isfile()]
    if not infos:
      return
    # webdataset's key/extension rules, from the one copy the training source uses.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from clipa_t5x.data import sources  # pylint: disable=import-outside-toplevel
    encode = lambda name: name.encode("utf-8", "surrogateescape")
    decode = lambda value: value.decode("utf-8", "surrogateescape")
    groups = sources.group_members(tf.constant([encode(i.name) for i in infos], tf.string))
    keys, exts, sample = (groups[k].numpy() for k in ("key", "ext", "sample"))
    images = sources.pick_member(groups, self._extensions).numpy()
    for s, first in enumerate(groups["first"].numpy()):
      key = decode(keys[first])
      problem = _bad_key(key)
      if images[s] < 0:
        found = sorted(decode(e) for e in exts[sample == s])
        self.skipped.append((key, f"no image member (has {', '.join(found)})"))
      elif problem:
        self.skipped.append((key.replace("\n", "\\n").replace("\r", "\\r"), problem))
      else:
        self._samples.append((key, infos[images[s]]))

  def __len__(self) -> int:
    return len(self._samples)

  def __iter__(self) -> Iterator[Tuple[str, Image]]:
    with tarfile.open(self.path, "r:*") as tar:
      for key, info in self._samples:
        if info.size > MAX_IMAGE_BYTES:
          yield key, Unreadable(f"member too large ({info.size} bytes > {MAX_IMAGE_BYTES})")
          continue
        try:
          f = tar.extractfile(info)
          data = f.read() if f is not None else None
        except (tarfile.TarError, EOFError, OSError) as e:
          yield key, Unreadable(f"cannot read tar member {info.name} ({e})")
          continue
        if data is None or len(data) != info.size:
          yield key, Unreadable(f"tar member {info.name} is truncated")
        else:
          yield key, data


class ListImages(ImageSource):
  """Images named in a text file, one path per line; the key is the line as written."""

  def __init__(self, path: str):
    """Reads the list.

    Empty (or whitespace-only) lines are ignored; relative paths are relative
    to the list's folder. Missing files are found when read, not here.

    Raises:
      ValueError: the list is missing or not UTF-8 text.
    """
    super().__init__(path)
    if not os.path.isfile(path):
      raise ValueError(f"image list {path!r} does not exist; check the path.")
    try:
      with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    except UnicodeDecodeError as e:
      raise ValueError(f"image list {path!r} is not UTF-8 text ({e.reason} at byte {e.start}); "
                       "write one image path per line in UTF-8.") from None
    base = os.path.dirname(os.path.abspath(path))
    self.keys = [line.strip() for line in lines if line.strip()]
    self._paths = [os.path.join(base, os.path.expanduser(k)) for k in self.keys]

  def __iter__(self) -> Iterator[Tuple[str, Image]]:
    return iter(zip(self.keys, self._paths))


def is_tar_path(path: str) -> bool:
  """Whether ``path`` names a tar file by its extension (``.tar``, ``.tar.gz``, ``.tgz``...)."""
  lower = path.lower()
  return lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"))


def open_image_source(path: str) -> ImageSource:
  """A folder, a tar file or a text list of image paths, chosen from ``path``.

  Args:
    path: a folder; a ``.tar`` (optionally compressed) file; or any other file,
      read as a list of image paths (e.g. ``images.txt``).

  Returns:
    The ``ImageSource``.

  Raises:
    ValueError: ``path`` does not exist or cannot be read as any of these.
  """
  if not os.path.exists(path):
    raise ValueError(f"input {path!r} does not exist; pass a folder of images, a .tar file "
                     "or a text file listing image paths.")
  if os.path.isdir(path):
    return FolderImages(path)
  if is_tar_path(path):
    return TarImages(path)
  if has_image_extension(path):
    raise ValueError(f"input {path!r} is a single image; put it in a folder or list its path "
                     "in a text file.")
  if tarfile.is_tarfile(path):
    return TarImages(path)
  return ListImages(path)
