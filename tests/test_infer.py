"""Tests of the inference CLI (python -m clipa_t5x.infer), run in-process."""

import csv
import io
import os
import tarfile

import jax
import flax.linen as nn
import numpy as np
import pytest
from PIL import Image

from clipa_t5x import checkpoints
from clipa_t5x import infer
from clipa_t5x import inference
from clipa_t5x.models import clip
from clipa_t5x.models import config_io
from clipa_t5x.models import configs

CONFIG = configs.get_config("Ti/8")
D = CONFIG.embed_dim


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A MODEL_DIR with one Ti/8 stage at 16 px and 8 tokens."""
  root = str(tmp_path_factory.mktemp("run"))
  model = clip.ClipaModel(CONFIG)
  init = jax.jit(lambda key: nn.meta.unbox(model.get_initial_variables(key, 16, 8)["params"]))
  stage = os.path.join(root, "pretrain")
  checkpoints.save_params(stage, jax.device_get(init(jax.random.key(0))), step=2)
  config_io.write_model_config(stage, CONFIG, 16, 8, stage="pretrain")
  return root


@pytest.fixture(scope="module")
def predictor(model_dir):
  """The same model through the API: the reference for the CLI's numbers."""
  return inference.load(model_dir, batch_size=4)


def _rgb(seed, h=20, w=24):
  return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  """Nested folder: jpg + png, a corrupt jpg, a non-image and a hidden file."""
  root = tmp_path_factory.mktemp("photos")
  (root / "cats" / "small").mkdir(parents=True)
  (root / "dogs").mkdir()
  Image.fromarray(_rgb(0)).save(root / "cats" / "a.jpg", quality=95)
  Image.fromarray(_rgb(1)).save(root / "cats" / "small" / "b.png")
  Image.fromarray(_rgb(2, 30, 18)).save(root / "dogs" / "c.PNG")
  (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
  (root / "dogs" / "notes.txt").write_text("not an image")
  Image.fromarray(_rgb(3)).save(root / ".hidden.png")
  return str(root)


GOOD_KEYS = ["cats/a.jpg", "cats/small/b.png", "dogs/c.PNG"]


def _run(capsys, *argv):
  code = infer.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_embed_images_folder(capsys, tmp_path, model_dir, image_folder, predictor):
  out = tmp_path / "emb.npy"
  code, stdout, stderr = _run(capsys, "embed-images", "--model", model_dir, "--input",
                              image_folder, "--out", out, "--batch_size", 2)
  assert code == 0, stderr
  feats = np.load(out)
  assert feats.shape == (3, D) and feats.dtype == np.float32
  keys = (tmp_path / "emb.keys.txt").read_text().splitlines()
  assert keys == GOOD_KEYS
  np.testing.assert_allclose(
      feats, predictor.encode_images([os.path.join(image_folder, k) for k in keys]), atol=1e-5)
  # The corrupt file: counted, named, listed with its reason, no row.
  assert "skipped 1 image(s)" in stderr and "dogs/broken.jpg" in stderr
  skipped = (tmp_path / "emb.skipped.txt").read_text().splitlines()
  assert len(skipped) == 1 and skipped[0].startswith("dogs/broken.jpg\tcannot decode")
  assert "wrote 3 image embeddings [3, 64]" in stdout and "1 skipped" in stdout
  assert "pretrain/checkpoint_2" in stderr  # which checkpoint was used
  assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_embed_images_tar_and_list(capsys, tmp_path, model_dir, predictor):
  images = {}
  for i, (name, fmt) in enumerate([("s/000.jpg", "JPEG"), ("s/001.png", "PNG")]):
    buf = io.BytesIO()
    Image.fromarray(_rgb(10 + i)).save(buf, format=fmt)
    images[name] = buf.getvalue()
  members = [("s/000.txt", b"a caption"), ("s/000.jpg", images["s/000.jpg"]),
             ("s/001.png", images["s/001.png"]), ("s/002.json", b"{}")]
  tar_path = tmp_path / "shard.tar"
  with tarfile.open(tar_path, "w") as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  code, _, stderr = _run(capsys, "embed-images", "--model", model_dir, "--input", tar_path,
                         "--out", tmp_path / "tar_out", "--no_progress")
  assert code == 0, stderr
  feats = np.load(tmp_path / "tar_out.npy")
  assert (tmp_path / "tar_out.keys.txt").read_text().splitlines() == ["s/000", "s/001"]
  np.testing.assert_allclose(feats, predictor.encode_images(list(images.values())), atol=1e-5)
  assert "s/002: no image member" in stderr

  for name, data in images.items():
    (tmp_path / os.path.basename(name)).write_bytes(data)
  (tmp_path / "list.txt").write_text("000.jpg\n\n001.png\nmissing.png\n")
  code, _, stderr = _run(capsys, "embed-images", "--model", model_dir, "--input",
                         tmp_path / "list.txt", "--out", tmp_path / "list.npy", "--image_size", 24)
  assert code == 0, stderr
  assert (tmp_path / "list.keys.txt").read_text().splitlines() == ["000.jpg", "001.png"]
  np.testing.assert_allclose(np.load(tmp_path / "list.npy"),
                             predictor.encode_images(list(images.values()), image_size=24),
                             atol=1e-5)
  assert "missing.png: file not found" in stderr


def test_embed_texts(capsys, tmp_path, model_dir, predictor):
  captions = tmp_path / "caps.txt"
  captions.write_bytes("a cat on a mat\r\n\nthe dog  \n   \ncafé au lait\n".encode("utf-8"))
  code, stdout, stderr = _run(capsys, "embed-texts", "--model", model_dir, "--input", captions,
                              "--out", tmp_path / "caps.npy")
  assert code == 0, stderr
  feats = np.load(tmp_path / "caps.npy")
  assert (tmp_path / "caps.keys.txt").read_text().splitlines() == ["1", "3", "5"]
  np.testing.assert_allclose(
      feats, predictor.encode_texts(["a cat on a mat", "the dog", "café au lait"]), atol=1e-5)
  assert "skipped 2 empty line(s)" in stderr and "2, 4" in stderr
  assert "wrote 3 text embeddings [3, 64]" in stdout


def test_classify(capsys, tmp_path, model_dir, image_folder, predictor):
  out = tmp_path / "pred.csv"
  code, stdout, stderr = _run(capsys, "classify", "--model", model_dir, "--input", image_folder,
                              "--class_names", "cat, dog,car", "--top_k", 2, "--out", out)
  assert code == 0, stderr
  with open(out, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["key", "top1", "top1_prob", "top2", "top2_prob"]
  assert [r[0] for r in rows[1:]] == GOOD_KEYS
  want = predictor.classify([os.path.join(image_folder, k) for k in GOOD_KEYS],
                            ["cat", "dog", "car"], top_k=2)
  for row, names, probs in zip(rows[1:], want.top_k_names, want.top_k_probabilities):
    assert [row[1], row[3]] == names
    np.testing.assert_allclose([float(row[2]), float(row[4])], probs, atol=1e-5)
  assert "classified 3 images into 3 classes" in stdout
  assert "dogs/broken.jpg" in stderr and (tmp_path / "pred.skipped.txt").exists()

  # Class names and templates from files.
  (tmp_path / "names.txt").write_text("cat\n\ndog\n")
  (tmp_path / "templates.txt").write_text("a photo of a {c}.\nart of a {c}.\n")
  code, _, stderr = _run(capsys, "classify", "--model", model_dir, "--input", image_folder,
                         "--class_names", tmp_path / "names.txt", "--templates",
                         tmp_path / "templates.txt", "--out", tmp_path / "p2.csv")
  assert code == 0, stderr
  with open(tmp_path / "p2.csv", newline="") as f:
    rows = list(csv.reader(f))
  assert len(rows[0]) == 5 and len(rows) == 4  # top_k capped at the 2 classes


@pytest.mark.parametrize("argv,message", [
    (["embed-images", "--input", "{tmp}/nope", "--out", "{tmp}/o.npy"], "does not exist"),
    (["embed-images", "--input", "{tmp}/empty", "--out", "{tmp}/o.npy"], "no images found"),
    (["embed-images", "--input", "{tmp}/bad", "--out", "{tmp}/o.npy"], "none of the 1 images"),
    (["embed-images", "--input", "{tmp}/empty", "--out", "{tmp}/file.txt/o.npy"],
     "cannot write to"),
    (["embed-images", "--input", "{tmp}/empty", "--out", "{tmp}"], "is a folder"),
    (["embed-texts", "--input", "{tmp}/blank.txt", "--out", "{tmp}/o.npy"],
     "no non-empty lines"),
    (["embed-texts", "--input", "{tmp}/latin1.txt", "--out", "{tmp}/o.npy"], "not UTF-8"),
    (["classify", "--input", "{tmp}/bad", "--class_names", "cat", "--out", "{tmp}/p.csv"],
     "at least two"),
    (["classify", "--input", "{tmp}/bad", "--class_names", "cat,dog", "--templates", "photo",
      "--out", "{tmp}/p.csv"], "placeholder"),
])
def test_errors_are_one_line(capsys, tmp_path, model_dir, argv, message):
  (tmp_path / "empty").mkdir()
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "x.png").write_bytes(b"no png")
  (tmp_path / "file.txt").write_text("x")
  (tmp_path / "blank.txt").write_text("\n  \n")
  (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
  argv = [a.format(tmp=tmp_path) for a in argv] + ["--model", model_dir, "--no_progress"]
  code, _, stderr = _run(capsys, *argv)
  assert code == 2
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last, stderr
  assert not (tmp_path / "o.npy").exists() and not (tmp_path / "p.csv").exists()


def test_model_errors(capsys, tmp_path, image_folder):
  code, _, stderr = _run(capsys, "embed-images", "--model", tmp_path / "nowhere", "--input",
                         image_folder, "--out", tmp_path / "o.npy")
  assert code == 2 and "model reference" in stderr and "does not exist" in stderr
  with pytest.raises(SystemExit):  # argparse: a missing required flag
    infer.main(["embed-images", "--input", image_folder])
