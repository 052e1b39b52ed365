"""Your own image-text data from one location string: which files, which format, which source.

A *location* names files the way open_clip's ``--train-data`` and webdataset
do, and may combine:

* webdataset brace ranges ``shards/{00000..00099}.tar`` (zero-padded when an
  end has a leading zero) and alternatives ``{train,extra}/*.tar``;
* globs (``*``, ``?``, ``[0-9]``), local or ``gs://`` (anything ``tf.io.gfile``
  reads);
* several locations separated by commas (commas inside braces belong to the
  braces), or a list of them.

A brace range is not expanded into one name per file: it becomes a few
character-class globs (``{00000..00123}`` -> ``000[0-9][0-9]``,
``001[0-1][0-9]``, ``0012[0-3]``), so listing 200,000 shards on ``gs://`` costs
a handful of directory listings, not one request per file.

The format is inferred from the file names (``.tar`` -> webdataset,
``.tfrecord``/``.tfrec``/``.tfrecords`` -> img2dataset TFRecord, ``.csv`` /
``.tsv`` -> image path + caption rows) unless given. ``make_source`` returns
the matching source of this package (``WebDatasetSource``,
``TFRecordSource``, ``CsvSource``); nothing here reads samples itself.

Plain Python: gin binds these arguments in ``tasks/user_data.py`` and
``evaluation``, never here.
"""

import logging
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Union

import seqio
import tensorflow as tf

from clipa_t5x.data.csv_source import CsvSource
from clipa_t5x.data.sources import WEBDATASET_IMAGE_KEYS, WebDatasetSource
from clipa_t5x.data.tfrecord_source import TFRecordSource

Location = Union[str, Sequence[str]]

FORMATS = ("webdataset", "tfrecord", "csv", "tsv")
_EXTENSION_FORMATS = {".tar": "webdataset", ".tfrecord": "tfrecord", ".tfrec": "tfrecord",
                      ".tfrecords": "tfrecord", ".csv": "csv", ".tsv": "tsv"}
# Keys each format reads when none is given: img2dataset's member/feature
# names, and open_clip's CSV column names (--csv-img-key / --csv-caption-key).
DEFAULT_IMAGE_KEYS = {"webdataset": WEBDATASET_IMAGE_KEYS, "tfrecord": "jpg",
                      "csv": "filepath", "tsv": "filepath"}
DEFAULT_CAPTION_KEYS = {"webdataset": "txt", "tfrecord": "txt", "csv": "title", "tsv": "title"}
_GLOB_CHARS = re.compile(r"[*?\[]")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


# ------------------------------------------------------------ locations ---
def _split_top_level(text: str) -> List[str]:
  """Splits on commas outside braces."""
  parts, depth, current = [], 0, []
  for ch in text:
    if ch == "{":
      depth += 1
    elif ch == "}":
      depth = max(depth - 1, 0)
    if ch == "," and depth == 0:
      parts.append("".join(current))
      current = []
    else:
      current.append(ch)
  parts.append("".join(current))
  return parts


def _digit_class(lo: str, hi: str) -> str:
  return lo if lo == hi else f"[{lo}-{hi}]"


def _fixed_width_globs(lo: str, hi: str) -> List[str]:
  """Globs matching exactly the equal-width decimal strings lo..hi."""
  if lo == hi:
    return [lo]
  if len(lo) == 1:
    return [_digit_class(lo, hi)]
  if lo[0] == hi[0]:
    return [lo[0] + g for g in _fixed_width_globs(lo[1:], hi[1:])]
  rest = len(lo) - 1
  out = []
  first, last = int(lo[0]), int(hi[0])
  if lo[1:] != "0" * rest:  # the partial block under lo's first digit
    out += [lo[0] + g for g in _fixed_width_globs(lo[1:], "9" * rest)]
    first += 1
  tail = []
  if hi[1:] != "9" * rest:  # the partial block under hi's first digit
    tail = [hi[0] + g for g in _fixed_width_globs("0" * rest, hi[1:])]
    last -= 1
  if first <= last:
    out.append(_digit_class(str(first), str(last)) + "[0-9]" * rest)
  return out + tail


def range_globs(start: str, end: str) -> List[str]:
  """Globs for the numbers of a brace range ``{start..end}``, as webdataset names them.

  Args:
    start: first number as written (``'00000'``); a leading zero on either end
      pads every number to the longer end's width.
    end: last number as written.

  Returns:
    Character-class globs that together match exactly those names.
  """
  lo, hi = int(start), int(end)
  if lo > hi:
    raise ValueError(f"brace range {{{start}..{end}}} runs backwards; write {{{end}..{start}}}.")
  padded = (len(start) > 1 and start[0] == "0") or (len(end) > 1 and end[0] == "0")
  if padded:
    width = max(len(start), len(end))
    return _fixed_width_globs(f"{lo:0{width}d}", f"{hi:0{width}d}")
  out = []
  for width in range(len(str(lo)), len(str(hi)) + 1):  # unpadded: one run per digit count
    first = max(lo, 10 ** (width - 1) if width > 1 else 0)
    last = min(hi, 10 ** width - 1)
    out += _fixed_width_globs(str(first), str(last))
  return out


def _range_size(start: str, end: str) -> int:
  return int(end) - int(start) + 1


def expand_braces(pattern: str) -> List[str]:
  """One pattern with ``{a..b}`` / ``{x,y}`` braces -> globs without braces."""
  match = re.search(r"\{([^{}]*)\}", pattern)
  if not match:
    if "{" in pattern or "}" in pattern:
      raise ValueError(f"unbalanced brace in {pattern!r}; write ranges as {{00000..00099}}.")
    return [pattern]
  body = match.group(1)
  numbers = _RANGE.match(body)
  if numbers:
    choices = range_globs(*numbers.groups())
  elif "," in body:
    choices = body.split(",")
  else:
    raise ValueError(f"cannot read the braces {{{body}}} in {pattern!r}; use a range "
                     "{00000..00099} or alternatives {a,b}.")
  head, tail = pattern[:match.start()], pattern[match.end():]
  return [head + c + rest for c in choices for rest in expand_braces(tail)]


def _expected_count(pattern: str) -> Optional[int]:
  """How many files a brace pattern names, or None when it also has globs."""
  counts = []
  for body in re.findall(r"\{([^{}]*)\}", pattern):
    numbers = _RANGE.match(body)
    counts.append(_range_size(*numbers.groups()) if numbers else len(body.split(",")))
  if _GLOB_CHARS.search(re.sub(r"\{[^{}]*\}", "", pattern)):
    return None
  return math.prod(counts) if counts else 1


def split_locations(location: Location, setting: str = "location") -> List[str]:
  """The individual locations of a comma-separated string or a list (``~`` expanded)."""
  if location is None or (isinstance(location, str) and not location.strip()):
    raise ValueError(f"{setting} is not set; give the data's location, e.g. "
                     f"--gin.{setting}=\"'/data/shards/{{00000..00099}}.tar'\".")
  items = [location] if isinstance(location, str) else list(location)
  out = []
  for item in items:
    if not isinstance(item, str):
      raise ValueError(f"{setting}: expected path strings, got {item!r}.")
    out += [p.strip() for p in _split_top_level(item) if p.strip()]
  if not out:
    raise ValueError(f"{setting} names no files: {location!r}.")
  return [p if "://" in p else os.path.expanduser(p) for p in out]


def file_patterns(location: Location, setting: str = "location") -> List[str]:
  """Globs (no braces) that together name the files of ``location``."""
  return [g for p in split_locations(location, setting) for g in expand_braces(p)]


def list_files(location: Location, setting: str = "location") -> List[str]:
  """The files of ``location``, sorted; logs a warning for files a brace range names but lacks.

  Raises:
    ValueError: naming ``setting`` when nothing matches.
  """
  files = set()
  for item in split_locations(location, setting):
    found = set()
    for pattern in expand_braces(item):
      found.update(tf.io.gfile.glob(pattern))
    expected = _expected_count(item)
    if expected is not None and len(found) < expected:
      logging.warning("%s: %r names %d files but %d exist; reading those.", setting, item,
                      expected, len(found))
    files |= found
  if not files:
    raise ValueError(f"{setting}: no files match {location!r}; check the path (brace ranges "
                     "{00000..00099}, globs and comma-separated lists work).")
  return sorted(files)


class FileLister:
  """A split's patterns for the data sources, checked once when first listed.

  The sources glob what this returns; the first call also checks that the
  location matches something (one clear error naming ``setting``) and warns
  about missing files of a brace range.
  """

  def __init__(self, location: Location, setting: str = "location"):
    self.patterns = file_patterns(location, setting)  # syntax errors show at once
    self.location, self.setting = location, setting
    self._checked = False

  def __call__(self) -> List[str]:
    if not self._checked:
      list_files(self.location, self.setting)
      self._checked = True
    return list(self.patterns)

  def __repr__(self) -> str:
    return f"FileLister({self.location!r})"


# --------------------------------------------------------------- format ---
def _format_of_name(name: str) -> Optional[str]:
  base = name.rstrip("/").rsplit("/", 1)[-1].lower()
  for ext, fmt in _EXTENSION_FORMATS.items():
    # img2dataset and TFDS also write 'x.tfrecord-00000-of-00010'.
    if base.endswith(ext) or f"{ext}-" in base:
      return fmt
  return None


def infer_format(location: Location, format: Optional[str] = None,  # pylint: disable=redefined-builtin
                 setting: str = "location") -> str:
  """``'webdataset'``, ``'tfrecord'``, ``'csv'`` or ``'tsv'``: as given, else from the names.

  Patterns without a telling extension (``data/*``) are listed and their files'
  names decide. Mixed formats are an error.
  """
  if format is not None:
    fmt = {"tar": "webdataset", "wds": "webdataset", "tfrec": "tfrecord"}.get(format, format)
    if fmt not in FORMATS:
      raise ValueError(f"data format {format!r} is not one of {FORMATS}.")
    return fmt
  names = file_patterns(location, setting)
  found = {_format_of_name(p) for p in names}
  if None in found:
    found = {_format_of_name(f) for f in list_files(location, setting)}
  if None in found or len(found) != 1:
    kinds = sorted(str(f) for f in found)
    raise ValueError(f"{setting}: cannot tell the data format of {location!r} from its file "
                     f"names (found {kinds}); name files .tar / .tfrecord / .csv / .tsv or set "
                     f"the format ({', '.join(FORMATS)}).")
  return found.pop()


def _csv_root(location: Location, setting: str) -> Optional[str]:
  """Directory of the CSV files when they share one without globs (else the working directory)."""
  dirs = {os.path.dirname(p) for p in split_locations(location, setting)}
  if len(dirs) == 1:
    folder = dirs.pop()
    if folder and not _GLOB_CHARS.search(folder) and "{" not in folder:
      return folder
  return None


def make_source(location: Location, *, split: str = "train",
                format: Optional[str] = None,  # pylint: disable=redefined-builtin
                caption_key: Optional[str] = None, image_key: Optional[str] = None,
                label_key: Optional[str] = None, image_root: Optional[str] = None,
                setting: str = "location") -> seqio.DataSource:
  """The data source of this package that reads ``location``.

  Args:
    location: files (brace ranges, globs, comma-separated; see the module doc).
    split: the split name the source serves.
    format: ``'webdataset'`` (``'tar'``), ``'tfrecord'``, ``'csv'``, ``'tsv'``;
      None infers it from the names.
    caption_key: tar member extension / TFRecord feature / CSV column of the
      caption (default ``txt``, ``txt``, ``title``).
    image_key: tar member extension / TFRecord feature / CSV column of the
      image (default ``jpg|jpeg|png|webp``, ``jpg``, ``filepath``).
    label_key: tar member holding an integer class (e.g. ``'cls'``) when the
      examples should carry ``'label'``; tar only.
    image_root: CSV: base of relative image paths (default: the CSV files'
      directory).
    setting: the user-facing name of ``location`` for messages
      (e.g. ``'TRAIN_DATA'``).

  Returns:
    A ``WebDatasetSource``, ``TFRecordSource`` or ``CsvSource``; its files are
    listed (and checked) when a dataset is first built.
  """
  fmt = infer_format(location, format, setting)
  files: Dict[str, FileLister] = {split: FileLister(location, setting)}
  image_key = image_key or DEFAULT_IMAGE_KEYS[fmt]
  caption_key = caption_key or DEFAULT_CAPTION_KEYS[fmt]
  if label_key is not None and fmt != "webdataset":
    raise ValueError(f"{setting}: class labels (label_key={label_key!r}) are read from tar "
                     f"shards' KEY.{label_key} members; {fmt} data has none.")
  if fmt == "webdataset":
    keys = (image_key,) if isinstance(image_key, str) else tuple(image_key)
    return WebDatasetSource(files, caption_key=caption_key, image_keys=keys,
                            label_key=label_key, with_labels=label_key is not None)
  if fmt == "tfrecord":
    return TFRecordSource(files, caption_key=caption_key, image_key=image_key)
  root = image_root if image_root is not None else _csv_root(location, setting)
  return CsvSource(files, image_column=image_key, caption_column=caption_key,
                   delimiter="\t" if fmt == "tsv" else ",", image_root=root)
