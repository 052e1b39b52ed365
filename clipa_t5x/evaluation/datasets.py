"""Evaluation data sources: labelled images (zero-shot) and captioned images (retrieval).

Every source is a small frozen dataclass (bindable from gin) with

* ``examples(image_size, text_length, shard_id=0, num_shards=1)``: a fresh
  iterator over this host's share of the examples, as numpy dicts, images
  already decoded and square-resized to ``image_size`` (CLIPA's eval
  transform, ``image_ops.eval_image_preprocessor``), in a fixed order;
* classification sources: ``{'image': uint8 [S, S, 3], 'label': int}`` and
  ``class_names()`` (the data's own names, or None when it has none);
* retrieval sources: ``{'image': uint8 [S, S, 3], 'captions': [str, ...]}``.

Sources:

* ``SeqioTask``: a registered SeqIO eval Task (e.g. ``demo_shapes_eval``);
  with ``captions_key`` set it serves retrieval (one caption per example).
* ``TfdsClassification``: a TFDS data set prepared in ``data_dir``
  (``imagenet2012``, ``imagenet_v2``, ``cifar10``, ...); nothing is downloaded.
* ``ImageFolder``: ``root/<class>/*.jpg``; class names are the folder names
  (sorted) with ``_`` as space.
* ``WebDatasetClassification``: webdataset shards with a ``KEY.cls`` label.
* ``TfdsRetrieval``: TFDS ``coco_captions`` (image + ``captions/text``).
* ``WebDatasetRetrieval``: shards with several captions per image: a JSON
  member holding a list (``KEY.json`` ``{"captions": [...]}``) or text lines.
* ``CsvRetrieval``: a CSV of (image path, caption) rows, several rows per image.

Host sharding: each host reads its own share (TFDS: ``tfds.even_splits``;
files and folders: every ``num_shards``-th image; webdataset: every
``num_shards``-th file, or every ``num_shards``-th example when there are
fewer files than hosts).
"""

import csv
import dataclasses
import json
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from clipa_t5x.data.image_files import IMAGE_EXTENSIONS, has_image_extension
_WNID = re.compile(r"n\d{8}")
Examples = Iterator[Dict[str, Any]]


def _check_shard(shard_id: int, num_shards: int) -> None:
  if num_shards < 1 or not 0 <= shard_id < num_shards:
    raise ValueError(f"shard_id {shard_id} must lie in [0, num_shards={num_shards}).")


class _ImageSource:
  """What the sources share: ``examples`` checks the shard and reads ``_examples``."""

  def examples(self, image_size: int, text_length: int, shard_id: int = 0,
               num_shards: int = 1) -> Examples:
    """This host's examples (see the module docstring)."""
    del text_length  # images only: captions are raw text
    _check_shard(shard_id, num_shards)
    yield from self._examples(image_size, shard_id, num_shards)

  def _examples(self, image_size: int, shard_id: int, num_shards: int) -> Examples:
    raise NotImplementedError


def _map_images(ds, size: int, key: str = "image"):
  """Decodes and resizes ``ds[key]`` with the one evaluation image map.

  ``image_ops.eval_image_preprocessor`` with its raise policy: an evaluation
  set never shrinks silently, so an unreadable image stops the evaluation.
  """
  from clipa_t5x.data import image_ops
  return image_ops.eval_image_preprocessor(ds, {key: size}, key=key)


def _read_files_ds(paths: Sequence[str], extra: Dict[str, Sequence[Any]], size: int):
  """tf.data of decoded, resized images read from ``paths`` with extra columns."""
  import tensorflow as tf
  ds = tf.data.Dataset.from_tensor_slices({"path": list(paths), **{k: list(v) for k, v in
                                                                   extra.items()}})

  @tf.autograph.experimental.do_not_convert
  def read(ex):
    out = {k: v for k, v in ex.items() if k != "path"}
    out["image"] = tf.io.read_file(ex["path"])
    return out

  return _map_images(ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True),
                     size)


def canonical_class_name(name: str) -> str:
  """``'golden_retriever'`` -> ``'golden retriever'`` (folder/TFDS label names)."""
  return " ".join(name.replace("_", " ").split())


def _decode_str(value: Any) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------- SeqIO task
@dataclasses.dataclass(frozen=True)
class SeqioTask:
  """A registered SeqIO eval Task (its preprocessors decode and resize).

  Attributes:
    task: Task name; its examples must carry ``image`` and ``label_key``.
    split: split to read.
    label_key: feature holding the class id (classification).
    captions_key: raw caption feature for retrieval (e.g. ``'text'`` of a
      Task whose preprocessors keep it as a string); None for classification.
  """
  task: str
  split: str = "eval"
  label_key: str = "label"
  captions_key: Optional[str] = None

  def class_names(self) -> Optional[List[str]]:
    return None

  def examples(self, image_size: int, text_length: int, shard_id: int = 0,
               num_shards: int = 1) -> Examples:
    """This host's examples (see the module docstring)."""
    from clipa_t5x.data import dataset as dataset_lib
    _check_shard(shard_id, num_shards)
    ds = dataset_lib.get_eval_examples(self.task, self.split,
                                       {"image": image_size, "text": text_length},
                                       shard_id, num_shards)
    for ex in ds.as_numpy_iterator():
      if self.captions_key is not None:
        yield {"image": ex["image"], "captions": _captions_of(ex[self.captions_key])}
      else:
        yield {"image": ex["image"], "label": ex[self.label_key]}


def _captions_of(value: Any) -> List[str]:
  if isinstance(value, np.ndarray) and value.dtype != object:
    raise ValueError(
        f"captions must be strings, got a {value.dtype} array (tokens?); read a feature that "
        "holds the raw text.")
  values = [value] if isinstance(value, (str, bytes)) else list(np.asarray(value).reshape(-1))
  return [_decode_str(v) for v in values]


# --------------------------------------------------------------------- TFDS
def _tfds_builder(name: str, data_dir: Optional[str]):
  from clipa_t5x.data import tfds_source  # seqio and TF load only when a TFDS set is read
  return tfds_source.prepared_builder(name, data_dir)


def _tfds_split(builder, split: str, shard_id: int, num_shards: int):
  import tensorflow_datasets as tfds
  if split not in builder.info.splits:
    raise ValueError(f"TFDS data set {builder.name!r} has no split {split!r}; it has "
                     f"{sorted(builder.info.splits)}.")
  return tfds.even_splits(split, n=num_shards)[shard_id] if num_shards > 1 else split


def _tfds_dataset(builder, split, image_key: str):
  import tensorflow_datasets as tfds
  # Skip TFDS's decoding: our decoder scales JPEGs in the DCT domain.
  decoders = {image_key: tfds.decode.SkipDecoding()}
  return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                            read_config=tfds.ReadConfig(shuffle_seed=0))


@dataclasses.dataclass(frozen=True)
class TfdsClassification(_ImageSource):
  """A TFDS image classification set already prepared in ``data_dir``.

  Attributes:
    name: TFDS name, e.g. ``'imagenet2012'``, ``'imagenet_v2'``, ``'cifar10'``.
    split: e.g. ``'validation'`` (ImageNet) or ``'test'``.
    data_dir: where it was prepared (None: TFDS's default, ~/tensorflow_datasets).
    image_key: image feature.
    label_key: ClassLabel feature.
  """
  name: str
  split: str = "validation"
  data_dir: Optional[str] = None
  image_key: str = "image"
  label_key: str = "label"

  def class_names(self) -> Optional[List[str]]:
    """The label names; WordNet ids (ImageNet) map to CLIP's curated 1,000 names."""
    feature = _tfds_builder(self.name, self.data_dir).info.features[self.label_key]
    names = list(getattr(feature, "names", None) or [])
    if not names:
      return None
    if len(names) == 1000 and all(_WNID.fullmatch(n) for n in names):
      from clipa_t5x.evaluation import zeroshot
      return zeroshot.load_classnames("imagenet1k")
    return [canonical_class_name(n) for n in names]

  def _examples(self, image_size: int, shard_id: int, num_shards: int) -> Examples:
    builder = _tfds_builder(self.name, self.data_dir)
    for key in (self.image_key, self.label_key):
      if key not in builder.info.features:
        raise ValueError(f"TFDS data set {self.name!r} has no feature {key!r}; it has "
                         f"{sorted(builder.info.features)}.")
    ds = _tfds_dataset(builder, _tfds_split(builder, self.split, shard_id, num_shards),
                       self.image_key)
    ds = ds.map(lambda ex: {"image": ex[self.image_key], "label": ex[self.label_key]})
    yield from _map_images(ds, image_size).as_numpy_iterator()


@dataclasses.dataclass(frozen=True)
class TfdsRetrieval(_ImageSource):
  """TFDS ``coco_captions`` (or any set with an image and a list of captions).

  Attributes:
    name: TFDS name.
    split: e.g. ``'test'`` (Karpathy's 5k test split in ``coco_captions``).
    data_dir: where it was prepared.
    image_key: image feature.
    captions_key: caption text feature; ``'/'`` walks nested features.
  """
  name: str = "coco_captions"
  split: str = "test"
  data_dir: Optional[str] = None
  image_key: str = "image"
  captions_key: str = "captions/text"

  def _examples(self, image_size: int, shard_id: int, num_shards: int) -> Examples:
    builder = _tfds_builder(self.name, self.data_dir)
    ds = _tfds_dataset(builder, _tfds_split(builder, self.split, shard_id, num_shards),
                       self.image_key)
    path = self.captions_key.split("/")

    def pick(ex):
      value = ex
      for part in path:
        if part not in value:
          raise ValueError(f"TFDS data set {self.name!r} has no feature {self.captions_key!r}.")
        value = value[part]
      return {"image": ex[self.image_key], "captions": value}

    for ex in _map_images(ds.map(pick), image_size).as_numpy_iterator():
      yield {"image": ex["image"], "captions": _captions_of(ex["captions"])}


# ------------------------------------------------------------- image folder
def _list_images(folder: str, extensions: Sequence[str]) -> List[str]:
  exts = tuple(e.lower().lstrip(".") for e in extensions)
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if has_image_extension(f, exts) and os.path.isfile(os.path.join(folder, f)))


@dataclasses.dataclass(frozen=True)
class ImageFolder(_ImageSource):
  """``root/<class folder>/<image files>``; labels follow the sorted folder names.

  Attributes:
    root: the directory holding one folder per class.
    class_names_override: names in label order (default: the folder names,
      ``_`` -> space).
    extensions: image file extensions read (case-insensitive).
  """
  root: str
  class_names_override: Optional[Sequence[str]] = None
  extensions: Sequence[str] = IMAGE_EXTENSIONS

  def folders(self) -> List[str]:
    if not os.path.isdir(self.root):
      raise ValueError(f"ImageFolder root {self.root!r} is not a directory; point it at "
                       "root/<class>/*.jpg.")
    folders = sorted(d for d in os.listdir(self.root)
                     if os.path.isdir(os.path.join(self.root, d)) and not d.startswith("."))
    if not folders:
      raise ValueError(f"ImageFolder root {self.root!r} has no class folders; expected "
                       "root/<class>/*.jpg.")
    return folders

  def class_names(self) -> List[str]:
    folders = self.folders()
    if self.class_names_override is not None:
      names = list(self.class_names_override)
      if len(names) != len(folders):
        raise ValueError(f"ImageFolder {self.root!r} has {len(folders)} class folders but "
                         f"{len(names)} class names were given; give one per folder.")
      return names
    return [canonical_class_name(f) for f in folders]

  def files(self) -> Tuple[List[str], List[int]]:
    """All (path, label) pairs, class-major, sorted."""
    paths, labels = [], []
    for label, folder in enumerate(self.folders()):
      found = _list_images(os.path.join(self.root, folder), self.extensions)
      paths += found
      labels += [label] * len(found)
    if not paths:
      raise ValueError(f"ImageFolder {self.root!r} has no images with extensions "
                       f"{list(self.extensions)}.")
    return paths, labels

  def _examples(self, image_size: int, shard_id: int, num_shards: int) -> Examples:
    paths, labels = self.files()
    paths, labels = paths[shard_id::num_shards], labels[shard_id::num_shards]
    if not paths:
      return
    ds = _read_files_ds(paths, {"label": labels}, image_size)
    for ex in ds.as_numpy_iterator():
      yield {"image": ex["image"], "label": ex["label"]}


# --------------------------------------------------------------- webdataset
def _webdataset(pattern, caption_key: str, label_key: Optional[str], shard_id: int,
                num_shards: int, image_keys: Optional[Sequence[str]] = None):
  import seqio
  from clipa_t5x.data import sources
  source = sources.WebDatasetSource({"eval": pattern}, caption_key=caption_key,
                                    image_keys=image_keys, label_key=label_key,
                                    with_labels=label_key is not None)
  files = source.list_shards("eval")
  if num_shards > 1 and len(files) >= num_shards:
    return source.get_dataset("eval", shuffle=False,
                              shard_info=seqio.ShardInfo(index=shard_id, num_shards=num_shards))
  ds = source.get_dataset("eval", shuffle=False)
  return ds.shard(num_shards, shard_id) if num_shards > 1 else ds


@dataclasses.dataclass(frozen=True)
class WebDatasetClassification(_ImageSource):
  """Webdataset tar shards whose samples carry an integer ``KEY.cls`` label.

  Attributes:
    pattern: glob(s) of the tar files.
    label_key: label member extension.
    class_names_file: optional JSON list of class names (e.g. the demo's
      ``classes.json``); None: give them in the eval config.
    image_keys: image member extensions, tried in order (None:
      ``sources.WEBDATASET_IMAGE_KEYS``).
  """
  pattern: Any
  label_key: str = "cls"
  class_names_file: Optional[str] = None
  image_keys: Optional[Sequence[str]] = None

  def class_names(self) -> Optional[List[str]]:
    if self.class_names_file is None:
      return None
    with open(self.class_names_file) as f:
      return list(json.load(f))

  def _examples(self, image_size: int, shard_id: int, num_shards: int) -> Examples:
    # The label member doubles as the "caption", so samples need no text.
    ds = _webdataset(self.pattern, self.label_key, self.label_key, shard_id, num_shards,
                     self.image_keys)
    ds = ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
    for ex in _map_images(ds, image_size).as_numpy_iterator():
      if ex["label"] < 0:
        raise ValueError("a webdataset sample has a missing or bad label (.cls); fix the "
                         "shards or drop those samples.")
      yield ex


@dataclasses.dataclass(frozen=True)
class WebDatasetRetrieval(_ImageSource):
  """Webdataset shards with one or more captions per image.

  Attributes:
    pattern: glob(s) of the tar files.
    caption_key: member holding the captions: a ``json`` member (a list, or an
      object whose ``json_field`` is a list or a string), or a text member
      whose non-empty lines are the captions.
    json_field: the field of a JSON object holding the captions.
    image_keys: image member extensions, tried in order (None:
      ``sources.WEBDATASET_IMAGE_KEYS``).
  """
  pattern: Any
  caption_key: str = "json"
  json_field: str = "captions"
  image_keys: Optional[Sequence[str]] = None

  def parse(self, raw: bytes) -> List[str]:
    """Captions of one sample from its raw member bytes."""
    text = _decode_str(raw)
    if self.caption_key.lower().endswith("json"):
      try:
        value = json.loads(text)
      except json.JSONDecodeError as e:
        raise ValueError(f"a .{self.caption_key} member is not valid JSON ({e}).") from None
      if isinstance(value, dict):
        if self.json_field not in value:
          raise ValueError(f"a .{self.caption_key} member has no field {self.json_field!r} "
                           f"(it has {sorted(value)}); set json_field.")
        value = value[self.json_field]
      if isinstance(value, str):
        value = [value]
      if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValueError(f"captions in .{self.caption_key} must be a list of strings.")
      return [c.strip() for c in value if c.strip()]
    return [line.strip() for line in text.splitlines() if line.strip()]

  def _examples(self, image_size: int, shard_id: int, num_shards: int) -> Examples:
    ds = _webdataset(self.pattern, self.caption_key, None, shard_id, num_shards,
                     self.image_keys)
    ds = ds.map(lambda ex: {"image": ex["image"], "text": ex["text"]})
    for ex in _map_images(ds, image_size).as_numpy_iterator():
      yield {"image": ex["image"], "captions": self.parse(ex["text"])}


# ---------------------------------------------------------------------- CSV
@dataclasses.dataclass(frozen=True)
class CsvRetrieval(_ImageSource):
  """A CSV of (image path, caption) rows; rows of one image are grouped.

  Attributes:
    path: the CSV file (with a header row).
    image_column: column of image paths (relative ones are under ``image_root``).
    caption_column: column of captions.
    image_root: base of relative paths (default: the CSV's directory).
    delimiter: field separator (``'\\t'`` for TSV).
  """
  path: str
  image_column: str = "filepath"
  caption_column: str = "caption"
  image_root: Optional[str] = None
  delimiter: str = ","

  def rows(self) -> Tuple[List[str], List[List[str]]]:
    """Image paths in first-appearance order and the captions of each."""
    if not os.path.isfile(self.path):
      raise ValueError(f"CSV file {self.path!r} does not exist.")
    root = self.image_root or os.path.dirname(os.path.abspath(self.path))
    groups: Dict[str, List[str]] = {}
    with open(self.path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f, delimiter=self.delimiter)
      for column in (self.image_column, self.caption_column):
        if column not in (reader.fieldnames or []):
          raise ValueError(f"CSV {self.path!r} has no column {column!r}; it has "
                           f"{reader.fieldnames}. Set image_column/caption_column.")
      for row in reader:
        image = os.path.join(root, row[self.image_column])
        caption = (row[self.caption_column] or "").strip()
        groups.setdefault(image, [])
        if caption:
          groups[image].append(caption)
    if not groups:
      raise ValueError(f"CSV {self.path!r} has no rows.")
    empty = [p for p, c in groups.items() if not c]
    if empty:
      raise ValueError(f"CSV {self.path!r}: image {empty[0]!r} has no non-empty caption.")
    return list(groups), list(groups.values())

  def _examples(self, image_size: int, shard_id: int, num_shards: int) -> Examples:
    paths, captions = self.rows()
    index = list(range(shard_id, len(paths), num_shards))
    if not index:
      return
    ds = _read_files_ds([paths[i] for i in index], {"index": index}, image_size)
    for ex in ds.as_numpy_iterator():
      yield {"image": ex["image"], "captions": captions[int(ex["index"])]}
