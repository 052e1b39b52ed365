"""Tests of clipa_t5x.evaluation.suites on tiny local stand-ins (ImageFolders, TFDS dirs)."""

import copy
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from clipa_t5x import gin_utils
from clipa_t5x.evaluation import datasets
from clipa_t5x.evaluation import evaluators
from clipa_t5x.evaluation import suites
from clipa_t5x.evaluation import zeroshot

SIZE = 16


class ClipaFakeImagenet(tfds.core.GeneratorBasedBuilder):
  """1,000 classes with WordNet-id names, four validation images."""
  VERSION = tfds.core.Version("1.0.0")
  url_infos = {}  # nothing to download (and no checksum file lookup)

  def _info(self):
    names = [f"n{i:08d}" for i in range(1000)]
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=names)}))

  def _split_generators(self, dl_manager):
    return {"validation": self._generate_examples()}

  def _generate_examples(self):
    for i in range(4):
      yield i, {"image": np.full((20, 24, 3), 60 * i, np.uint8), "label": 7 * i}


def _image_folder(root, num_classes, with_images=(0, 1, 2)):
  """``num_classes`` class folders, one small JPEG in each of ``with_images``."""
  for c in range(num_classes):
    os.makedirs(os.path.join(root, f"n{c:08d}"), exist_ok=True)
  for c in with_images:
    Image.fromarray(np.full((12, 10, 3), 40 * c, np.uint8)).save(
        os.path.join(root, f"n{c:08d}", "0.jpg"))
  return str(root)


@pytest.fixture(scope="module")
def fake_tfds(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  ClipaFakeImagenet(data_dir=data_dir).download_and_prepare()
  return data_dir


def _fake_encoders(dim=8):
  rng = np.random.default_rng(0)
  image_proj = rng.normal(size=(3, dim))
  text_proj = rng.normal(size=(30_600, dim))

  def encode_images(images):
    return images.reshape(images.shape[0], -1, 3).mean(1) @ image_proj

  def encode_texts(tokens):
    return text_proj[tokens].sum(1)

  return encode_images, encode_texts


def test_imagenet_without_data_names_the_macro(tmp_path):
  with pytest.raises(ValueError, match=r"^IMAGENET_DATA is not set: zero-shot ImageNet needs"):
    suites.imagenet_zeroshot(None)
  with pytest.raises(ValueError, match=r"IMAGENET_DATA=.* is not a directory"):
    suites.imagenet_zeroshot(str(tmp_path / "nope"))
  _image_folder(tmp_path / "ten", 10)
  with pytest.raises(ValueError, match=r"IMAGENET_DATA=.*found 10 folders"):
    suites.imagenet_zeroshot(str(tmp_path / "ten"))


def test_imagenet_from_an_image_folder_evaluates_with_clip_names(tmp_path):
  config = suites.imagenet_zeroshot(_image_folder(tmp_path / "val", 1000), batch_size=4)
  assert isinstance(config.source, datasets.ImageFolder)
  assert config.class_names == "imagenet1k" and config.templates == "imagenet1k"
  assert len(zeroshot.load_templates("imagenet1k")) == 80
  spec = evaluators.ZeroShotEvalConfig(name="imagenet", source=config.source,
                                       class_names="imagenet1k", templates=["a {c}."],
                                       batch_size=4)
  (built,) = evaluators.build_evaluators([spec], SIZE, 8, "syntax")
  result = built.evaluate(*_fake_encoders())
  assert result["imagenet/num_examples"] == 3 and 0 <= result["imagenet/top1"] <= 1


def test_imagenet_from_a_prepared_tfds_dir(fake_tfds):
  config = suites.imagenet_zeroshot(fake_tfds, tfds_name="clipa_fake_imagenet")
  assert isinstance(config.source, datasets.TfdsClassification)
  labels = sorted(int(ex["label"]) for ex in config.source.examples(SIZE, 8))
  assert labels == [0, 7, 14, 21]
  assert config.source.class_names()[0] == "tench"  # WordNet ids -> CLIP's names


def test_zeroshot_suite_finds_what_is_there_and_reports_one_table(tmp_path, fake_tfds, caplog):
  root = tmp_path / "sets"
  _image_folder(root / "pets", 37)
  _image_folder(root / "mnist", 10, with_images=(3, 4))
  _image_folder(root / "svhn", 3)  # 3 folders for svhn's 10 classes: not it
  found = suites.zeroshot_suite(f"{root},{fake_tfds}", batch_size=4,
                                tfds_names={"imagenet1k": ("clipa_fake_imagenet", "validation")})
  assert [c.name for c in found] == ["imagenet1k", "mnist", "pets"]
  assert [c.templates for c in found] == ["imagenet1k", "mnist", "pets"]
  assert "not found, not evaluated" in caplog.text and "svhn" in caplog.text
  specs = [evaluators.ZeroShotEvalConfig(name=c.name, source=c.source, class_names=c.class_names,
                                         templates=["a {c}."], batch_size=4) for c in found]
  results = {}
  for built in evaluators.build_evaluators(specs, SIZE, 8):
    results.update(built.evaluate(*_fake_encoders()))
  table = evaluators.format_results_table(results)
  for name, n in (("imagenet1k", 4), ("mnist", 2), ("pets", 3)):
    assert results[f"{name}/num_examples"] == n and name in table
  with pytest.raises(ValueError, match="ZEROSHOT_DATA=.*none of the data sets"):
    suites.zeroshot_suite(str(tmp_path / "sets" / "svhn"), names=["pets"])
  with pytest.raises(ValueError, match="^ZEROSHOT_DATA is not set"):
    suites.zeroshot_suite(None)


@pytest.mark.usefixtures("clean_gin")
def test_eval_zeroshot_suite_gin(tmp_path):
  _image_folder(tmp_path / "pets", 37)
  gin_utils.parse_gin_flags(["gin/runs/eval_zeroshot_suite.gin"], [
      "CHECKPOINT_PATH = '/ckpt'", f"ZEROSHOT_DATA = '{tmp_path}'"])
  import gin  # pylint: disable=import-outside-toplevel
  found = copy.deepcopy(gin.query_parameter("%EVALUATORS"))  # evaluates the reference
  assert [c.name for c in found] == ["pets"]


def test_user_data_evaluators_from_shards(tmp_path):
  from clipa_t5x.data import make_shards  # pylint: disable=import-outside-toplevel
  for c, cls in enumerate(("dog", "tabby_cat")):
    os.makedirs(tmp_path / "in" / cls)
    for i in range(2):
      Image.fromarray(np.full((12, 10, 3), 90 * c + i, np.uint8)).save(
          tmp_path / "in" / cls / f"{i}.png")
      (tmp_path / "in" / cls / f"{i}.txt").write_text(f"a {cls} number {i}")
  items, classes = make_shards.folder_items(str(tmp_path / "in"), labels_from_folders=True)
  make_shards.make_shards(items, str(tmp_path / "out"), samples_per_shard=3, quiet=True,
                          class_names=classes)
  specs = suites.user_data_evaluators(str(tmp_path / "out" / "{00000..00001}.tar"),
                                      class_names=str(tmp_path / "out" / "classes.json"),
                                      batch_size=2)
  assert [s.name for s in specs] == ["user_data", "user_data_retrieval"]
  assert specs[0].class_names == ["dog", "tabby cat"]
  results = {}
  for built in evaluators.build_evaluators(specs, SIZE, 8):
    results.update(built.evaluate(*_fake_encoders()))
  assert results["user_data/num_examples"] == 4
  assert "user_data_retrieval/image_to_text/R@1" in results
  assert suites.user_data_evaluators(None) == []
  with pytest.raises(ValueError, match="EVAL_DATA: zero-shot classification reads KEY.cls"):
    suites.user_data_evaluators("x.csv", class_names=["a"])
