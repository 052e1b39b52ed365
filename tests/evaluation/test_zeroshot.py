"""Tests for clipa_t5x.evaluation.zeroshot with fake encoders and a brute-force reference."""

import sys
import types

import numpy as np
import pytest

from clipa_t5x.evaluation import zeroshot
from clipa_t5x.evaluation.zeroshot import ZeroShotClassifier

# ----------------------------------------------------------------------------- fakes
IMG = 4  # image side
DIM = 16
VOCAB = 101
_RNG = np.random.default_rng(1234)
IMG_PROJ = _RNG.normal(size=(IMG * IMG * 3, DIM))
TOK_EMB = _RNG.normal(size=(VOCAB, DIM))


def fake_tokenize(texts, length, method):
  """Deterministic word-hash tokenizer: (texts, length, method) -> int32 [N, length]."""
  assert method == "truncate"
  out = np.zeros((len(texts), length), np.int32)
  for i, text in enumerate(texts):
    ids = [1 + (sum(map(ord, w)) * 31 + 7 * j) % (VOCAB - 1) for j, w in enumerate(text.split())]
    ids = ids[:length]
    out[i, :len(ids)] = ids
  return out


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def fake_encode_images(images):
  """Row-wise: uint8 [B, H, W, 3] -> unit [B, D] float32."""
  x = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
  return _unit(x @ IMG_PROJ).astype(np.float32)


def fake_encode_texts(tokens):
  """Row-wise: int32 [B, L] -> [B, D] float32 with a prompt-dependent norm.

  Not unit-norm on purpose, so the tests catch a missing per-prompt normalisation.
  """
  f = _unit(TOK_EMB[tokens].sum(axis=1)) * (1.0 + (tokens.sum(axis=1, keepdims=True) % 7))
  return f.astype(np.float32)


class Recorder:
  """Wraps an encoder and records the shape of every call."""

  def __init__(self, fn):
    self.fn = fn
    self.shapes = []

  def __call__(self, x):
    self.shapes.append(x.shape)
    return self.fn(x)


def make_examples(n, num_classes, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, IMG, IMG, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, size=n).astype(np.int32)
  return images, labels


def examples_fn_of(images, labels):
  def examples_fn():
    for im, lab in zip(images, labels):
      yield {"image": im, "label": lab}
  return examples_fn


def brute_force(images, labels, class_names, templates, text_length, ks):
  """Loops over every example, class and template in float64."""
  class_emb = []
  for c in class_names:
    acc = np.zeros(DIM)
    for t in templates:
      text = t.replace("{c}", c) if "{c}" in t else t.replace("{}", c)
      tok = fake_tokenize([text], text_length, "truncate")
      e = TOK_EMB[tok[0]].sum(axis=0)
      acc += e / np.linalg.norm(e)
    acc /= len(templates)
    class_emb.append(acc / np.linalg.norm(acc))
  hits = {k: 0 for k in ks}
  for im, y in zip(images, labels):
    f = im.reshape(-1).astype(np.float64) / 255.0 @ IMG_PROJ
    f /= np.linalg.norm(f)
    scores = [float(f @ e) for e in class_emb]
    rank = sum(1 for j, s in enumerate(scores)
               if s > scores[y] or (s == scores[y] and j < y))  # ties: lower index first
    for k in ks:
      hits[k] += rank < k
  return {k: hits[k] / len(labels) for k in ks}


CLASSES7 = ["cat", "dog", "red car", "tree", "house", "boat", "plane"]
TEMPLATES = ["a photo of a {c}.", "a blurry photo of the {}.", "{c}", "art of {}"]


# ----------------------------------------------------------------------------- package data
def test_imagenet_package_data():
  names = zeroshot.load_classnames("imagenet1k")
  templates = zeroshot.load_templates("imagenet1k")
  assert len(names) == 1000 and names[:3] == ["tench", "goldfish", "great white shark"]
  # CLIP's curated list repeats two names (exact ties; see metrics' tie rule).
  assert len(set(names)) == 998
  assert names[657] == names[744] == "missile" and names[836] == names[837] == "sunglasses"
  assert len(templates) == 80 and all("{c}" in t for t in templates)
  clipa = zeroshot.load_templates("imagenet1k", add_bare_classname=True)
  assert len(clipa) == 81 and clipa[-1] == "{c}" and clipa[:80] == templates


def test_other_datasets_present():
  with_names = set(zeroshot.available_classnames())
  with_templates = set(zeroshot.available_templates())
  assert len(with_names) == 17 and len(with_templates) == 33
  both = with_names & with_templates
  assert {"imagenet1k", "mnist", "svhn", "eurosat", "pets", "flowers", "gtsrb",
          "caltech101", "country211", "fer2013", "pcam"} <= both
  assert len(both) == 16
  assert len(zeroshot.load_classnames("mnist")) == 10
  for dataset in with_templates:  # every shipped template is usable by fill_template
    for t in zeroshot.load_templates(dataset):
      assert "X" in zeroshot.fill_template(t, "X")


def test_unknown_dataset_lists_keys():
  with pytest.raises(ValueError, match="imagenet1k"):
    zeroshot.load_classnames("imagenet22k")
  with pytest.raises(ValueError, match="known: .*cifar10"):
    zeroshot.load_templates("nope")


def test_loaders_return_copies():
  zeroshot.load_classnames("mnist").append("junk")
  assert len(zeroshot.load_classnames("mnist")) == 10


def test_fill_template():
  assert zeroshot.fill_template("a {c} and a {c}.", "cat") == "a cat and a cat."
  assert zeroshot.fill_template("a {}.", "cat") == "a cat."
  assert zeroshot.fill_template("a {c}.", "weird {x} name") == "a weird {x} name."
  with pytest.raises(ValueError, match="placeholder"):
    zeroshot.fill_template("a photo.", "cat")


# ----------------------------------------------------------------------------- evaluator
@pytest.mark.parametrize("n,batch_size,text_batch_size", [(23, 8, None), (16, 8, 5), (5, 32, 3)])
def test_matches_brute_force_with_fixed_batches(n, batch_size, text_batch_size):
  images, labels = make_examples(n, len(CLASSES7), seed=n)
  enc_img, enc_txt = Recorder(fake_encode_images), Recorder(fake_encode_texts)
  tok = Recorder(fake_tokenize)
  clf = ZeroShotClassifier("toy", examples_fn_of(images, labels), CLASSES7, TEMPLATES,
                           batch_size=batch_size, text_length=6,
                           text_batch_size=text_batch_size)
  got = clf.evaluate(enc_img, enc_txt, tokenize=lambda *a: tok.fn(*a))
  ref = brute_force(images, labels, CLASSES7, TEMPLATES, 6, (1, 5))
  assert set(got) == {"toy/top1", "toy/top5", "toy/num_examples"}
  assert got["toy/num_examples"] == n
  assert got["toy/top1"] == pytest.approx(ref[1], abs=1e-12)
  assert got["toy/top5"] == pytest.approx(ref[5], abs=1e-12)
  # Every call sees exactly the fixed batch shape, so a jitted fn never recompiles.
  tbs = text_batch_size or batch_size
  assert enc_img.shapes == [(batch_size, IMG, IMG, 3)] * (-(-n // batch_size))
  num_prompts = len(CLASSES7) * len(TEMPLATES)
  assert enc_txt.shapes == [(tbs, 6)] * (-(-num_prompts // tbs))


def test_prompts_are_class_major_and_fill_both_placeholders():
  seen = []

  def tokenize(texts, length, method):
    seen.extend(texts)
    return fake_tokenize(texts, length, method)

  images, labels = make_examples(4, 2)
  clf = ZeroShotClassifier("p", examples_fn_of(images, labels), ["cat", "dog"],
                           ["a {c}.", "the {}!"], batch_size=4)
  clf.evaluate(fake_encode_images, fake_encode_texts, tokenize)
  assert seen == ["a cat.", "the cat!", "a dog.", "the dog!"]


def test_perfect_model_and_known_accuracy():
  """Classes are one-hot directions; 3 of 10 labels are wrong -> top1 exactly 0.7."""
  names = ["zero", "one", "two", "three", "four", "five"]

  def tokenize(texts, length, method):
    # Token 0 = class id + 1 (the last word is the class name), token 1 = template id.
    return np.array([[names.index(t.split()[-1]) + 1, len(t)] + [0] * (length - 2)
                     for t in texts], np.int32)

  def encode_texts(tokens):
    out = np.eye(len(names), dtype=np.float32)[tokens[:, 0] - 1]
    return out * (1 + tokens[:, 1:2])  # unnormalised on purpose: the evaluator normalises

  def encode_images(images):
    return np.eye(len(names), dtype=np.float32)[images[:, 0, 0, 0]]

  true = np.arange(10) % len(names)
  images = np.zeros((10, 2, 2, 3), np.uint8)
  images[:, 0, 0, 0] = true
  labels = true.copy()
  labels[[1, 4, 8]] = (labels[[1, 4, 8]] + 1) % len(names)
  clf = ZeroShotClassifier("perfect", examples_fn_of(images, labels), names,
                           ["a photo of {c}", "{}"], batch_size=3, text_length=4)
  got = clf.evaluate(encode_images, encode_texts, tokenize)
  # A wrong label y scores 0, below the image's class and tied with the other 4; its rank
  # is 1 + (tied classes with index < y): labels 2, 5, 3 get ranks 2, 5, 3 -> 2 top-5 hits.
  assert got == {"perfect/top1": 0.7, "perfect/top5": 0.9, "perfect/num_examples": 10}


def test_three_classes_report_top1_only():
  names = ["cat", "dog", "boat"]
  images, labels = make_examples(9, 3, seed=5)
  clf = ZeroShotClassifier("c3", examples_fn_of(images, labels), names, TEMPLATES, batch_size=4)
  got = clf.evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  assert set(got) == {"c3/top1", "c3/num_examples"}
  assert got["c3/top1"] == pytest.approx(brute_force(images, labels, names, TEMPLATES, 32, (1,))[1])
  clf2 = ZeroShotClassifier("c3", examples_fn_of(images, labels), names, TEMPLATES,
                            batch_size=4, ks=(1, 2, 3, 5))
  got2 = clf2.evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  assert set(got2) == {"c3/top1", "c3/top2", "c3/top3", "c3/num_examples"}
  assert got2["c3/top3"] == 1.0 and got2["c3/top1"] == got["c3/top1"]


def test_duplicate_classes_tie_to_the_lower_index():
  # "cat" twice gives bit-identical class embeddings: an exact tie, won by class 0.
  names = ["cat", "cat", "dog", "boat", "tree"]
  images, _ = make_examples(30, 5, seed=6)
  feats = fake_encode_images(images)
  emb = zeroshot.embed_classes(fake_encode_texts, names, TEMPLATES, text_length=32,
                               tokenize=fake_tokenize)
  np.testing.assert_array_equal(emb[0], emb[1])
  labels = np.argmax(feats @ emb.T, axis=1).astype(np.int32)  # the model's own argmax
  assert (labels == 0).any() and not (labels == 1).any()
  labels[np.flatnonzero(labels == 0)[::2]] = 1  # half of the "cat" images get the twin label
  clf = ZeroShotClassifier("t", examples_fn_of(images, labels), names, TEMPLATES, batch_size=7,
                           ks=(1, 2))
  got = clf.evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  assert got["t/top1"] == pytest.approx(np.mean(labels != 1))  # the twin label always loses
  assert got["t/top2"] == 1.0
  ref = brute_force(images, labels, names, TEMPLATES, 32, (1, 2))
  assert got["t/top1"] == pytest.approx(ref[1]) and got["t/top2"] == pytest.approx(ref[2])


def test_num_examples_limits_and_callable_class_names():
  images, labels = make_examples(20, 7, seed=7)
  calls = []

  def class_names():
    calls.append(1)
    return CLASSES7

  clf = ZeroShotClassifier("lim", examples_fn_of(images, labels), class_names, TEMPLATES,
                           batch_size=4, num_examples=11)
  assert not calls  # resolved lazily, at evaluate time
  got = clf.evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  assert got["lim/num_examples"] == 11
  ref = brute_force(images[:11], labels[:11], CLASSES7, TEMPLATES, 32, (1, 5))
  assert got["lim/top1"] == pytest.approx(ref[1]) and got["lim/top5"] == pytest.approx(ref[5])
  clf.evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  assert len(calls) == 2  # nothing cached across evaluate calls


def test_class_embeddings_recomputed_each_call():
  images, labels = make_examples(6, 7)
  clf = ZeroShotClassifier("re", examples_fn_of(images, labels), CLASSES7, TEMPLATES, batch_size=6)
  enc_txt = Recorder(fake_encode_texts)
  clf.evaluate(fake_encode_images, enc_txt, fake_tokenize)
  first = len(enc_txt.shapes)
  clf.evaluate(fake_encode_images, enc_txt, fake_tokenize)
  assert len(enc_txt.shapes) == 2 * first


def test_jitted_encoders_trace_once():
  jax = pytest.importorskip("jax")
  traces = {"img": 0, "txt": 0}
  proj, emb = jax.numpy.asarray(IMG_PROJ, "float32"), jax.numpy.asarray(TOK_EMB, "float32")

  @jax.jit
  def enc_img(x):
    traces["img"] += 1
    f = (x.reshape(x.shape[0], -1).astype("float32") / 255.0) @ proj
    return f / jax.numpy.linalg.norm(f, axis=-1, keepdims=True)

  @jax.jit
  def enc_txt(t):
    traces["txt"] += 1
    f = emb[t].sum(axis=1)
    return f / jax.numpy.linalg.norm(f, axis=-1, keepdims=True)

  images, labels = make_examples(21, 7, seed=8)
  clf = ZeroShotClassifier("jit", examples_fn_of(images, labels), CLASSES7, TEMPLATES,
                           batch_size=8, text_batch_size=6, text_length=8)
  got = clf.evaluate(enc_img, enc_txt, fake_tokenize)
  assert traces == {"img": 1, "txt": 1}
  ref = brute_force(images, labels, CLASSES7, TEMPLATES, 8, (1, 5))
  assert got["jit/top1"] == pytest.approx(ref[1]) and got["jit/top5"] == pytest.approx(ref[5])


def test_default_tokenizer_is_imported_lazily(monkeypatch):
  calls = []

  def tokenize_texts(texts, length, method="truncate"):
    calls.append((len(texts), length, method))
    return fake_tokenize(texts, length, "truncate")

  fake_module = types.ModuleType("clipa_t5x.data.text_reduction")
  fake_module.tokenize_texts = tokenize_texts
  monkeypatch.setitem(sys.modules, "clipa_t5x.data.text_reduction", fake_module)
  images, labels = make_examples(5, 7)
  clf = ZeroShotClassifier("d", examples_fn_of(images, labels), CLASSES7, TEMPLATES,
                           text_length=12, text_reduction="syntax")
  clf.evaluate(fake_encode_images, fake_encode_texts)
  assert calls == [(len(CLASSES7) * len(TEMPLATES), 12, "syntax")]


def test_examples_from_tf_dataset():
  tf = pytest.importorskip("tensorflow")
  images, labels = make_examples(7, 7, seed=9)
  built = []

  def ds_fn():
    built.append(1)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

  examples_fn = zeroshot.examples_from_tf_dataset(ds_fn)
  out = list(examples_fn())
  assert len(out) == 7 and len(built) == 1
  np.testing.assert_array_equal(out[3]["image"], images[3])
  assert out[3]["label"] == labels[3]
  clf = ZeroShotClassifier("tf", examples_fn, CLASSES7, TEMPLATES, batch_size=3)
  got = clf.evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  ref = brute_force(images, labels, CLASSES7, TEMPLATES, 32, (1, 5))
  assert got["tf/top1"] == pytest.approx(ref[1]) and len(built) == 2
  # A dataset object (not a factory) works too.
  assert len(list(zeroshot.examples_from_tf_dataset(ds_fn())())) == 7
  with pytest.raises(ValueError, match="tf.data.Dataset"):
    list(zeroshot.examples_from_tf_dataset(lambda: [1, 2])())


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(templates=["a photo"]), "placeholder"),
    (dict(templates="a {c}"), "templates must be a non-empty list"),
    (dict(templates=[]), "templates must be a non-empty list"),
    (dict(class_names=[]), "class_names must be a non-empty list"),
    (dict(class_names=["a", 3]), "class_names must all be strings"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(text_length=0), "text_length must be a positive int"),
    (dict(num_examples=0), "num_examples must be a positive int"),
    (dict(ks=()), "ks must be"),
    (dict(examples_fn=[{"image": 0}]), "examples_fn must be a zero-arg callable"),
])
def test_bad_config(kwargs, match):
  args = dict(name="bad", examples_fn=lambda: iter(()), class_names=CLASSES7, templates=TEMPLATES)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    ZeroShotClassifier(**args)


def _clf(images, labels, **kw):
  return ZeroShotClassifier("bad", examples_fn_of(images, labels), CLASSES7, TEMPLATES,
                            batch_size=4, **kw)


def test_bad_runtime_input():
  images, labels = make_examples(6, 7)
  with pytest.raises(ValueError, match="no examples"):
    ZeroShotClassifier("e", lambda: iter(()), CLASSES7, TEMPLATES).evaluate(
        fake_encode_images, fake_encode_texts, fake_tokenize)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\)"):
    _clf(images, labels + 7).evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  with pytest.raises(ValueError, match="encode_images must return"):
    _clf(images, labels).evaluate(lambda x: fake_encode_images(x)[:2], fake_encode_texts,
                                  fake_tokenize)
  with pytest.raises(ValueError, match="encode_texts must return"):
    _clf(images, labels).evaluate(fake_encode_images, lambda t: fake_encode_texts(t)[0],
                                  fake_tokenize)
  with pytest.raises(ValueError, match="tokenize must return"):
    _clf(images, labels).evaluate(fake_encode_images, fake_encode_texts,
                                  lambda t, n, m: fake_tokenize(t, n + 1, m))
  with pytest.raises(ValueError, match="same embedding size"):
    _clf(images, labels).evaluate(lambda x: np.ones((x.shape[0], 3)), fake_encode_texts,
                                  fake_tokenize)
  with pytest.raises(ValueError, match="'image' and 'label'"):
    ZeroShotClassifier("k", lambda: iter([{"img": images[0]}]), CLASSES7, TEMPLATES).evaluate(
        fake_encode_images, fake_encode_texts, fake_tokenize)
  with pytest.raises(ValueError, match="one shape"):
    mixed = [images[0], images[1][:2]]
    _clf(mixed, labels[:2]).evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)
  with pytest.raises(ValueError, match="integer class id"):
    _clf(images, labels.astype(np.float32)).evaluate(
        fake_encode_images, fake_encode_texts, fake_tokenize)
  with pytest.raises(ValueError, match="exceeds"):
    ZeroShotClassifier("k", examples_fn_of(images, labels % 3), CLASSES7[:3], TEMPLATES,
                       ks=(5,)).evaluate(fake_encode_images, fake_encode_texts, fake_tokenize)


def test_factors_score_parts_of_the_label():
  """A factor is right when the top-1 class shares it with the true class."""
  names = ["zero", "one", "two", "three"]

  def tokenize(texts, length, method):
    return np.array([[names.index(t.split()[-1]) + 1] + [0] * (length - 1) for t in texts],
                    np.int32)

  encode_texts = lambda tokens: np.eye(len(names), dtype=np.float32)[tokens[:, 0] - 1]
  encode_images = lambda images: np.eye(len(names), dtype=np.float32)[images[:, 0, 0, 0]]
  predicted = np.array([0, 1, 2, 3, 0, 1])
  labels = np.array([0, 3, 2, 1, 1, 1])  # top-1 right 3 of 6; parity right 5 of 6
  images = np.zeros((6, 2, 2, 3), np.uint8)
  images[:, 0, 0, 0] = predicted
  clf = ZeroShotClassifier("f", examples_fn_of(images, labels), names, ["{c}"], batch_size=4,
                           text_length=2, ks=(1,), factors=lambda: {"parity": [0, 1, 0, 1]})
  got = clf.evaluate(encode_images, encode_texts, tokenize)
  assert got == {"f/top1": 0.5, "f/parity_top1": 5 / 6, "f/num_examples": 6}
  bad = ZeroShotClassifier("f", examples_fn_of(images, labels), names, ["{c}"],
                           factors={"parity": [0, 1]})
  with pytest.raises(ValueError, match="one id per class"):
    bad.evaluate(encode_images, encode_texts, tokenize)


def test_parse_class_names_takes_lists_files_keys_and_commas(tmp_path):
  (tmp_path / "names.txt").write_text("cat\n\n dog \n")
  (tmp_path / "names.json").write_text('["red thing", "blue thing"]')
  assert zeroshot.parse_class_names(["a", "b"]) == ["a", "b"]
  assert zeroshot.parse_class_names(str(tmp_path / "names.txt")) == ["cat", "dog"]
  assert zeroshot.parse_class_names(str(tmp_path / "names.json")) == ["red thing", "blue thing"]
  assert zeroshot.parse_class_names(" cat, dog ,car") == ["cat", "dog", "car"]
  assert len(zeroshot.parse_class_names("imagenet1k")) == 1000
  for value, message in ((["cat"], "at least two"), ("cat", "at least two"),
                         (["a", " "], "non-empty strings"),
                         (str(tmp_path / "missing.txt"), "does not exist"), (3, "got int")):
    with pytest.raises(ValueError, match=message) as e:
      zeroshot.parse_class_names(value, "--class_names")
    assert str(e.value).startswith("--class_names")


def test_parse_templates(tmp_path):
  (tmp_path / "t.txt").write_text("a {c}.\nthe {c}\n")
  assert zeroshot.parse_templates(None) == list(zeroshot.DEFAULT_TEMPLATES)
  assert zeroshot.parse_templates("a photo of {c}") == ["a photo of {c}"]
  assert zeroshot.parse_templates(str(tmp_path / "t.txt")) == ["a {c}.", "the {c}"]
  assert len(zeroshot.parse_templates("imagenet1k")) == 80
  for value, message in (("photo", "placeholder"), ([], "is empty"), (["x"], "placeholder")):
    with pytest.raises(ValueError, match=message):
      zeroshot.parse_templates(value)
