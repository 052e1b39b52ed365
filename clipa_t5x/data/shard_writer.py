"""The one webdataset shard writer: samples -> ``PREFIX00000.tar``, ... with img2dataset's keys.

A sample is a mapping ``{extension: bytes}`` (``{'jpg': ..., 'txt': ...,
'json': ..., 'cls': ...}``); its members are ``KEY.<extension>``, in sorted
order as webdataset's own ``TarWriter`` writes them. KEY is the shard number
(5 digits) followed by the sample's index in the shard, as img2dataset names
them (``000010002``: shard 1, sample 2). Each shard is written under a
temporary name and renamed when complete, so a shard is either whole or absent.
``make_shards`` (image folders, CSV lists), the demo data generator and the
input-pipeline benchmark all write through it.
"""

import io
import os
import tarfile
import time
from typing import List, Mapping, Optional


class ShardWriter:
  """Writes webdataset tar shards into an existing folder, one sample at a time.

  Args:
    out_dir: the folder (must exist).
    samples_per_shard: a shard is closed after this many samples
      (``close_shard`` closes one earlier).
    prefix: shard file names are ``f'{prefix}{shard:05d}.tar'``.
    key_digits: digits of the in-shard index in each key (default: enough
      for ``samples_per_shard``).
    mtime: modification time of every member; ``0`` makes the bytes depend on
      the samples only (reproducible files); None: the time the writer starts.

  ``shards`` lists the completed shard paths and ``written`` counts samples.
  Use as a context manager, or call ``close`` at the end.
  """

  def __init__(self, out_dir: str, samples_per_shard: int, prefix: str = "",
               key_digits: Optional[int] = None, mtime: Optional[float] = None):
    if samples_per_shard < 1:
      raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}.")
    self.out_dir, self.per_shard, self.prefix = out_dir, samples_per_shard, prefix
    self.key_digits = key_digits or max(1, len(str(samples_per_shard - 1)))
    if len(str(samples_per_shard - 1)) > self.key_digits:
      raise ValueError(f"{samples_per_shard} samples per shard need more than "
                       f"key_digits={self.key_digits} digits.")
    self.mtime = time.time() if mtime is None else mtime
    self.shard, self.in_shard, self.written = 0, 0, 0
    self.shards: List[str] = []
    self._tar: Optional[tarfile.TarFile] = None

  def path(self, shard: int) -> str:
    """The path of shard number ``shard``."""
    return os.path.join(self.out_dir, f"{self.prefix}{shard:05d}.tar")

  @property
  def next_key(self) -> str:
    """The key the next ``write`` gives its sample (for metadata that names it)."""
    return f"{self.shard:05d}{self.in_shard:0{self.key_digits}d}"

  def write(self, members: Mapping[str, bytes]) -> str:
    """Writes one sample, ``{extension: bytes}``; returns its key."""
    if not members:
      raise ValueError("a sample needs at least one member.")
    if self._tar is None:
      self._tar = tarfile.open(self.path(self.shard) + ".tmp", "w", format=tarfile.PAX_FORMAT)
    key = self.next_key
    for ext in sorted(members):
      data = members[ext]
      info = tarfile.TarInfo(f"{key}.{ext}")
      # Fixed owner and mode: the bytes depend on the samples and ``mtime`` only.
      info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
      info.uid = info.gid = 0
      info.uname = info.gname = ""
      self._tar.addfile(info, io.BytesIO(data))
    self.in_shard += 1
    self.written += 1
    if self.in_shard == self.per_shard:
      self.close_shard()
    return key

  def close_shard(self) -> None:
    """Completes the current shard (if it holds a sample); the next sample starts a new one."""
    if self._tar is not None:
      self._tar.close()
      os.replace(self.path(self.shard) + ".tmp", self.path(self.shard))  # whole or absent
      self.shards.append(self.path(self.shard))
      self._tar, self.shard, self.in_shard = None, self.shard + 1, 0

  def close(self) -> None:
    """Completes the last shard."""
    self.close_shard()

  def __enter__(self) -> "ShardWriter":
    return self

  def __exit__(self, *exc) -> None:
    if exc[0] is None:
      self.close()
    elif self._tar is not None:  # an error: no half shard is left behind
      self._tar.close()
      os.remove(self.path(self.shard) + ".tmp")
      self._tar = None
