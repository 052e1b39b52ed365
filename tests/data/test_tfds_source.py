"""Tests for clipa_t5x.data.tfds_source with a fake TFDS builder (no download)."""

import collections

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from clipa_t5x.data import bad_records
from clipa_t5x.data.tfds_source import TfdsSource


def _image(i):
  return np.full((6, 8, 3), (10 * i, 5 * i, 200 - 3 * i), np.uint8)


class ClipaTfdsSourceFakeCaptions(tfds.core.GeneratorBasedBuilder):
  """coco_captions' layout: image + captions/text; example 3 has none."""
  VERSION = tfds.core.Version("1.0.0")
  url_infos = {}  # nothing to download (and no checksum file lookup)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "captions": tfds.features.Sequence(
                {"text": tfds.features.Text()}),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(8)}

  def _generate_examples(self, n):
    for i in range(n):
      texts = [] if i == 3 else [f"image {i} caption {j}" for j in range(3)]
      yield i, {"image": _image(i), "captions": {"text": texts}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  ClipaTfdsSourceFakeCaptions(data_dir=path).download_and_prepare()
  return path


NAME = "clipa_tfds_source_fake_captions"


def test_reads_encoded_images_and_one_caption_each(data_dir):
  before = bad_records.snapshot()["missing_caption"]
  source = TfdsSource(NAME, data_dir=data_dir)
  ds = source.get_dataset("train", shuffle=False, seed=0)
  assert set(ds.element_spec) == {"key", "image", "text"}
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == 7  # the caption-less image is skipped
  assert bad_records.snapshot()["missing_caption"] == before + 1
  for ex in examples:
    i = int(ex["text"].split()[1])
    assert ex["text"].decode().startswith(f"image {i} caption ")
    decoded = tf.io.decode_png(ex["image"]).numpy()  # still encoded bytes
    np.testing.assert_array_equal(decoded, _image(i))
  assert len(source.list_shards("train")) >= 1


def test_caption_draw_is_seeded_and_changes_per_epoch(data_dir):
  source = TfdsSource(NAME, data_dir=data_dir)
  read = lambda seed: [e["text"] for e in source.get_dataset(
      "train", shuffle=False, seed=seed).repeat(6).as_numpy_iterator()]
  a, b = read(1), read(1)
  assert a == b
  epochs = [a[k * 7:(k + 1) * 7] for k in range(6)]
  assert len({tuple(e) for e in epochs}) > 1  # new draws each epoch
  per_image = collections.defaultdict(set)
  for t in a:
    per_image[t.split()[1]].add(t)
  assert max(len(s) for s in per_image.values()) >= 2


def test_errors_are_clear(data_dir, tmp_path):
  with pytest.raises(ValueError, match="not prepared in data_dir"):
    TfdsSource(NAME, data_dir=str(tmp_path)).get_dataset("train")
  source = TfdsSource(NAME, data_dir=data_dir)
  with pytest.raises(ValueError, match="files but 64 shards"):
    source.get_dataset("train", shard_info=seqio.ShardInfo(0, 64))
  with pytest.raises(ValueError, match="Unknown split"):
    source.get_dataset("test")
  with pytest.raises(ValueError, match="set caption_key"):
    TfdsSource(NAME, data_dir=data_dir, caption_key="title").get_dataset(
        "train")
