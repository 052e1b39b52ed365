"""Ready-made evaluation lists, each from one location setting (bound from gin macros).

* ``imagenet_zeroshot(data)``: zero-shot ImageNet-1k with CLIP's 1,000 class
  names and 80 templates, from TFDS ``imagenet2012`` prepared in ``data`` or
  the validation set as an ImageFolder at ``data`` (``gin/evals/imagenet.gin``,
  macro ``IMAGENET_DATA``);
* ``zeroshot_suite(data)``: every classification set of the shipped class-name
  lists that is present under ``data`` (``gin/runs/eval_zeroshot_suite.gin``);
* ``user_data_evaluators(data, ...)``: your own eval data, read with the
  settings of the train data (``gin/runs/custom_data.gin``).

Each factory checks what it can when gin calls it, i.e. before training
starts: a missing or unprepared data set stops the run with one line that
names the setting.
"""

import glob
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from clipa_t5x import paths
from clipa_t5x.data import user_data as user_data_lib
from clipa_t5x.evaluation import datasets
from clipa_t5x.evaluation import zeroshot
from clipa_t5x.evaluation.evaluators import RetrievalEvalConfig, ZeroShotEvalConfig

# Shipped class-name list -> (TFDS name, split). Lists without a TFDS
# equivalent here are found only as ImageFolders (DATA/<list name>/<class>/*).
TFDS_NAMES: Dict[str, Tuple[str, str]] = {
    "imagenet1k": ("imagenet2012", "validation"),
    "caltech101": ("caltech101", "test"),
    "flowers": ("oxford_flowers102", "test"),
    "pets": ("oxford_iiit_pet", "test"),
    "mnist": ("mnist", "test"),
    "svhn": ("svhn_cropped", "test"),
    "eurosat": ("eurosat/rgb", "train"),
    "pcam": ("patch_camelyon", "test"),
    "dmlab": ("dmlab", "test"),
    "diabetic_retinopathy": ("diabetic_retinopathy_detection/btgraham-300", "test"),
}
IMAGENET_CLASSES = 1000


def _missing(setting: str, what: str) -> ValueError:
  return ValueError(
      f"{setting} is not set: {what}. Set --gin.{setting}=\"'/path'\", or --gin.EVALUATORS=[] "
      "to run without this evaluation.")


def _tfds_prepared(name: str, data_dir: str) -> bool:
  """Whether TFDS ``name`` (``'eurosat/rgb'``) has a prepared copy in ``data_dir``."""
  # A prepared set has DATA_DIR/NAME[/CONFIG]/VERSION/dataset_info.json; an ImageFolder of the
  # same name has not (and asking TFDS about it only logs warnings).
  info = os.path.join(data_dir, name, "*", "dataset_info.json")
  if "://" in data_dir:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if not tf.io.gfile.glob(info):
      return False
  elif not glob.glob(info):
    return False
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    return tfds.builder(name, data_dir=data_dir).is_prepared()
  except Exception:  # pylint: disable=broad-except  (unknown name, broken metadata)
    return False


def _num_labels(source: Any) -> int:
  if isinstance(source, datasets.ImageFolder):
    return len(source.folders())
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  feature = tfds.builder(source.name, data_dir=source.data_dir).info.features[source.label_key]
  return int(feature.num_classes)


def classification_source(data: str, key: str, tfds_name: Optional[str] = None,
                          split: Optional[str] = None) -> Optional[Any]:
  """The source of data set ``key`` under ``data``, or None when it is not there.

  Looked for, in order: TFDS ``tfds_name`` prepared in ``data`` (a TFDS
  ``data_dir``), then ``data/<key>/`` as an ImageFolder with one folder per
  class of the list.

  Args:
    data: a directory.
    key: a shipped class-name list (``'imagenet1k'``, ``'pets'``, ...).
    tfds_name: TFDS name (default ``TFDS_NAMES[key]``).
    split: TFDS split (default ``TFDS_NAMES[key]``'s).
  """
  default_name, default_split = TFDS_NAMES.get(key, (None, "test"))
  tfds_name, split = tfds_name or default_name, split or default_split
  if tfds_name and _tfds_prepared(tfds_name, data):
    return datasets.TfdsClassification(tfds_name, split, data_dir=data)
  expected = len(zeroshot.load_classnames(key))
  root = os.path.join(data, key)
  if os.path.isdir(root):
    folder = datasets.ImageFolder(root)
    try:
      if len(folder.folders()) == expected:
        return folder
    except ValueError:
      pass
  return None


def imagenet_zeroshot(data: Optional[str], name: str = "imagenet", batch_size: int = 1024,
                      num_examples: Optional[int] = None,
                      templates: Union[str, Sequence[str]] = "imagenet1k",
                      tfds_name: str = "imagenet2012", split: str = "validation",
                      setting: str = "IMAGENET_DATA") -> ZeroShotEvalConfig:
  """Zero-shot ImageNet-1k: CLIP's 1,000 names, 80 templates (``{name}/top1``, ``/top5``).

  Args:
    data: a TFDS ``data_dir`` holding ``imagenet2012`` prepared (``tfds build
      imagenet2012`` with the manual download; local or ``gs://``), or a local
      ImageFolder of the 50,000
      validation images: 1,000 folders named by WordNet id (``n01440764/``...),
      whose sorted order is CLIP's label order.
    name: metric prefix.
    batch_size, num_examples: as ``ZeroShotEvalConfig``'s.
    templates: package-data key or a list.
    tfds_name: TFDS name looked for in ``data``.
    split: TFDS split.
    setting: the name of ``data`` in messages (the gin macro).

  Raises:
    ValueError: one line naming ``setting`` when the data is not there.
  """
  what = (f"zero-shot ImageNet needs TFDS {tfds_name} prepared in a data_dir, or the "
          "validation set as an ImageFolder (one folder per WordNet id)")
  if not data:
    raise _missing(setting, what)
  data = os.path.expanduser(data)
  if not paths.isdir(data):
    raise ValueError(f"{setting}={data!r} is not a directory: {what}.")
  if _tfds_prepared(tfds_name, data):
    source = datasets.TfdsClassification(tfds_name, split, data_dir=data)
  elif "://" in data:
    raise ValueError(f"{setting}={data!r} holds no prepared TFDS {tfds_name} (an ImageFolder "
                     f"must be local): {what}.")
  else:
    folders = datasets.ImageFolder(data)
    try:
      count = len(folders.folders())
    except ValueError:
      count = 0
    if count != IMAGENET_CLASSES:
      raise ValueError(f"{setting}={data!r} holds neither a prepared TFDS {tfds_name} nor an "
                       f"ImageFolder of {IMAGENET_CLASSES} class folders (found {count} "
                       f"folders): {what}.")
    source = folders
  return ZeroShotEvalConfig(name=name, source=source, class_names="imagenet1k",
                            templates=templates, batch_size=batch_size,
                            num_examples=num_examples)


def zeroshot_suite(data: Optional[Union[str, Sequence[str]]],
                   names: Optional[Sequence[str]] = None, batch_size: int = 256,
                   num_examples: Optional[int] = None,
                   tfds_names: Optional[Mapping[str, Tuple[str, str]]] = None,
                   setting: str = "ZEROSHOT_DATA") -> List[ZeroShotEvalConfig]:
  """Zero-shot evaluations of every shipped class-name list whose data is under ``data``.

  Args:
    data: directory (or several, comma-separated or a list) searched as in
      ``classification_source``: TFDS data_dirs and/or roots of ImageFolders
      named by list (``DATA/pets/<class>/*.jpg``).
    names: the lists to look for (default: every shipped one).
    batch_size, num_examples: as ``ZeroShotEvalConfig``'s.
    tfds_names: overrides of ``TFDS_NAMES`` (list -> (TFDS name, split)).
    setting: the name of ``data`` in messages (the gin macro).

  Returns:
    One ``ZeroShotEvalConfig`` per data set found, named by its list, with
    the list's class names and templates (``imagenet1k`` templates for lists
    without their own).
  """
  if not data:
    raise _missing(setting, "the zero-shot suite needs the folder(s) holding the data sets")
  roots = user_data_lib.split_locations(data, setting)
  table = {**TFDS_NAMES, **dict(tfds_names or {})}
  wanted = list(names) if names is not None else zeroshot.available_classnames()
  templates = set(zeroshot.available_templates())
  out, absent = [], []
  for key in wanted:
    tfds_name, split = table.get(key, (None, None))
    source = None
    for root in roots:
      source = classification_source(root, key, tfds_name, split)
      if source is not None:
        break
    if source is None:
      absent.append(key)
      continue
    expected = len(zeroshot.load_classnames(key))
    if _num_labels(source) != expected:
      logging.warning("%s: %s has %d labels but the %s class list %d; skipped.", setting,
                      source, _num_labels(source), key, expected)
      absent.append(key)
      continue
    out.append(ZeroShotEvalConfig(
        name=key, source=source, class_names=key,
        templates=key if key in templates else "imagenet1k", batch_size=batch_size,
        num_examples=num_examples))
  if not out:
    raise ValueError(f"{setting}={data!r}: none of the data sets {wanted} is there (TFDS "
                     f"prepared there, or DATA/<name>/<class>/*.jpg).")
  if absent:
    logging.warning("%s: not found, not evaluated: %s", setting, ", ".join(absent))
  return out


def user_data_evaluators(data: Optional[Union[str, Sequence[str]]],
                         class_names: Optional[Union[str, Sequence[str]]] = None,
                         retrieval: bool = True,
                         format: Optional[str] = None,  # pylint: disable=redefined-builtin
                         caption_key: Optional[str] = None, image_key: Optional[str] = None,
                         label_key: str = "cls", image_root: Optional[str] = None,
                         templates: Union[str, Sequence[str]] = "imagenet1k",
                         batch_size: int = 256, num_examples: Optional[int] = None,
                         name: str = "user_data",
                         setting: str = "EVAL_DATA") -> List[Any]:
  """Evaluations of your own held-out data, read like the train data.

  Args:
    data: the eval files (as ``TRAIN_DATA``: brace ranges, globs, lists); None
      or empty: no evaluation.
    class_names: zero-shot classification of tar shards with an integer
      ``KEY.<label_key>``: the names in label order, a file (JSON list, or one
      name per line) or a shipped list's key; None: no classification.
    retrieval: image<->text retrieval from the captions (tar: each sample's
      caption member, lines or a JSON list; CSV/TSV: rows of one image grouped).
    format, caption_key, image_key, image_root: as for the train data
      (``clipa_t5x.data.user_data.make_source``).
    label_key: tar member holding the class id.
    templates: zero-shot prompt templates (package-data key or list).
    batch_size, num_examples: as ``ZeroShotEvalConfig``'s.
    name: metric prefix (``user_data/top1``, ``user_data_retrieval/...``).
    setting: the name of ``data`` in messages.

  Returns:
    ``ZeroShotEvalConfig`` / ``RetrievalEvalConfig`` list.
  """
  if not data:
    return []
  fmt = user_data_lib.infer_format(data, format, setting)
  files = user_data_lib.FileLister(data, setting)
  image_keys = (image_key,) if image_key else None
  out: List[Any] = []
  if class_names is not None:
    if fmt != "webdataset":
      raise ValueError(f"{setting}: zero-shot classification reads KEY.{label_key} labels from "
                       f"tar shards; {fmt} data has none (set its class names to None).")
    out.append(ZeroShotEvalConfig(
        name=name, source=datasets.WebDatasetClassification(
            files, label_key=label_key, image_keys=image_keys),
        class_names=zeroshot.parse_class_names(class_names, setting), templates=templates,
        batch_size=batch_size, num_examples=num_examples))
  if retrieval:
    if fmt == "webdataset":
      source = datasets.WebDatasetRetrieval(files, caption_key=caption_key or "txt",
                                            image_keys=image_keys)
    elif fmt in ("csv", "tsv"):
      paths = user_data_lib.list_files(data, setting)
      if len(paths) != 1:
        raise ValueError(f"{setting}: retrieval reads one CSV/TSV file, {len(paths)} match "
                         f"{data!r}.")
      source = datasets.CsvRetrieval(
          paths[0], image_column=image_key or "filepath", caption_column=caption_key or "title",
          image_root=image_root, delimiter="\t" if fmt == "tsv" else ",")
    else:
      raise ValueError(f"{setting}: retrieval from TFRecord eval data is not supported; write "
                       "the eval set as tar shards (python -m clipa_t5x.data.make_shards) or CSV.")
    out.append(RetrievalEvalConfig(name=f"{name}_retrieval", source=source,
                                   batch_size=batch_size, num_examples=num_examples))
  return out
