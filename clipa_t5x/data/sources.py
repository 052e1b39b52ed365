"""SeqIO data source for webdataset tar shards (img2dataset's output format).

A webdataset shard is a plain tar file whose members are grouped into samples
by KEY, the part of a member's path before the first dot of its basename:
``000000012.jpg``, ``000000012.txt``, ``000000012.json``, ``000000012.cls``.
img2dataset writes a sample's members next to each other, so a sample ends
where the key changes.

The tar format is parsed with TensorFlow ops only (``tf.io.read_file`` + a
``tf.while_loop`` over the 512-byte headers), not with Python's ``tarfile`` in
``Dataset.from_generator``: a Python generator in tf.data holds the GIL, which
(i) deadlocks when an iterator is destroyed while it still has reads in flight
and (ii) makes the iterator impossible to checkpoint. The cost: each file is
read whole into memory while its samples are served (``cycle_length`` files at
a time), so keep shards at a few hundred MB (img2dataset's default of 10,000
samples per shard is fine). ``tf.io.read_file`` goes through TF's file
systems, so ``gs://`` paths work.

Each raw example is ``{'key': tf.string, 'image': tf.string (encoded bytes),
'text': tf.string}`` plus ``'label': tf.int64`` when the source reads labels
(``KEY.cls``). Samples without an image or a (non-empty) caption are skipped
and counted, never fatal; see ``WebDatasetSource.bad_record_counts`` and the
process-wide ``bad_records.snapshot()``.

``ShardedFileSource`` is the shared base of the other file-based sources
(TFRecord, CSV): lazy listing, per-file sharding, round-robin reading.

Sharding is per file: host i of n reads files i, i+n, ... (``ShardInfo``), so
hosts never read the same bytes and need no coordination.
"""

import tarfile
from typing import (Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import numpy as np
import seqio
import tensorflow as tf

from clipa_t5x.data import bad_records

# A split's files: a glob pattern, several, or a zero-argument callable that
# returns either. The callable is resolved when the files are first listed, so
# a Task registered at import time can point at data made (or configured) later.
FilePatterns = Union[str, Sequence[str], Callable[[], Union[str, Sequence[str]]]]

# Per-source counters; each also feeds the process-wide ``bad_records`` counter
# of the same name.
BAD_RECORD_KINDS = ("missing_image", "missing_caption", "bad_caption_utf8",
                    "missing_label", "bad_label", "corrupt_shard")

# The image members of a sample, in order of preference (img2dataset's formats).
WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")

_BLOCK = 512
_ZERO_BLOCK = b"\0" * _BLOCK
_REGULAR_TYPES = (b"0", b"\0", b"7")


# ----------------------------------------------------------- tar headers ---
def _substr(value: tf.Tensor, pos, length) -> tf.Tensor:
  """Byte substrings with int64 offsets (files may exceed 2**31 bytes)."""
  return tf.strings.substr(value, tf.cast(pos, tf.int64),
                           tf.cast(length, tf.int64))


def _bytes(fields: tf.Tensor, width: int) -> tf.Tensor:
  """Fixed-width string(s) -> int64 bytes, shape ``fields.shape + [width]``."""
  # fixed_length keeps the width known even when there are no fields.
  return tf.cast(tf.io.decode_raw(fields, tf.uint8, fixed_length=width),
                 tf.int64)


def _octal(b: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Parses tar numeric fields (octal digits, space/NUL padded).

  Args:
    b: int64 bytes ``[..., width]`` of the fields.

  Returns:
    ``(value, ok)`` of shape ``[...]``; ``ok`` is False when a field has no
    octal digit or junk around the digits (e.g. GNU's base-256 encoding).
  """
  digit = (b >= 48) & (b <= 55)
  pad = tf.equal(b, 0) | tf.equal(b, 32)
  started = tf.cumsum(tf.cast(digit, tf.int64), axis=-1) > 0
  after = started & ~digit  # first non-digit after the digits and beyond
  run = started & (tf.cumsum(tf.cast(after, tf.int64), axis=-1) == 0)
  n = tf.reduce_sum(tf.cast(run, tf.int64), axis=-1, keepdims=True)
  exponent = n - tf.cumsum(tf.cast(run, tf.int64), axis=-1)
  value = tf.reduce_sum(tf.where(
      run, tf.bitwise.left_shift(b - 48, 3 * exponent), tf.zeros_like(b)),
      axis=-1)
  ok = (n[..., 0] > 0) & tf.reduce_all(run | pad, axis=-1)
  return value, ok


def _c_string(fields: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """Each field's bytes up to its first NUL (``b``: the fields' bytes)."""
  # A NUL appended as sentinel: fields without one (and empty ones) work.
  nul = tf.equal(tf.concat([b, tf.zeros_like(b[..., :1])], -1), 0)
  return _substr(fields, tf.zeros_like(fields, tf.int64),
                 tf.argmax(tf.cast(nul, tf.int32), axis=-1))


def _pax_path(data: tf.Tensor) -> tf.Tensor:
  """The ``path=`` record of pax extended headers, or ''."""
  has = tf.strings.regex_full_match(data, r"(?s)(.*\n)?\d+ path=[^\n]*\n.*")
  path = tf.strings.regex_replace(data, r"(?s)^(.*\n)?\d+ path=([^\n]*)\n.*$",
                                  r"\2")
  return tf.where(has, path, "")


def _header_offsets(content: tf.Tensor, total: tf.Tensor):
  """Walks the header chain; returns (offsets [H], ended with a zero block)."""

  def cond(offset, done, *_):
    return tf.logical_not(done) & (offset + _BLOCK <= total)

  def body(offset, done, ended, offsets):
    del done, ended
    header = _substr(content, offset, _BLOCK)
    zero = tf.equal(header, _ZERO_BLOCK)
    size, ok = _octal(_bytes(_substr(header, 124, 12), 12))
    next_offset = offset + _BLOCK + (size + _BLOCK - 1) // _BLOCK * _BLOCK
    stop = zero | ~ok | (offset + _BLOCK + size > total)
    offsets = tf.cond(stop, lambda: offsets,
                      lambda: offsets.write(offsets.size(), offset))
    return tf.where(stop, offset, next_offset), stop, zero, offsets

  init = (tf.constant(0, tf.int64), tf.constant(False), tf.constant(False),
          tf.TensorArray(tf.int64, size=0, dynamic_size=True,
                         element_shape=[]))
  _, _, ended, offsets = tf.while_loop(cond, body, init)
  return offsets.stack(), ended


def index_tar(content: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Lists the members of a tar archive held in one string tensor.

  Only the chain of header offsets is walked in a loop; the headers are then
  parsed all at once. Handles ustar/POSIX (name prefix), GNU long names
  (``L``) and pax ``path`` records; checks every header's checksum.

  Args:
    content: scalar ``tf.string``, the whole tar file.

  Returns:
    ``{'name': [M] string, 'start': [M] int64 data offset, 'size': [M]
    int64, 'regular': [M] bool (a plain file), 'complete': scalar bool}``;
    ``complete`` is False when the archive ends without its end-of-archive
    zero block or has a corrupt header (the members before it are listed).
  """
  total = tf.cast(tf.strings.length(content), tf.int64)
  offsets, ended = _header_offsets(content, total)
  headers = _substr(content, offsets, tf.fill(tf.shape(offsets), _BLOCK))
  b = _bytes(headers, _BLOCK)  # [H, 512]
  size, _ = _octal(b[:, 124:136])
  checksum, checksum_ok = _octal(b[:, 148:156])
  computed = tf.reduce_sum(b, -1) - tf.reduce_sum(b[:, 148:156], -1) + 8 * 32
  valid = checksum_ok & tf.equal(checksum, computed)
  # Keep the headers before the first corrupt one.
  good = tf.cumsum(tf.cast(~valid, tf.int64)) == 0
  complete = ended & tf.reduce_all(valid)
  headers, b, size = (tf.boolean_mask(x, good) for x in (headers, b, size))
  start = tf.boolean_mask(offsets, good) + _BLOCK

  field = lambda pos, width: _substr(headers, tf.fill(tf.shape(start), pos),
                                     tf.fill(tf.shape(start), width))
  typeflag = field(156, 1)
  is_long, is_pax = tf.equal(typeflag, "L"), tf.equal(typeflag, "x")
  name = _c_string(field(0, 100), b[:, :100])
  prefix = _c_string(field(345, 155), b[:, 345:500])
  posix = tf.reduce_all(tf.equal(b[:, 257:263], list(b"ustar\0")), -1)
  name = tf.where(posix & (tf.strings.length(prefix) > 0),
                  tf.strings.join([prefix, name], "/"), name)
  # GNU 'L' / pax 'x' members carry the path of the member after them.
  meta = _substr(content, start, tf.where(is_long | is_pax, size, 0))
  meta_path = tf.where(is_long, tf.strings.regex_replace(meta, r"(?s)\x00.*$",
                                                         ""), _pax_path(meta))
  prev_path = tf.concat([[""], meta_path[:-1]], 0)
  name = tf.where(tf.strings.length(prev_path) > 0, prev_path, name)
  is_member = ~is_long & ~is_pax & ~tf.equal(typeflag, "g")
  regular = tf.reduce_any(
      tf.equal(typeflag[:, None], [t.decode() for t in _REGULAR_TYPES]), -1)
  pick = lambda x: tf.boolean_mask(x, is_member)
  return {"name": pick(name), "start": pick(start), "size": pick(size),
          "regular": pick(regular), "complete": complete}


# One traced graph for all pipelines: a tf.data function calling it inlines a
# call to this cached function instead of re-tracing the while loop.
_index_tar_fn = tf.function(index_tar, autograph=False,
                            input_signature=[tf.TensorSpec([], tf.string)])


def group_members(names: tf.Tensor) -> Dict[str, tf.Tensor]:
  """webdataset's sample rules, the one copy for every front end.

  A member's *key* is its path up to the first dot of its basename, its
  *extension* the rest, lower-cased (``'a/0001.seg.PNG'`` -> ``'a/0001'``,
  ``'seg.png'``); a *sample* is a run of consecutive members with one key.
  ``WebDatasetSource`` calls this inside its tf.data graph; the plain-Python
  readers (``image_files.TarImages``, the label check of the first sample)
  call it eagerly on the names ``tarfile`` lists.

  Args:
    names: ``[M]`` string, the regular members' paths in archive order.

  Returns:
    ``{'key': [M], 'ext': [M], 'sample': [M] int64 sample of each member,
    'num_samples': int64 scalar, 'first': [S] int64 first member of each
    sample}``.
  """
  base = tf.strings.regex_replace(names, "(?s)^.*/", "")
  folder = tf.strings.regex_replace(names, "(?s)[^/]*$", "")
  key = tf.strings.join([folder, tf.strings.regex_replace(base, r"(?s)\..*$", "")])
  ext = tf.strings.lower(tf.strings.regex_replace(base, r"(?s)^[^.]*\.?", ""))
  new = tf.concat([tf.ones_like(key[:1], tf.bool), key[1:] != key[:-1]], 0)
  sample = tf.cumsum(tf.cast(new, tf.int64)) - 1
  num = tf.maximum(tf.reduce_max(tf.concat([sample, [-1]], 0)) + 1, 0)
  member = tf.range(tf.size(key, out_type=tf.int64))
  return {"key": key, "ext": ext, "sample": sample, "num_samples": num,
          "first": tf.math.unsorted_segment_min(member, sample, num)}


def pick_member(groups: Mapping[str, tf.Tensor], exts: Sequence[str]) -> tf.Tensor:
  """Per sample of ``group_members``, the member whose extension comes first in
  ``exts`` (the first such member when a sample repeats it), or -1: ``[S]`` int64."""
  sample, num = groups["sample"], groups["num_samples"]
  member = tf.range(tf.size(sample, out_type=tf.int64))
  none = tf.constant(np.iinfo(np.int64).max, tf.int64)
  found = tf.fill([num], none)
  for e in reversed(exts):
    idx = tf.math.unsorted_segment_min(
        tf.where(tf.equal(groups["ext"], e.lower()), member, none), sample, num)
    found = tf.where(idx < none, idx, found)
  return tf.where(found < none, found, -1)


def _first_sample_members(path: str) -> List[str]:
  """Extensions of the first sample of a tar file (reads only its start)."""
  names = []
  # Eager, also when first asked while tf.data traces the reading function.
  with tf.init_scope(), tf.io.gfile.GFile(path, "rb") as f:
    try:
      with tarfile.open(fileobj=f, mode="r|*") as tar:
        for info in tar:
          if info.isfile():
            names.append(info.name.encode("utf-8", "surrogateescape"))
            # Stop at the first member of the second sample.
            if int(group_members(tf.constant(names))["num_samples"]) > 1:
              break
    except (tarfile.TarError, EOFError):
      pass
    groups = group_members(tf.constant(names, tf.string))
    return [e.decode() for e in
            tf.boolean_mask(groups["ext"], tf.equal(groups["sample"], 0)).numpy()]


# ---------------------------------------------------------------- source ---
class ShardedFileSource(seqio.DataSource):
  """Base of the file-based sources: lists, shards and interleaves files.

  A subclass implements ``_read_file(path, split)``, the examples of one file
  as a ``tf.data.Dataset``; this class lists a split's files lazily (glob
  pattern(s) or a callable returning them, through ``tf.io.gfile`` so
  ``gs://`` works), gives host i of n the files i, i+n, ... (``ShardInfo``),
  shuffles the file order with the seed and reads ``cycle_length`` files
  round-robin.

  Not a ``seqio.FileDataSource`` subclass: its reader gets only a path, but
  ``WebDatasetSource`` reads a split's files with or without labels; its
  ``list_shards`` cannot take the lazy callables above; its ``get_dataset``
  sets no options for the bad-record counters. A subclass would override all
  of it, reusing nothing.
  """

  def __init__(self, split_to_filepattern: Mapping[str, FilePatterns],
               file_kind: str = "data",
               num_input_examples: Optional[Mapping[str, int]] = None,
               cycle_length: int = 4, caching_permitted: bool = True):
    """Creates the source.

    Args:
      split_to_filepattern: split -> glob pattern(s) of its files, or a
        zero-argument callable returning them (resolved when first listed).
      file_kind: what the files are, for error messages (e.g. 'TFRecord').
      num_input_examples: optional split -> number of examples.
      cycle_length: files read concurrently.
      caching_permitted: whether SeqIO may cache this source.
    """
    if not split_to_filepattern:
      raise ValueError("split_to_filepattern is empty; map each split to a "
                       f"glob of its {file_kind} files, e.g. "
                       "{'train': 'dir/train-*'}.")
    if cycle_length < 1:
      raise ValueError(f"cycle_length must be >= 1, got {cycle_length}.")
    super().__init__(splits=split_to_filepattern.keys(),
                     num_input_examples=num_input_examples,
                     caching_permitted=caching_permitted)
    self._patterns = dict(split_to_filepattern)
    self._file_kind = file_kind
    self._cycle_length = cycle_length

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self._patterns})"

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def _patterns_for(self, split: str) -> List[str]:
    if split not in self._patterns:
      raise ValueError(f"Unknown split {split!r}; this source has splits "
                       f"{sorted(self._patterns)}.")
    patterns = self._patterns[split]
    if callable(patterns):
      patterns = patterns()
    return [patterns] if isinstance(patterns, str) else list(patterns)

  def list_shards(self, split: str) -> Sequence[str]:
    """Sorted files of ``split`` (empty if nothing matches)."""
    files = set()
    for pattern in self._patterns_for(split):
      files.update(tf.io.gfile.glob(pattern))
    return sorted(files)

  def _read_file(self, path: tf.Tensor, split: str) -> tf.data.Dataset:
    raise NotImplementedError

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length: Optional[Mapping[str, int]] = None,  # Unused.
                  use_cached: bool = False,  # Unused.
                  num_epochs: Optional[int] = 1,  # Unused.
                  ) -> tf.data.Dataset:
    """Raw examples of ``split`` (one pass; SeqIO repeats).

    Args:
      split: the split to read.
      shuffle: shuffle this shard's file order (with ``seed``); examples are
        shuffled later by the Task's shuffle buffer.
      seed: file-order seed; None is random.
      shard_info: read only files ``index, index + num_shards, ...``.

    Returns:
      The examples, ``cycle_length`` files round-robin (deterministic).
    """
    del sequence_length, use_cached, num_epochs
    files = list(self.list_shards(split))
    if not files:
      raise ValueError(
          f"No {self._file_kind} files match {self._patterns_for(split)} for "
          f"split {split!r}; check the path/glob or generate the data first.")
    if shard_info is not None:
      if len(files) < shard_info.num_shards:
        raise ValueError(
            f"Split {split!r} has {len(files)} {self._file_kind} files but "
            f"{shard_info.num_shards} shards (hosts) want their own files; "
            "write at least as many files as hosts, or read it without "
            "shard_info.")
      files = files[shard_info.index::shard_info.num_shards]

    @tf.autograph.experimental.do_not_convert
    def read_file(path: tf.Tensor) -> tf.data.Dataset:
      return self._read_file(path, split)

    files_ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
      files_ds = files_ds.shuffle(len(files), seed=seed)
    ds = files_ds.interleave(
        read_file, cycle_length=min(self._cycle_length, len(files)),
        block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    return ds.with_options(bad_records.pipeline_options())


class WebDatasetSource(ShardedFileSource):
  """Reads image-text samples from webdataset tar shards, sharded by file.

  Example::

    source = WebDatasetSource({'train': 'gs://bucket/laion/*.tar'})
    ds = source.get_dataset('train', shuffle=True, seed=0,
                            shard_info=seqio.ShardInfo(index=0, num_shards=8))
  """

  def __init__(self, split_to_filepattern: Mapping[str, FilePatterns], caption_key: str = "txt",
               image_keys: Optional[Sequence[str]] = WEBDATASET_IMAGE_KEYS,
               label_key: Optional[str] = "cls", with_labels: Optional[bool] = None,
               num_input_examples: Optional[Mapping[str, int]] = None, cycle_length: int = 4,
               caching_permitted: bool = True):
    """Creates the source.

    Args:
      split_to_filepattern, num_input_examples, cycle_length,
        caching_permitted: as ``ShardedFileSource``'s (the files: tar; each
        read whole, held in memory while read).
      caption_key: member extension holding the caption (UTF-8 text).
      image_keys: member extensions tried, in order, for the image; None is
        ``WEBDATASET_IMAGE_KEYS``.
      label_key: member extension holding an integer class label as text.
      with_labels: whether examples carry ``'label'``. None decides per split
        from its first sample (labelled iff it has a ``label_key`` member).
        When labels are on, a sample without a valid one gets label -1
        (counted).
    """
    if not split_to_filepattern:
      raise ValueError("split_to_filepattern is empty; map each split to a "
                       "glob of its tar files, e.g. {'train': 'dir/*.tar'}.")
    if image_keys is None:
      image_keys = WEBDATASET_IMAGE_KEYS
    if not image_keys:
      raise ValueError("image_keys is empty; give the image extensions, e.g. "
                       "('jpg', 'png').")
    super().__init__(split_to_filepattern, "tar", num_input_examples, cycle_length,
                     caching_permitted)
    self._caption_key = caption_key.lower()
    self._image_keys = tuple(k.lower() for k in image_keys)
    self._label_key = label_key.lower() if label_key else None
    self._with_labels = with_labels
    self._resolved_labels: Dict[str, bool] = {}
    self._counter_vars: Optional[Dict[str, tf.Variable]] = None

  def _labels_on(self, split: str) -> bool:
    if self._label_key is None or self._with_labels is not None:
      return bool(self._with_labels) and self._label_key is not None
    if split not in self._resolved_labels:
      self._resolved_labels[split] = (
          self._label_key in _first_sample_members(self.list_shards(split)[0]))
    return self._resolved_labels[split]

  # ----------------------------------------------------------- records ---
  @property
  def _counters(self) -> Dict[str, tf.Variable]:
    # TF variables, so the pipeline counts without calling Python. Made on
    # first use (not at Task registration, which happens at import time) and
    # on the CPU, so importing the Tasks neither starts TF nor touches a GPU.
    if self._counter_vars is None:
      with tf.init_scope(), tf.device("/CPU:0"):
        self._counter_vars = {
            k: tf.Variable(0, dtype=tf.int64, trainable=False,
                           name=f"bad_{k}") for k in BAD_RECORD_KINDS}
    return self._counter_vars

  def bad_record_counts(self) -> Dict[str, int]:
    """Counts of skipped or repaired records since this source was created.

    Keys (only non-zero ones are returned): ``missing_image`` and
    ``missing_caption`` (samples skipped; an empty or all-whitespace caption
    counts as missing), ``bad_caption_utf8`` (non-UTF-8
    caption, invalid bytes replaced by U+FFFD), ``missing_label`` and
    ``bad_label`` (label set to -1), ``corrupt_shard`` (a tar ended early or
    has a corrupt header; the samples before it are read). Counts are taken
    when a file is read (again each epoch), so they may run ahead of the
    examples consumed. The same events also feed the process-wide
    counters of ``bad_records`` (``snapshot()``).
    """
    return {k: int(v.numpy()) for k, v in self._counters.items()
            if int(v.numpy())}

  def _count(self, kind: str, n: tf.Tensor) -> tf.Operation:
    n = tf.cast(n, tf.int64)
    return tf.group(self._counters[kind].assign_add(n),
                    bad_records.count(kind, n))

  def _samples(self, path: tf.Tensor, with_labels: bool) -> tf.data.Dataset:
    """The examples of one tar file, in file order."""
    content = tf.io.read_file(path)
    members = _index_tar_fn(content)
    keep = members["regular"]
    start = tf.boolean_mask(members["start"], keep)
    size = tf.boolean_mask(members["size"], keep)
    groups = group_members(tf.boolean_mask(members["name"], keep))
    find = lambda exts: pick_member(groups, exts)
    first = groups["first"]
    image = find(self._image_keys)
    caption = find([self._caption_key])
    has_image, has_caption = image >= 0, caption >= 0
    safe_caption = tf.maximum(caption, 0)
    all_text = tf.strings.strip(_substr(
        content, tf.gather(start, safe_caption),
        tf.where(has_caption, tf.gather(size, safe_caption), 0)))
    # An empty caption teaches nothing: treated like a missing one.
    has_caption &= tf.strings.length(all_text) > 0
    ok = has_image & has_caption
    take = lambda x: tf.boolean_mask(x, ok)
    image, first = take(image), take(first)
    fixed, fix_op = fix_caption(take(all_text), count=self._count)
    n = lambda mask: tf.reduce_sum(tf.cast(mask, tf.int64))
    updates = [fix_op, self._count("corrupt_shard", ~members["complete"]),
               self._count("missing_image", n(~has_image)),
               self._count("missing_caption", n(has_image & ~has_caption)),
               bad_records.count("incomplete_sample", n(~ok))]
    example = {"key": tf.gather(groups["key"], first),
               "image_start": tf.gather(start, image),
               "image_size": tf.gather(size, image), "text": fixed}
    if with_labels:
      label_member = take(find([self._label_key]))
      raw = tf.strings.strip(_substr(
          content, tf.gather(start, tf.maximum(label_member, 0)),
          tf.where(label_member >= 0, tf.gather(size, tf.maximum(
              label_member, 0)), 0)))
      valid = tf.strings.regex_full_match(raw, r"[+-]?[0-9]{1,18}")
      label = tf.where(valid, tf.strings.to_number(
          tf.where(valid, raw, "0"), tf.int64), -1)
      updates += [self._count("missing_label", n(label_member < 0)),
                  self._count("bad_label", n((label_member >= 0) & ~valid))]
      example["label"] = label
    with tf.control_dependencies(updates):
      example = {k: tf.identity(v) for k, v in example.items()}

    @tf.autograph.experimental.do_not_convert
    def slice_image(ex):
      out = {k: v for k, v in ex.items() if k not in ("image_start", "image_size")}
      out["image"] = _substr(content, ex["image_start"], ex["image_size"])
      return out

    return tf.data.Dataset.from_tensor_slices(example).map(slice_image)

  # ----------------------------------------------------------- dataset ---
  def _read_file(self, path: tf.Tensor, split: str) -> tf.data.Dataset:
    """The samples of one tar file: ``{'key', 'image', 'text'[, 'label']}``."""
    return self._samples(path, self._labels_on(split))


def fix_caption(text: tf.Tensor, count: Callable[[str, tf.Tensor], tf.Operation]
                = bad_records.count) -> Tuple[tf.Tensor, tf.Operation]:
  """Strips captions and repairs invalid UTF-8 (counted as bad_caption_utf8).

  The one caption repair of every source (webdataset, TFRecord, CSV, TFDS).

  Args:
    text: string tensor of captions, any shape.
    count: ``(kind, n) -> op`` that counts; a source with counters of its own
      passes one that feeds them as well as ``bad_records``.

  Returns:
    ``(captions, update_op)``: invalid bytes replaced by U+FFFD.
  """
  text = tf.strings.strip(text)
  fixed = tf.strings.unicode_transcode(
      text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
  return fixed, count("bad_caption_utf8",
                      tf.reduce_sum(tf.cast(fixed != text, tf.int64)))


def select_features(dataset: tf.data.Dataset,
                    keys: Iterable[str] = ("image", "text"),
                    label_dtype: Optional[tf.DType] = tf.int32
                    ) -> tf.data.Dataset:
  """SeqIO preprocessor: keeps only ``keys`` (missing ones are an error).

  Drops what the model does not need (e.g. the string ``key``) and casts
  ``'label'`` (int64 from the source) to ``label_dtype``.

  Args:
    dataset: examples.
    keys: the features to keep.
    label_dtype: dtype of ``'label'`` if kept; None leaves it as is.

  Returns:
    The filtered dataset.
  """
  keys = tuple(keys)
  missing = [k for k in keys if k not in dataset.element_spec]
  if missing:
    raise ValueError(f"Features {missing} are missing from the examples "
                     f"(they have {sorted(dataset.element_spec)}); read a "
                     "split that has them (e.g. labels need KEY.cls members).")

  @tf.autograph.experimental.do_not_convert
  def fn(ex):
    out = {k: ex[k] for k in keys}
    if "label" in out and label_dtype is not None:
      out["label"] = tf.cast(out["label"], label_dtype)
    return out

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
