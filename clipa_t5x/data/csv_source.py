"""SeqIO data source for CSV/TSV files listing image paths and captions.

Each row names an image file (absolute, ``gs://``, or relative to
``image_root``) and its caption, e.g. the ``filepath,title`` CSVs of
open_clip or a ``url<TAB>caption`` TSV of local copies. Files are read with
``tf.io.read_file`` (so ``gs://`` works) inside the pipeline.

Parsing is by TF ops: the first line is the header and names the columns;
fields are split on the delimiter, with RFC 4180 quoting (a quoted field may
hold the delimiter and doubled quotes, not a line break). A row with too few
fields, an empty path or an empty caption is skipped and counted
(``bad_records``: ``missing_image`` / ``missing_caption``); a non-UTF-8
caption is repaired and counted. An image file that cannot be read (missing,
permission) drops the example, counted as ``missing_image``.

Sharding is per CSV file (split big lists into several files), as for the
other sources.
"""

from typing import Mapping, Optional

import tensorflow as tf

from clipa_t5x.data import bad_records
from clipa_t5x.data.sources import FilePatterns, ShardedFileSource, fix_caption


def _split_row(line: tf.Tensor, delimiter: str) -> tf.Tensor:
  """Fields of one line; quoted fields may hold the delimiter and ``""``."""
  d = "\\t" if delimiter == "\t" else "\\" + delimiter
  # Each field: a quoted run or an unquoted run up to the delimiter. The
  # regex marks field ends with \x00 (absent from text) so split is exact.
  marked = tf.strings.regex_replace(
      tf.strings.join([line, delimiter]),
      f'("(?:[^"]|"")*"|[^{d}"]*){d}', "\\1\x00")
  fields = tf.strings.split(marked, "\x00")[:-1]
  quoted = tf.strings.regex_full_match(fields, '"(?s:.*)"')
  unquoted = tf.strings.regex_replace(
      tf.strings.regex_replace(fields, '^"|"$', ""), '""', '"')
  return tf.where(quoted, unquoted, fields)


class CsvSource(ShardedFileSource):
  """Image-path + caption rows of CSV/TSV files, sharded by file.

  Example::

    source = CsvSource({'train': 'data/cc3m_train.csv'},
                       image_column='filepath', caption_column='title',
                       image_root='data/images')
  """

  def __init__(self, split_to_filepattern: Mapping[str, FilePatterns],
               image_column: str = "filepath",
               caption_column: str = "title", delimiter: str = ",",
               image_root: Optional[str] = None,
               num_input_examples: Optional[Mapping[str, int]] = None,
               cycle_length: int = 4, caching_permitted: bool = True):
    """Creates the source.

    Args:
      split_to_filepattern, num_input_examples, cycle_length,
        caching_permitted: as ``ShardedFileSource``'s (the files: CSV).
      image_column: header name of the image path column.
      caption_column: header name of the caption column.
      delimiter: one character, ',' for CSV, '\\t' for TSV.
      image_root: directory relative paths are joined to; None leaves them
        relative to the working directory.
    """
    if len(delimiter) != 1 or delimiter in '"\n':
      raise ValueError(f"delimiter must be one character other than a quote "
                       f"or newline, got {delimiter!r}; use ',' or '\\t'.")
    if image_column == caption_column:
      raise ValueError(f"image_column and caption_column are both "
                       f"{image_column!r}; name two different columns.")
    super().__init__(split_to_filepattern, "CSV", num_input_examples, cycle_length,
                     caching_permitted)
    self._image_column, self._caption_column = image_column, caption_column
    self._delimiter = delimiter
    self._root = image_root.rstrip("/") + "/" if image_root else ""

  def _header(self, path: str):
    with tf.io.gfile.GFile(path, "r") as f:
      line = f.readline().rstrip("\r\n")
    fields = [s.decode() for s in _split_row(tf.constant(line),
                                              self._delimiter).numpy()]
    missing = [c for c in (self._image_column, self._caption_column)
               if c not in fields]
    if missing:
      raise ValueError(f"{path}: header {fields} lacks column(s) {missing}; "
                       "set image_column/caption_column to its names.")
    return fields.index(self._image_column), fields.index(
        self._caption_column), len(fields)

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None, shard_info=None,
                  **kwargs) -> tf.data.Dataset:
    """See ``ShardedFileSource.get_dataset``; checks the headers first."""
    files = self.list_shards(split)
    if files:  # Column positions from the first file (all must agree).
      self._columns = self._header(files[0])
    return super().get_dataset(split, shuffle=shuffle, seed=seed,
                               shard_info=shard_info, **kwargs)

  def _read_file(self, path: tf.Tensor, split: str) -> tf.data.Dataset:
    del split
    image_col, caption_col, _ = self._columns
    need = max(image_col, caption_col) + 1
    delimiter, root = self._delimiter, self._root

    @tf.autograph.experimental.do_not_convert
    def parse(line):
      fields = _split_row(tf.strings.regex_replace(line, "\r$", ""),
                          delimiter)
      n = tf.size(fields)
      padded = tf.concat([fields, tf.fill([need], "")], 0)
      image_path = tf.strings.strip(padded[image_col])
      text, fix_op = fix_caption(padded[caption_col])
      has_image = (n >= need) & (tf.strings.length(image_path) > 0)
      has_caption = (n >= need) & (tf.strings.length(text) > 0)
      absolute = tf.strings.regex_full_match(image_path, r"(/|[a-z0-9]+://).*")
      full = tf.where(absolute, image_path,
                      tf.strings.join([root, image_path]))
      updates = [
          fix_op,
          bad_records.count("missing_image", tf.cast(~has_image, tf.int64)),
          bad_records.count("missing_caption",
                            tf.cast(has_image & ~has_caption, tf.int64)),
      ]
      with tf.control_dependencies(updates):
        return {"key": tf.identity(image_path), "path": full, "text": text,
                "ok": has_image & has_caption, "end": tf.constant(False)}

    @tf.autograph.experimental.do_not_convert
    def read_image(ex):
      image = tf.cond(ex["end"], lambda: tf.constant(""),
                      lambda: tf.io.read_file(ex["path"]))
      return {"key": ex["key"], "image": image, "text": ex["text"],
              "end": ex["end"]}

    rows = (tf.data.TextLineDataset(path).skip(1)
            .filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
            .map(parse).filter(lambda ex: ex["ok"]))
    # An unreadable image file fails only its own element: the gap in the
    # numbering counts it; an end sentinel makes a failure at the end show.
    end = {"key": "", "path": "", "text": "", "ok": True, "end": True}
    rows = rows.concatenate(tf.data.Dataset.from_tensors(end)).enumerate()
    read = rows.map(lambda i, ex: (i, read_image(ex))).ignore_errors()

    @tf.autograph.experimental.do_not_convert
    def step(last, item):
      index, ex = item
      update = bad_records.count("missing_image",
                                 tf.maximum(index - last - 1, 0))
      with tf.control_dependencies([update]):
        ex = {k: tf.identity(v) for k, v in ex.items()}
      return tf.maximum(last, index), ex

    return read.scan(tf.constant(-1, tf.int64), step).filter(
        lambda ex: tf.logical_not(ex["end"])).map(
            lambda ex: {k: v for k, v in ex.items() if k != "end"})
