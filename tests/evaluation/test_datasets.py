"""Tests of clipa_t5x.evaluation.datasets on tiny local data (fake TFDS sets, no download).

Every image is a solid colour that encodes its index, so after decoding and
resizing we can check which example (and label / captions) came out.
"""

import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from clipa_t5x.evaluation import datasets

SIZE = 8


def _colour(i):
  return (10 * i % 250, 255 - 7 * i % 250, 3 * i % 250)


def _image(i, size=12):
  return np.full((size, size + 2, 3), _colour(i), np.uint8)


def _png(i) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(_image(i)).save(buf, format="PNG")
  return buf.getvalue()


def _index_of(image):
  """Which example an output image is, from its colour."""
  assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
  colour = tuple(int(v) for v in image[0, 0])
  assert (image == image[0, 0]).all()
  return [_colour(i) for i in range(100)].index(colour)


# ---------------------------------------------------------------- fake TFDS
class ClipaFakeClassification(tfds.core.GeneratorBasedBuilder):
  """12 images, 3 classes with TFDS-style label names."""
  VERSION = tfds.core.Version("1.0.0")
  url_infos = {}  # nothing to download (and no checksum file lookup)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=["golden_retriever", "tabby_cat", "red_fox"]),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"validation": self._generate_examples(12)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": _image(i), "label": i % 3}


class ClipaFakeCaptions(tfds.core.GeneratorBasedBuilder):
  """coco_captions' structure: image + captions/text, 1-3 captions per image."""
  VERSION = tfds.core.Version("1.0.0")
  url_infos = {}  # nothing to download (and no checksum file lookup)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"test": self._generate_examples(7)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": _image(i),
                "captions": {"text": [f"image {i} caption {j}" for j in range(1 + i % 3)]}}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  for cls in (ClipaFakeClassification, ClipaFakeCaptions):
    cls(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_classification_reads_labels_and_names(tfds_dir):
  src = datasets.TfdsClassification("clipa_fake_classification", "validation", tfds_dir)
  assert src.class_names() == ["golden retriever", "tabby cat", "red fox"]
  examples = list(src.examples(SIZE, 8))
  order = [_index_of(e["image"]) for e in examples]
  assert sorted(order) == list(range(12))
  assert order == [_index_of(e["image"]) for e in src.examples(SIZE, 8)]  # a fixed order
  assert [int(e["label"]) for e in examples] == [i % 3 for i in order]


def test_tfds_classification_host_shards_partition_the_split(tfds_dir):
  src = datasets.TfdsClassification("clipa_fake_classification", "validation", tfds_dir)
  seen = []
  for shard in range(3):
    part = [_index_of(e["image"]) for e in src.examples(SIZE, 8, shard, 3)]
    assert len(part) == 4
    seen += part
  assert sorted(seen) == list(range(12))


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
  src = datasets.TfdsClassification("clipa_fake_classification", "validation", str(tmp_path))
  with pytest.raises(ValueError, match="not prepared in data_dir") as info:
    list(src.examples(SIZE, 8))
  assert "\n" not in str(info.value)


def test_tfds_unknown_split_is_a_clear_error(tfds_dir):
  src = datasets.TfdsClassification("clipa_fake_classification", "train", tfds_dir)
  with pytest.raises(ValueError, match=r"no split 'train'; it has \['validation'\]"):
    list(src.examples(SIZE, 8))


def test_tfds_retrieval_reads_coco_structure(tfds_dir):
  src = datasets.TfdsRetrieval("clipa_fake_captions", "test", tfds_dir)
  examples = list(src.examples(SIZE, 8))
  assert len(examples) == 7
  for e in examples:
    i = _index_of(e["image"])
    assert e["captions"] == [f"image {i} caption {j}" for j in range(1 + i % 3)]


# ------------------------------------------------------------- image folder
def _write_folder(root, classes, per_class=3):
  index = 0
  for name in classes:
    os.makedirs(root / name)
    for j in range(per_class):
      Image.fromarray(_image(index)).save(root / name / f"{j}.png")
      index += 1
  (root / classes[0] / "notes.txt").write_text("not an image")


def test_image_folder_labels_follow_sorted_folders(tmp_path):
  _write_folder(tmp_path, ["b_class", "a_class", "golden_retriever"])
  src = datasets.ImageFolder(str(tmp_path))
  assert src.class_names() == ["a class", "b class", "golden retriever"]
  examples = list(src.examples(SIZE, 8))
  # a_class holds images 3-5, b_class 0-2, golden_retriever 6-8.
  got = {_index_of(e["image"]): int(e["label"]) for e in examples}
  assert got == {3: 0, 4: 0, 5: 0, 0: 1, 1: 1, 2: 1, 6: 2, 7: 2, 8: 2}
  shards = [[_index_of(e["image"]) for e in src.examples(SIZE, 8, s, 2)] for s in range(2)]
  assert sorted(shards[0] + shards[1]) == list(range(9)) and len(shards[0]) == 5


def test_image_folder_given_names_and_errors(tmp_path):
  _write_folder(tmp_path, ["x", "y"])
  assert datasets.ImageFolder(str(tmp_path), ["cat", "dog"]).class_names() == ["cat", "dog"]
  with pytest.raises(ValueError, match="2 class folders but 1 class names"):
    datasets.ImageFolder(str(tmp_path), ["cat"]).class_names()
  with pytest.raises(ValueError, match="not a directory"):
    datasets.ImageFolder(str(tmp_path / "missing")).class_names()


# --------------------------------------------------------------- webdataset
def _add(tar, name, data: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _write_shards(root, n, num_files, members):
  paths = []
  for f in range(num_files):
    path = str(root / f"eval-{f:05d}.tar")
    with tarfile.open(path, "w") as tar:
      for i in range(f, n, num_files):
        key = f"{i:09d}"
        _add(tar, f"{key}.png", _png(i))
        for ext, data in members(i).items():
          _add(tar, f"{key}.{ext}", data)
    paths.append(path)
  return str(root / "eval-*.tar")


@pytest.mark.slow
def test_webdataset_classification_reads_cls(tmp_path):
  pattern = _write_shards(tmp_path, 10, 2, lambda i: {"cls": str(i % 4).encode()})
  (tmp_path / "classes.json").write_text(json.dumps(["a", "b", "c", "d"]))
  src = datasets.WebDatasetClassification(pattern, class_names_file=str(tmp_path / "classes.json"))
  assert src.class_names() == ["a", "b", "c", "d"]
  got = {_index_of(e["image"]): int(e["label"]) for e in src.examples(SIZE, 8)}
  assert got == {i: i % 4 for i in range(10)}
  # Two hosts over two files (file-level) and three hosts (example-level).
  for hosts in (2, 3):
    parts = [[_index_of(e["image"]) for e in src.examples(SIZE, 8, s, hosts)]
             for s in range(hosts)]
    assert sorted(sum(parts, [])) == list(range(10))


def test_webdataset_retrieval_json_list_and_text_lines(tmp_path):
  def members(i):
    caps = [f"img {i} cap {j}" for j in range(1 + i % 3)]
    return {"json": json.dumps({"captions": caps, "key": i}).encode(),
            "txt": "\n".join(caps + [""]).encode()}

  pattern = _write_shards(tmp_path, 6, 1, members)
  for src in (datasets.WebDatasetRetrieval(pattern),
              datasets.WebDatasetRetrieval(pattern, caption_key="txt")):
    for e in src.examples(SIZE, 8):
      i = _index_of(e["image"])
      assert e["captions"] == [f"img {i} cap {j}" for j in range(1 + i % 3)]
  assert datasets.WebDatasetRetrieval("x").parse(b'["a", " b "]') == ["a", "b"]
  with pytest.raises(ValueError, match="no field 'captions'"):
    datasets.WebDatasetRetrieval("x").parse(b'{"text": "a"}')


# ---------------------------------------------------------------------- CSV
def test_csv_retrieval_groups_rows_by_image(tmp_path):
  (tmp_path / "img").mkdir()
  rows = []
  for i in range(5):
    Image.fromarray(_image(i)).save(tmp_path / "img" / f"{i}.png")
  for j in range(3):  # interleaved rows: grouping must not need sorted input
    for i in range(5):
      if j <= i % 3:
        rows.append({"filepath": f"img/{i}.png", "caption": f"{i}-{j}"})
  with open(tmp_path / "data.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, ["filepath", "caption"])
    writer.writeheader()
    writer.writerows(rows)
  src = datasets.CsvRetrieval(str(tmp_path / "data.csv"))
  examples = list(src.examples(SIZE, 8))
  assert [_index_of(e["image"]) for e in examples] == list(range(5))
  for i, e in enumerate(examples):
    assert e["captions"] == [f"{i}-{j}" for j in range(1 + i % 3)]
  assert [_index_of(e["image"]) for e in src.examples(SIZE, 8, 1, 2)] == [1, 3]
  with pytest.raises(ValueError, match="no column 'text'"):
    datasets.CsvRetrieval(str(tmp_path / "data.csv"), caption_column="text").rows()
