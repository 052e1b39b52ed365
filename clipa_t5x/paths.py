"""Paths the user gives: local ones made absolute, remote ones read through ``tf.io.gfile``.

Training reads and writes ``gs://`` through Orbax and ``tf.io.gfile``; the
tools that read a finished run (inference, export) use these helpers so they
take the same paths, and every small file a run writes (summaries, model
configs) goes through ``write_text_atomic`` so no reader ever sees half of one. A remote path is one with a scheme (``gs://``, ``s3://``,
``ram://``, ...); only remote paths import TensorFlow, so local use of the
light tools stays TensorFlow-free.
"""

import json
import os
import shutil
import tempfile
from typing import Any, Callable, List, Optional


def is_remote(path: str) -> bool:
  """Whether ``path`` has a filesystem scheme (``gs://bucket/x``)."""
  return "://" in str(path)


def absolute(path: str) -> str:
  """``path`` made absolute (``~`` expanded) if local; remote paths unchanged.

  Orbax refuses relative checkpoint paths, so every path a user types goes
  through here at the edge.
  """
  path = os.fspath(path)
  if is_remote(path):
    return path
  return os.path.abspath(os.path.expanduser(path))


def _gfile():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile


def join(path: str, *names: str) -> str:
  return os.path.join(path, *names)  # "/"-joined, as gfile URLs are


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  if is_remote(path):
    return _gfile().exists(path) and not _gfile().isdir(path)
  return os.path.isfile(path)


def listdir(path: str) -> List[str]:
  """Entry names of a directory (remote listings may mark folders with a trailing '/')."""
  if is_remote(path):
    return [name.rstrip("/") for name in _gfile().listdir(path)]
  return os.listdir(path)


def getmtime(path: str) -> float:
  """Modification time in seconds."""
  if is_remote(path):
    return _gfile().stat(path).mtime_nsec / 1e9
  return os.path.getmtime(path)


def read_text(path: str) -> str:
  if is_remote(path):
    with _gfile().GFile(path, "r") as f:
      return f.read()
  with open(path, encoding="utf-8") as f:
    return f.read()


def makedirs(path: str) -> None:
  """Creates ``path`` and its parents (no error if it exists)."""
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes ``data`` through a temporary file and a rename: never a half-written file."""
  tmp = f"{path}.tmp"
  if is_remote(path):
    with _gfile().GFile(tmp, "wb") as f:
      f.write(data)
    _gfile().rename(tmp, path, overwrite=True)
    return
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
  """Writes ``text`` (UTF-8) with ``write_bytes_atomic``."""
  write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, value: Any, indent: int = 2, sort_keys: bool = False) -> None:
  """``value`` as JSON (plus a final newline), written with ``write_text_atomic``."""
  write_text_atomic(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


def replace_dir(out_dir: str, write: Callable[[str], Any],
                done: Optional[Callable[[], bool]] = None) -> str:
  """Builds a local directory in a temporary sibling, then swaps it in at ``out_dir``.

  ``write(tmp)`` fills the empty sibling ``.NAME.tmp-*``; then an existing
  ``out_dir`` is moved aside (and deleted) and the sibling renamed to it. A
  reader never sees half a directory, and an interrupted ``write`` leaves
  nothing behind (a killed process: only an unused ``.tmp-`` sibling).

  Args:
    out_dir: the directory to create or replace (local).
    write: fills the directory it is given.
    done: optional check that ``out_dir`` already holds what ``write``
      makes (another process finished first): then it is kept, the new copy
      dropped, and a lost rename race is no error.

  Returns:
    ``out_dir`` as an absolute path.
  """
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  parent, name = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
  try:
    write(tmp)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; others may read the result
    if done is not None and done():
      return out_dir
    old = None
    if os.path.exists(out_dir):
      old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
      os.rename(out_dir, os.path.join(old, name))
    try:
      os.rename(tmp, out_dir)
    except OSError:
      if done is None or not done():  # lost a race only if the winner's copy is complete
        raise
    finally:
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


def copy_to_local(path: str, directory: str) -> str:
  """Copies a remote file or folder (recursively) into ``directory``; returns the copy's path."""
  name = os.path.basename(path.rstrip("/")) or "download"
  local = os.path.join(directory, name)
  if not isdir(path):
    _gfile().copy(path, local, overwrite=True)
    return local
  for root, _, files in _gfile().walk(path):
    rel = os.path.relpath(root.rstrip("/"), path.rstrip("/"))
    target = os.path.normpath(os.path.join(local, rel))
    os.makedirs(target, exist_ok=True)
    for f in files:
      _gfile().copy(join(root, f), os.path.join(target, f), overwrite=True)
  return local


def upload_tree(local: str, remote: str) -> None:
  """Copies a local folder to ``remote`` (a URL), file by file."""
  for root, _, files in os.walk(local):
    rel = os.path.relpath(root, local)
    target = remote.rstrip("/") if rel == "." else join(remote.rstrip("/"), rel)
    _gfile().makedirs(target)
    for f in files:
      _gfile().copy(os.path.join(root, f), join(target, f), overwrite=True)


class LocalCopy:
  """``with LocalCopy(path) as local:``: a remote path's local copy (removed after), or the path."""

  def __init__(self, path: str):
    self.path = path
    self._tmp = None

  def __enter__(self) -> str:
    if not is_remote(self.path):
      return self.path
    self._tmp = tempfile.mkdtemp(prefix="clipa_download_")
    return copy_to_local(self.path, self._tmp)

  def __exit__(self, *exc) -> None:
    if self._tmp is not None:
      shutil.rmtree(self._tmp, ignore_errors=True)
