"""Tests of clipa_t5x.inference: loading checkpoints, encoders and zero-shot classification."""

import functools
import json
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from clipa_t5x import checkpoints
from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import inference
from clipa_t5x import model_refs
from clipa_t5x import paths
from clipa_t5x.data import image_ops
from clipa_t5x.data import text_reduction
from clipa_t5x.models import clip
from clipa_t5x.models import config_io
from clipa_t5x.models import configs

CONFIG = configs.get_config("Ti/8")
MODEL = clip.ClipaModel(CONFIG)
# Plain single-device jit of the model's own encoders: the references.
_ENCODE_IMAGES = jax.jit(MODEL.encode_images)
_ENCODE_TEXTS = jax.jit(MODEL.encode_texts)


@functools.lru_cache(maxsize=None)
def _params(seed: int = 0, text_length: int = 8):
  """Ti/8 parameters: one real initialisation, other seeds perturb it (initialising is slow)."""
  if seed == 0 and text_length == 8:
    init = jax.jit(lambda key: nn.meta.unbox(
        MODEL.get_initial_variables(key, 16, 8)["params"]))
    return jax.device_get(init(jax.random.key(0)))
  rng = np.random.RandomState(seed)
  params = jax.tree.map(lambda x: x + rng.normal(0, 0.02, x.shape).astype(x.dtype) * (seed > 0),
                        _params(0, 8))
  pos = params["txt"]["pos_embedding"]
  params["txt"]["pos_embedding"] = np.asarray(
      checkpoints.resize_text_pos_embedding(pos, text_length))
  return params


def _images(n: int, seed: int = 0):
  """Random uint8 images of different sizes."""
  rng = np.random.RandomState(seed)
  return [rng.randint(0, 256, (12 + 3 * i, 30 - 2 * i, 3)).astype(np.uint8) for i in range(n)]


def _resized(images, size):
  """Reference preprocessing: the evaluation resize, applied directly."""
  return np.stack([image_ops.eval_resize(tf.constant(im), size).numpy() for im in images])


def _ref_images(images, size, params=None):
  return np.asarray(_ENCODE_IMAGES(params or _params(), _resized(images, size)))


def _ref_texts(texts, length=8, method="truncate", params=None):
  tokens = text_reduction.tokenize_texts(texts, length, method)
  return np.asarray(_ENCODE_TEXTS(params or _params(), tokens))


@pytest.fixture(scope="module")
def predictor():
  return inference.ClipaPredictor(CONFIG, _params(), image_size=16, batch_size=4)


# ------------------------------------------------------------------ images
@pytest.mark.slow
def test_encode_images_matches_model(predictor):
  images = _images(7)
  got = predictor.encode_images(images)
  assert got.shape == (7, CONFIG.embed_dim) and got.dtype == np.float32
  np.testing.assert_allclose(got, _ref_images(images, 16), atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batch_size_order_and_devices_do_not_matter(predictor):
  images = _images(7, seed=1)
  base = predictor.encode_images(images)
  assert predictor.batch_size == 4 and predictor.num_devices == 4
  one_device = inference.ClipaPredictor(CONFIG, _params(), image_size=16, batch_size=3,
                                        devices=jax.local_devices()[:1])
  assert one_device.batch_size == 3
  np.testing.assert_allclose(one_device.encode_images(images), base, atol=1e-5)
  np.testing.assert_allclose(predictor.encode_images(images[::-1]), base[::-1], atol=1e-5)
  # A batch size that is not a multiple of the devices is rounded up.
  assert inference.ClipaPredictor(CONFIG, _params(), image_size=16, batch_size=5).batch_size == 8


def test_two_resolutions(predictor):
  images = _images(5, seed=2)
  at24 = predictor.encode_images(images, image_size=24)
  np.testing.assert_allclose(at24, _ref_images(images, 24), atol=1e-5)
  np.testing.assert_allclose(predictor.encode_images(images), _ref_images(images, 16), atol=1e-5)
  assert not np.allclose(at24, predictor.encode_images(images), atol=1e-3)
  big = inference.ClipaPredictor(CONFIG, _params(), image_size=24, batch_size=4)
  np.testing.assert_allclose(big.encode_images(images), at24, atol=1e-6)


def test_uint8_batch_at_size_and_resized(predictor):
  batch = np.stack(_images(6, seed=3)[:1] * 6)  # one shape: [6, 12, 30, 3]
  np.testing.assert_allclose(predictor.encode_images(batch), _ref_images(list(batch), 16),
                             atol=1e-5)
  at_size = _resized(_images(6, seed=3), 16)
  np.testing.assert_allclose(predictor.encode_images(at_size),
                             np.asarray(_ENCODE_IMAGES(_params(), at_size)), atol=1e-5)
  assert predictor.encode_images(at_size[:0]).shape == (0, CONFIG.embed_dim)


def test_paths_pil_bytes_and_arrays_agree(predictor, tmp_path):
  images = _images(3, seed=4)
  paths = []
  for i, im in enumerate(images):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(im).save(paths[-1])
  from_arrays = predictor.encode_images(images)
  np.testing.assert_allclose(predictor.encode_images(paths), from_arrays, atol=1e-6)
  np.testing.assert_allclose(predictor.encode_images([Image.open(p) for p in paths]),
                             from_arrays, atol=1e-6)
  mixed = [paths[0], open(paths[1], "rb").read(), Image.open(paths[2])]
  np.testing.assert_allclose(predictor.encode_images(mixed), from_arrays, atol=1e-6)


def test_image_errors(predictor):
  with pytest.raises(ValueError, match="image 1: cannot decode"):
    predictor.encode_images([_images(1)[0], b"garbage"])
  with pytest.raises(ValueError, match="not a multiple of the patch size 8; use 16 or 24"):
    predictor.encode_images(_images(1), image_size=20)
  with pytest.raises(ValueError, match="wrap a single image in a list"):
    predictor.encode_images("cat.jpg")
  with pytest.raises(ValueError, match="uint8"):
    predictor.encode_images(np.zeros((2, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    predictor.encode_images(np.zeros((16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match="not a multiple of the patch"):
    inference.ClipaPredictor(CONFIG, _params(), image_size=30)


def test_embed_images_skips_and_reports(predictor):
  images = _images(6, seed=5)
  items = [("a", images[0]), ("bad1", b"xx"), ("b", images[1]), ("c", images[2]),
           ("d", images[3]), ("bad2", np.zeros((3, 3), np.float32)), ("e", images[4])]
  calls = []
  result = predictor.embed_images(items, progress=lambda done, total: calls.append((done, total)))
  assert result.keys == ["a", "b", "c", "d", "e"]
  assert [k for k, _ in result.skipped] == ["bad1", "bad2"]
  assert "cannot decode" in result.skipped[0][1] and "uint8" in result.skipped[1][1]
  np.testing.assert_allclose(result.features, _ref_images(images[:5], 16), atol=1e-5)
  assert calls == [(4, 7), (7, 7)]


# ------------------------------------------------------------------- texts
def test_encode_texts_matches_model(predictor):
  texts = ["a cat", "a photo of a very small dog sitting on a red chair", "", "x " * 40]
  got = predictor.encode_texts(texts)
  assert got.shape == (4, CONFIG.embed_dim) and got.dtype == np.float32
  np.testing.assert_allclose(got, _ref_texts(texts), atol=1e-5)
  syntax = predictor.encode_texts(texts, reduction="syntax")
  np.testing.assert_allclose(syntax, _ref_texts(texts, method="syntax"), atol=1e-5)
  assert not np.allclose(syntax[1], got[1], atol=1e-4)  # the long caption is cut differently
  assert predictor.encode_texts([]).shape == (0, CONFIG.embed_dim)


def test_text_errors(predictor):
  with pytest.raises(ValueError, match="wrap a single text"):
    predictor.encode_texts("a cat")
  with pytest.raises(ValueError, match="must be strings"):
    predictor.encode_texts(["a", 3])
  with pytest.raises(ValueError, match="unknown text reduction"):
    predictor.encode_texts(["a"], reduction="nouns")


def test_other_text_length_resizes_the_position_embedding():
  longer = inference.ClipaPredictor(CONFIG, _params(), image_size=16, text_length=16,
                                    batch_size=4)
  assert longer.text_length == 16
  params = dict(_params())
  txt = dict(params["txt"])
  txt["pos_embedding"] = np.asarray(checkpoints.resize_text_pos_embedding(txt["pos_embedding"],
                                                                          16))
  params["txt"] = txt
  texts = ["a dog", "two birds on a long wire above a busy street at night"]
  np.testing.assert_allclose(longer.encode_texts(texts),
                             _ref_texts(texts, 16, params=params), atol=1e-5)


# --------------------------------------------------------------- zero-shot
def test_class_embeddings_are_prompt_ensembles(predictor):
  names, templates = ["cat", "dog", "red car"], ["a photo of a {c}.", "{c}", "art of the {}."]
  got = predictor.class_embeddings(names, templates)
  prompts = [t.replace("{c}", c).replace("{}", c) for c in names for t in templates]
  feats = np.array(_ref_texts(prompts)).reshape(3, 3, -1)
  feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
  want = feats.mean(axis=1)
  want /= np.linalg.norm(want, axis=-1, keepdims=True)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert predictor.class_embeddings(names).shape == (3, CONFIG.embed_dim)  # default templates


def test_classify_matches_numpy_reference(predictor):
  images = _images(6, seed=6)
  names = ["cat", "dog", "car", "tree", "boat", "house", "cup"]
  result = predictor.classify(images, names, templates="a photo of a {c}.", top_k=3)
  assert result.probabilities.shape == (6, 7)
  np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
  weights = predictor.class_embeddings(names, ["a photo of a {c}."])
  logits = np.exp(float(_params()["log_temperature"])) * _ref_images(images, 16) @ weights.T
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(result.probabilities, probs, atol=1e-4)
  assert result.top_k_indices.shape == (6, 3)
  np.testing.assert_array_equal(result.top_k_indices[:, 0], np.argmax(probs, axis=1))
  assert result.labels == [names[i] for i in np.argmax(probs, axis=1)]
  assert result.top_k_names[0][0] == result.labels[0]
  assert np.all(np.diff(result.top_k_probabilities, axis=1) <= 0)
  # top_k is capped at the number of classes.
  assert predictor.classify(images[:2], ["cat", "dog"], top_k=5).top_k_indices.shape == (2, 2)


def test_classify_validation(predictor):
  images = _images(1)
  with pytest.raises(ValueError, match="placeholder"):
    predictor.classify(images, ["cat", "dog"], templates=["a photo"])
  with pytest.raises(ValueError, match="neither a file, a known template set"):
    predictor.classify(images, ["cat", "dog"], templates="photos")
  with pytest.raises(ValueError, match="templates is empty"):
    predictor.classify(images, ["cat", "dog"], templates=[])
  with pytest.raises(ValueError, match="needs at least two"):
    predictor.classify(images, ["cat"])
  with pytest.raises(ValueError, match="needs at least two"):
    predictor.classify(images, "cat")
  assert predictor.classify(images, "cat,dog").class_names == ["cat", "dog"]
  with pytest.raises(ValueError, match="non-empty strings"):
    predictor.classify(images, ["cat", " "])
  with pytest.raises(ValueError, match="top_k"):
    predictor.classify(images, ["cat", "dog"], top_k=0)
  with pytest.raises(ValueError, match=r"class_embeddings must be \[2, 64\]"):
    predictor.classify_features(np.zeros((1, 64)), ["a", "b"],
                                class_embeddings=np.zeros((3, 64)))


# -------------------------------------------------------------------- load
def _save_stage(model_dir, name, seed, image_size, text_length, step):
  stage = os.path.join(model_dir, name)
  checkpoints.save_params(stage, _params(seed, text_length), step=step)
  config_io.write_model_config(stage, CONFIG, image_size, text_length, stage=name)
  return stage


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("run"))
  _save_stage(root, "pretrain", 0, 16, 8, 3)
  _save_stage(root, "finetune", 1, 32, 16, 5)
  with open(os.path.join(root, "summary.json"), "w") as f:
    json.dump([{"stage": "pretrain"}, {"stage": "finetune"}], f)
  return root


def _same_params(predictor, seed, text_length):
  for a, b in zip(jax.tree.leaves(predictor.params), jax.tree.leaves(_params(seed, text_length))):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_load_model_dir_uses_the_last_stage(model_dir):
  p = inference.load(model_dir, batch_size=4)
  assert p.source == os.path.join(model_dir, "finetune", "checkpoint_5")
  assert (p.image_size, p.text_length) == (32, 16)
  _same_params(p, 1, 16)
  assert "finetune/checkpoint_5" in p.describe()


def test_load_stage_and_checkpoint_dirs(model_dir):
  p = inference.load(os.path.join(model_dir, "pretrain", "checkpoint_3"), batch_size=4)
  assert p.source.endswith("pretrain/checkpoint_3")
  assert (p.image_size, p.text_length) == (16, 8)
  _same_params(p, 0, 8)
  texts = ["a dog on a boat"]
  np.testing.assert_allclose(p.encode_texts(texts), _ref_texts(texts), atol=1e-5)
  p = inference.load(os.path.join(model_dir, "pretrain"), image_size=24, text_length=16,
                     dtype="bfloat16")
  assert (p.image_size, p.text_length, p.config.dtype) == (24, 16, "bfloat16")


def test_load_without_summary_orders_stages_by_start(tmp_path):
  # Stage order comes from when each stage wrote model_config.json (it starts with it).
  root = str(tmp_path)
  stages = {}
  for name in ("zz_first", "aa_second"):
    stages[name] = os.path.join(root, name)
    os.makedirs(os.path.join(stages[name], "checkpoint_1"))
    config_io.write_model_config(stages[name], CONFIG, 16, 8)
  os.makedirs(os.path.join(root, "no_checkpoint"))
  config_io.write_model_config(os.path.join(root, "no_checkpoint"), CONFIG, 16, 8)
  first, second = (os.path.join(stages[n], model_dir_lib.MODEL_CONFIG)
                   for n in ("zz_first", "aa_second"))
  os.utime(first, (1000, 1000))
  os.utime(second, (2000, 2000))
  checkpoint = lambda stage: ("checkpoint", os.path.join(stage, "checkpoint_1"))
  assert model_refs.locate(root) == checkpoint(stages["aa_second"])
  os.utime(first, (3000, 3000))
  assert model_refs.locate(root) == checkpoint(stages["zz_first"])
  # A summary.json (a finished run) gives the order.
  with open(os.path.join(root, "summary.json"), "w") as f:
    json.dump([{"stage": "zz_first"}, {"stage": "aa_second"}], f)
  assert model_refs.locate(root) == checkpoint(stages["aa_second"])


def test_load_without_model_config_needs_config(tmp_path, model_dir):
  stage = str(tmp_path / "imported")
  shutil.copytree(os.path.join(model_dir, "pretrain"), stage)
  os.remove(os.path.join(stage, model_dir_lib.MODEL_CONFIG))
  with pytest.raises(ValueError, match="no model_config.json; name the model"):
    inference.load(stage)
  p = inference.load(stage, config="Ti/8", image_size=16)
  assert (p.image_size, p.text_length) == (16, 8)
  _same_params(p, 0, 8)
  assert inference.load(stage, config=CONFIG).image_size == 224  # unrecorded: CLIPA's eval size
  with pytest.raises(ValueError, match="do not match the model config|in the model config"):
    inference.load(stage, config="Mu/8")
  with pytest.raises(ValueError, match=r"model given \(Mu/8\) disagrees"):
    inference.load(os.path.join(model_dir, "pretrain"), config="Mu/8")


def test_load_errors(tmp_path, model_dir):
  with pytest.raises(ValueError, match="does not exist"):
    inference.load(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="has no checkpoint and is no model file"):
    inference.load(str(tmp_path / "empty"))
  config_io.write_model_config(str(tmp_path / "starting"), CONFIG, 16, 8)
  with pytest.raises(ValueError, match="no complete checkpoint yet"):
    inference.load(str(tmp_path / "starting"))
  with pytest.raises(ValueError, match="dtype"):
    inference.load(model_dir, dtype="int8")
  with pytest.raises(ValueError, match="unknown text reduction"):
    inference.load(model_dir, text_reduction="nouns")
  with pytest.raises(ValueError, match="Unknown CLIPA variant"):
    inference.load(os.path.join(model_dir, "pretrain"), config="Q/3")


def test_open_clip_export_round_trip(tmp_path):
  open_clip = pytest.importorskip("clipa_t5x.interop.open_clip")
  pytest.importorskip("safetensors")
  out = open_clip.export_open_clip(_params(0, 8), CONFIG, str(tmp_path / "oc"), image_size=16)
  p = inference.load(out, batch_size=4)
  assert (p.image_size, p.text_length, p.source) == (16, 8, out)
  with pytest.raises(ValueError, match="lacks"):  # an open_clip name replaces the folder's config
    inference.load(out, config="ViT-H-14-CLIPA")
  images = _images(3, seed=7)
  np.testing.assert_allclose(p.encode_images(images), _ref_images(images, 16), atol=1e-5)


# ----------------------------------------------------- remote and relative paths
def _to_ram(local: str, url: str) -> str:
  """Copies a local folder into TensorFlow's in-memory filesystem (a stand-in for gs://)."""
  paths.upload_tree(local, url)
  return url


def test_load_reads_a_remote_model_dir_through_gfile(model_dir, monkeypatch):
  url = _to_ram(model_dir, "ram://clipa_test_run")
  read = []
  real_load_params = checkpoints.load_params

  def load_params(path, mode="latest"):
    # Orbax reads gs:// itself (not ram://): give it the same files on disk.
    read.append(path)
    params, meta, source = real_load_params(path.replace(url, model_dir), mode)
    return params, meta, source.replace(model_dir, url)

  monkeypatch.setattr(checkpoints, "load_params", load_params)
  p = inference.load(url, batch_size=4)  # stage order from summary.json, config from gfile
  assert read == [f"{url}/finetune/checkpoint_5"]
  assert p.source == f"{url}/finetune/checkpoint_5"
  assert (p.image_size, p.text_length) == (32, 16)
  _same_params(p, 1, 16)
  assert model_refs.locate(f"{url}/pretrain/checkpoint_3") == (
      "checkpoint", f"{url}/pretrain/checkpoint_3")
  with pytest.raises(ValueError, match="does not exist"):
    inference.load("ram://clipa_test_nothing_here")


def test_load_reads_a_remote_open_clip_export(tmp_path):
  open_clip = pytest.importorskip("clipa_t5x.interop.open_clip")
  pytest.importorskip("safetensors")
  out = open_clip.export_open_clip(_params(0, 8), CONFIG, str(tmp_path / "oc"), image_size=16)
  url = _to_ram(out, "ram://clipa_test_export")
  p = inference.load(url, batch_size=4)
  assert (p.image_size, p.text_length, p.source) == (16, 8, url)
  images = _images(2, seed=3)
  np.testing.assert_allclose(p.encode_images(images), _ref_images(images, 16), atol=1e-5)


def test_load_takes_a_relative_path(model_dir, monkeypatch):
  monkeypatch.chdir(os.path.dirname(model_dir))
  p = inference.load(os.path.join(os.path.basename(model_dir), "pretrain"), batch_size=4)
  assert p.source == os.path.join(model_dir, "pretrain", "checkpoint_3")
