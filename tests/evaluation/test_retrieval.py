"""Tests of clipa_t5x.evaluation.retrieval against brute-force numpy references."""

import numpy as np
import pytest

from clipa_t5x import losses
from clipa_t5x.evaluation import metrics
from clipa_t5x.evaluation import retrieval


def _unit(x):
  return np.asarray(losses.l2_normalize(np.asarray(x, np.float32)))


def _brute_force(image, text, owner, ks):
  """Full similarity matrix, explicit ranking by (score desc, index asc)."""
  sims = image.astype(np.float64) @ text.astype(np.float64).T  # [N, T]
  n, t = sims.shape
  out = {}
  for k in ks:
    i2t_hits = []
    for i in range(n):
      order = sorted(range(t), key=lambda j: (-sims[i, j], j))
      i2t_hits.append(any(owner[j] == i for j in order[:k]))
    t2i_hits = []
    for j in range(t):
      order = sorted(range(n), key=lambda i: (-sims[i, j], i))
      t2i_hits.append(owner[j] in order[:k])
    out[f"image_to_text/R@{k}"] = float(np.mean(i2t_hits))
    out[f"text_to_image/R@{k}"] = float(np.mean(t2i_hits))
  return out


def _data(seed, n=13, per_image=(1, 5), d=4, levels=3):
  """Small-integer embeddings: exact float sums and many exact ties."""
  rng = np.random.RandomState(seed)
  counts = rng.randint(per_image[0], per_image[1] + 1, n)
  owner = np.repeat(np.arange(n), counts)
  rng.shuffle(owner)  # captions of one image need not be adjacent
  image = rng.randint(-levels, levels + 1, (n, d)).astype(np.float32)
  text = rng.randint(-levels, levels + 1, (owner.size, d)).astype(np.float32)
  return image, text, owner


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block_size", [1, 4, 1000])
def test_recall_matches_brute_force_with_ties(seed, block_size):
  image, text, owner = _data(seed, levels=1 if seed % 2 else 3)
  got = retrieval.recall_at_k(image, text, owner, (1, 2, 5, 10), block_size=block_size)
  want = _brute_force(image, text, owner, (1, 2, 5, 10))
  assert got == pytest.approx(want, abs=0)


def test_ties_go_to_the_lower_index_like_metrics():
  # All scores equal: the first candidate wins every query.
  image = np.ones((3, 2), np.float32)
  text = np.ones((4, 2), np.float32)
  owner = np.array([1, 0, 2, 0])
  i2t, t2i = retrieval.retrieval_ranks(image, text, owner)
  # image 0 owns captions 1, 3 -> best is 1, caption 0 (image 1's) comes before it.
  np.testing.assert_array_equal(i2t, [1, 0, 2])
  np.testing.assert_array_equal(t2i, [1, 0, 2, 0])
  # text -> image ranks equal metrics.label_ranks on the same [T, N] scores.
  np.testing.assert_array_equal(t2i, metrics.label_ranks(text @ image.T, owner))


def test_text_to_image_ranks_equal_metrics_label_ranks():
  image, text, owner = _data(3, n=20)
  _, t2i = retrieval.retrieval_ranks(image, text, owner, block_size=3)
  np.testing.assert_array_equal(t2i, metrics.label_ranks(text @ image.T, owner))


def test_one_caption_per_image_is_symmetric_classification():
  image, text, owner = _data(5, n=17, per_image=(1, 1))
  i2t, _ = retrieval.retrieval_ranks(image, text, owner, block_size=5)
  # i2t with one caption per image = classification of images over captions.
  caption_of_image = np.argsort(owner)
  np.testing.assert_array_equal(i2t, metrics.label_ranks(image @ text.T, caption_of_image))


def test_chunked_equals_full_matrix_on_random_float_embeddings():
  rng = np.random.RandomState(0)
  image = _unit(rng.randn(50, 16))
  owner = np.repeat(np.arange(50), 5)
  text = _unit(image[owner] + 0.8 * rng.randn(250, 16))
  full = retrieval.recall_at_k(image, text, owner, block_size=10_000)
  for block in (1, 7, 64):
    assert retrieval.recall_at_k(image, text, owner, block_size=block) == full
  assert full == _brute_force(image, text, owner, (1, 5, 10))


def test_largest_block_is_bounded_by_block_size(monkeypatch):
  seen = []
  real = retrieval._similarity_block

  def watch(q, c):
    out = real(q, c)
    seen.append(out.shape)
    return out

  monkeypatch.setattr(retrieval, "_similarity_block", watch)
  rng = np.random.RandomState(1)
  owner = np.repeat(np.arange(40), 5)
  retrieval.recall_at_k(rng.randn(40, 8), rng.randn(200, 8), owner, block_size=16)
  assert seen and max(a * b for a, b in seen) <= 16 * 16
  # Both directions covered every (query, candidate) pair exactly once.
  assert sum(a * b for a, b in seen) == 2 * 40 * 200


def test_nan_on_the_correct_candidate_is_a_miss():
  image = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  text = np.array([[np.nan, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
  owner = np.array([0, 1, 0])
  i2t, t2i = retrieval.retrieval_ranks(image, text, owner)
  assert t2i[0] == 2  # NaN true score: rank = number of images, a miss
  assert t2i[1] == 0 and t2i[2] == 0
  # image 0: caption 0 is NaN, caption 2 is its best; the NaN caption is its own,
  # so nothing else ranks before caption 2.
  assert i2t[0] == 0
  # image 1: caption 1 scores 1, caption 0 (NaN, someone else's) ranks above.
  assert i2t[1] == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(image=np.zeros((2, 3)), text=np.zeros((2, 4)), owner=[0, 1]), "D=3"),
    (dict(image=np.zeros((2, 3)), text=np.zeros((2, 3)), owner=[0, 2]), r"\[0, 2\)"),
    (dict(image=np.zeros((2, 3)), text=np.zeros((2, 3)), owner=[0, 0]), "image 1 has no caption"),
    (dict(image=np.zeros((2, 3)), text=np.zeros((3, 3)), owner=[0, 1]), "num_captions=3"),
    (dict(image=np.zeros((2, 3)), text=np.zeros((2, 3)), owner=[0.0, 1.0]), "integer"),
])
def test_bad_inputs_raise_one_line(kwargs, match):
  with pytest.raises(ValueError, match=match) as info:
    retrieval.recall_at_k(kwargs["image"], kwargs["text"], np.asarray(kwargs["owner"]))
  assert "\n" not in str(info.value)


# ------------------------------------------------------------------ evaluator
def _fake_encoders(dim=6, seed=0):
  """Deterministic encoders: image = its mean colour; text = token hash."""
  proj = np.random.RandomState(seed).randn(3, dim).astype(np.float32)
  calls = {"images": [], "texts": []}

  def encode_images(x):
    calls["images"].append(x.shape)
    return _unit(x.reshape(x.shape[0], -1, 3).mean(1) @ proj)

  def encode_texts(t):
    calls["texts"].append(t.shape)
    return _unit(np.stack([np.sin(t.sum(1) * (i + 1)) for i in range(dim)], 1))

  return encode_images, encode_texts, calls


def _tokenize(texts, length, method):
  del method
  return np.array([[sum(map(ord, s)) % 97 + i for i in range(length)] for s in texts], np.int32)


def _examples(n=11, seed=0):
  rng = np.random.RandomState(seed)
  out = []
  for i in range(n):
    caps = [f"caption {i} {j}" for j in range(1 + i % 3)]
    out.append({"image": rng.randint(0, 255, (4, 4, 3)).astype(np.uint8),
                "captions": np.array([c.encode() for c in caps], dtype=object)})
  return out


def test_evaluator_uses_fixed_batches_and_padding_never_counts():
  examples = _examples()
  ev = retrieval.RetrievalEvaluator("toy", lambda: iter(examples), batch_size=4, text_length=5,
                                    text_batch_size=3, ks=(1, 5))
  enc_i, enc_t, calls = _fake_encoders()
  got = ev.evaluate(enc_i, enc_t, _tokenize)
  assert set(calls["images"]) == {(4, 4, 4, 3)} and len(calls["images"]) == 3
  assert set(calls["texts"]) == {(3, 5)}
  # Reference: encode everything at once, no padding.
  images = np.stack([e["image"] for e in examples])
  caps = [c.decode() for e in examples for c in e["captions"]]
  owner = np.concatenate([[i] * len(e["captions"]) for i, e in enumerate(examples)])
  want = retrieval.recall_at_k(enc_i(images), enc_t(_tokenize(caps, 5, "")), owner, (1, 5))
  assert got == {**{f"toy/{k}": v for k, v in want.items()},
                 "toy/num_images": 11, "toy/num_captions": len(caps)}


def test_evaluator_num_examples_and_single_string_caption():
  examples = [{"image": np.full((2, 2, 3), i, np.uint8), "captions": f"c{i}"} for i in range(6)]
  ev = retrieval.RetrievalEvaluator("s", lambda: iter(examples), batch_size=4, text_length=3,
                                    num_examples=5)
  enc_i, enc_t, _ = _fake_encoders()
  got = ev.evaluate(enc_i, enc_t, _tokenize)
  assert got["s/num_images"] == 5 and got["s/num_captions"] == 5


def test_evaluator_errors_are_clear():
  enc_i, enc_t, _ = _fake_encoders()
  with pytest.raises(ValueError, match="no examples"):
    retrieval.RetrievalEvaluator("e", lambda: iter([])).evaluate(enc_i, enc_t, _tokenize)
  with pytest.raises(ValueError, match="'image' and 'captions'"):
    retrieval.RetrievalEvaluator("e", lambda: iter([{"image": 1}])).evaluate(
        enc_i, enc_t, _tokenize)
  with pytest.raises(ValueError, match="batch_size must be a positive int"):
    retrieval.RetrievalEvaluator("e", lambda: [], batch_size=0)
  with pytest.raises(ValueError, match="ks must be"):
    retrieval.RetrievalEvaluator("e", lambda: [], ks=(0,))
