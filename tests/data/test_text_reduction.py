"""Tests of clipa_t5x.data.text_reduction (CLIPA text token reduction)."""

import functools
import importlib.util
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from clipa_t5x.data import text_reduction as tr
from clipa_t5x.data import tokenizer as tok_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
FIGURE_CAPTION = "an orange cat that is sitting on a ledge"


@pytest.fixture(scope="module")
def tok():
  return tok_lib.get_tokenizer()


def decode(tok, ids):
  return [tok.vocab[i] for i in ids if i != tok_lib.PAD_ID]


def captions(n=200, seed=0):
  """Deterministic captions of 0..40 words, some with multi-piece words."""
  rng = random.Random(seed)
  words = ("a the orange cat dog is sitting on ledge two people walking "
           "unbelievably photographers skateboarding red bus near beautiful "
           "mountains , . with 2019 of in and large wooden table under "
           "giraffes riverbank café 🐱 東京").split()
  return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
          for _ in range(n)]


def syntax_reference(word_pieces, length, priority):
  """Plain-Python CLIPA noun_tokenize on one caption's [[piece ids]]."""
  keep = length - 1
  if len(word_pieces) > keep:
    ranked = sorted(range(len(word_pieces)),
                    key=lambda w: (priority[word_pieces[w][0]], w))
    word_pieces = [word_pieces[w] for w in sorted(ranked[:keep])]
  pieces = [p for w in word_pieces for p in w][:keep]
  return [tok_lib.CLS_ID] + pieces + [0] * (keep - len(pieces))


# --- the priority table ---------------------------------------------------


def test_table_shape_and_known_entries(tok):
  table = tr.load_syntax_priority()
  assert table.shape == (30522,) and table.dtype == np.int32
  assert set(np.unique(table)) == {1, 2, 3, 4}
  ids = {w: tok.vocab.index(w) for w in
         ["cat", "ledge", "dog", "man", "orange", "red", "wooden", "sitting",
          "holding", "parked", "is", "are", "was", "an", "a", "the", "that",
          "on", "with", "and", "they", "[CLS]", "[PAD]", "[UNK]", "##s", ",",
          "2019"]}
  want = {"cat": 1, "ledge": 1, "dog": 1, "man": 1, "orange": 2, "red": 2,
          "wooden": 2, "sitting": 3, "holding": 3, "parked": 3}
  for w, i in ids.items():
    assert table[i] == want.get(w, 4), w


def test_table_is_reproducible():
  pytest.importorskip("lemminflect")
  spec = importlib.util.spec_from_file_location(
      "build_syntax_priority",
      os.path.join(REPO, "tools", "build_syntax_priority.py"))
  build = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(build)
  vocab = build.read_vocab(tok_lib.VOCAB_PATH)
  np.testing.assert_array_equal(build.build_table(vocab),
                                tr.load_syntax_priority())


# --- syntax masking ---------------------------------------------------------

# The CLIPA figure's caption: an(4) orange(2) cat(1) that(4) is(4) sitting(3)
# on(4) a(4) ledge(1). Nouns go first, then the adjective, then the verb, then
# function words by position; the kept words stay in caption order.
FIGURE_EXPECTED = {
    1: [],
    2: ["cat"],
    3: ["cat", "ledge"],
    4: ["orange", "cat", "ledge"],
    5: ["orange", "cat", "sitting", "ledge"],
    6: ["an", "orange", "cat", "sitting", "ledge"],
    7: ["an", "orange", "cat", "that", "sitting", "ledge"],
    9: ["an", "orange", "cat", "that", "is", "sitting", "on", "ledge"],
    # 9 words fit: no reduction at all.
    10: ["an", "orange", "cat", "that", "is", "sitting", "on", "a", "ledge"],
}


@pytest.mark.parametrize("length", sorted(FIGURE_EXPECTED))
def test_syntax_figure_caption(tok, length):
  out = tr.reduce_text(tok.word_pieces(tf.constant(FIGURE_CAPTION)), length,
                       "syntax")
  assert out.shape == (length,) and out.dtype == tf.int32
  assert out[0] == tok_lib.CLS_ID
  assert decode(tok, out.numpy()[1:]) == FIGURE_EXPECTED[length]


def test_syntax_works_on_whole_words_and_truncates_pieces(tok):
  # Pieces: the | skate ##boarding | gi ##raf ##fe ##s | run. A word ranks by
  # its first piece: skate(1), gi(1), run(1) beat the(4). 4 words > 3, so the
  # three nouns are kept, flattened (7 pieces) and cut to 3 pieces.
  cap = "the skateboarding giraffes run"
  wp = tok.word_pieces(tf.constant(cap))
  assert [len(w) for w in wp.to_list()] == [1, 2, 4, 1]
  out = tr.reduce_text(wp, 4, "syntax").numpy()
  assert decode(tok, out[1:]) == ["skate", "##boarding", "gi"]
  out = tr.reduce_text(wp, 5, "syntax").numpy()  # 4 words fit: truncation
  assert decode(tok, out[1:]) == ["the", "skate", "##boarding", "gi"]


def test_syntax_matches_python_reference(tok):
  caps = captions(300)
  priority = tr.load_syntax_priority()
  wp = tok.word_pieces(tf.constant(caps))
  for length in (4, 8, 16):
    got = tr.reduce_batch(wp, length, "syntax").numpy()
    want = [syntax_reference(w, length, priority) for w in wp.to_list()]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", tr.METHODS)
def test_single_and_batch_paths_agree(tok, method):
  # reduce_batch maps reduce_text over its rows, row 0 with the batch's seed:
  # on a batch of one they must give the same result, random draws included.
  caps = captions(25, seed=7) + [""]
  for i, cap in enumerate(caps):
    wp = tok.word_pieces(tf.constant(cap))
    seed = tf.constant([i, 3])
    single = tr.reduce_text(wp, 7, method, seed).numpy()
    batch = tr.reduce_batch(tok.word_pieces(tf.constant([cap])), 7, method,
                            seed).numpy()[0]
    np.testing.assert_array_equal(single, batch, err_msg=cap)
    if method == "syntax":
      want = syntax_reference(wp.to_list(), 7, tr.load_syntax_priority())
      np.testing.assert_array_equal(single, want)


def test_tokenize_texts_syntax_is_deterministic_and_batch_independent(tok):
  caps = captions(50, seed=1)
  a = tr.tokenize_texts(caps, 8, "syntax")
  b = tr.tokenize_texts(caps[::-1], 8, "syntax")[::-1]
  np.testing.assert_array_equal(a, b)
  for cap, row in zip(caps[:10], a):
    single = tr.reduce_text(tok.word_pieces(tf.constant(cap)), 8, "syntax")
    np.testing.assert_array_equal(single.numpy(), row)


# --- all methods ---------------------------------------------------------


@pytest.mark.parametrize("method", tr.METHODS)
def test_output_format_and_short_captions(tok, method):
  caps = captions(100, seed=2) + ["", "a cat", "hello world ."]
  wp = tok.word_pieces(tf.constant(caps))
  pieces = wp.merge_dims(1, 2).to_list()
  for length in (1, 5, 12):
    out = tr.reduce_batch(wp, length, method, tf.constant([3, 4])).numpy()
    assert out.shape == (len(caps), length) and out.dtype == np.int32
    assert (out[:, 0] == tok_lib.CLS_ID).all()
    truncated = tr.reduce_batch(wp, length, "truncate").numpy()
    for row, p, t in zip(out, pieces, truncated):
      n = min(len(p), length - 1)
      assert (row[1:1 + n] != 0).all() and (row[1 + n:] == 0).all()
      if len(p) <= length - 1 and method != "syntax":
        # No reduction needed: the caption comes back whole.
        np.testing.assert_array_equal(row, t)
  empty = tr.tokenize_texts([""], 6, method)
  np.testing.assert_array_equal(empty, [[101, 0, 0, 0, 0, 0]])


def test_syntax_without_overflow_of_words_is_truncation(tok):
  # Words <= length-1: no reordering, only piece truncation, as in CLIPA.
  # 3 words (8 pieces) fit in length 4; 5 words fit in length 6.
  for cap, length in [("unbelievably skateboarding photographers", 4),
                      ("a cat on a mat", 6)]:
    np.testing.assert_array_equal(tr.tokenize_texts([cap], length, "syntax"),
                                  tr.tokenize_texts([cap], length, "truncate"))
  # One word too many: nouns cat, mat first, then the function words a, on, a
  # by position (stable sort), so the second "a" is dropped.
  assert decode(tok, tr.tokenize_texts(["a cat on a mat"], 5, "syntax")[0]) == [
      "[CLS]", "a", "cat", "on", "mat"]


def test_truncate_equals_tokenizer_encode(tok):
  caps = captions(50, seed=3)
  np.testing.assert_array_equal(tr.tokenize_texts(caps, 9, "truncate"),
                                tok.encode_batch(caps, 9))


def is_subsequence(small, big):
  it = iter(big)
  return all(any(x == y for y in it) for x in small)


def test_random_keeps_order_and_varies_with_seed(tok):
  cap = ("one two three four five six seven eight nine ten eleven twelve "
         "thirteen fourteen fifteen sixteen seventeen eighteen")
  wp = tok.word_pieces(tf.constant(cap))
  pieces = wp.flat_values.numpy().tolist()
  outs = set()
  for s in range(20):
    out = tr.reduce_text(wp, 8, "random", tf.constant([s, 0])).numpy()
    kept = out[1:].tolist()
    assert len(set(kept)) == 7 and is_subsequence(kept, pieces)
    again = tr.reduce_text(wp, 8, "random", tf.constant([s, 0])).numpy()
    np.testing.assert_array_equal(out, again)
    outs.add(tuple(kept))
  assert len(outs) >= 15


def test_random_is_roughly_uniform(tok):
  cap = " ".join(["x%d" % i for i in range(10)])  # pieces: x, ##0, x, ##1 ...
  # One batch of 400 copies: every row draws its own noise from the seed.
  wp = tok.word_pieces(tf.constant([cap] * 400))
  flat = wp[0].flat_values.numpy()
  n = len(flat)
  counts = np.zeros(n)
  outs = tr.reduce_batch(wp, 6, "random", tf.constant([0, 1])).numpy()[:, 1:]
  assert len({tuple(o) for o in outs}) > 100
  for out in outs:
    # "##k" pieces are unique; the ten "x" pieces share their count evenly.
    for piece in out:
      counts[np.flatnonzero(flat == piece)] += 1.0 / (flat == piece).sum()
  frac = counts / len(outs)
  np.testing.assert_allclose(frac, 5 / n, atol=0.08)


def test_block_is_contiguous_and_varies_with_seed(tok):
  cap = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
  wp = tok.word_pieces(tf.constant(cap))
  pieces = wp.flat_values.numpy().tolist()
  assert len(pieces) == 12  # iota is "io ##ta"; 8 possible 5-piece spans
  starts = set()
  for s in range(60):
    kept = tr.reduce_text(wp, 6, "block", tf.constant([s, 5])).numpy()[1:]
    kept = kept.tolist()
    matches = [i for i in range(len(pieces) - 4) if pieces[i:i + 5] == kept]
    assert matches, kept
    starts.add(matches[0])
  assert starts == set(range(8))  # every span, the last one included


def test_batch_random_depends_only_on_seed(tok):
  caps = captions(30, seed=4)
  a = tr.tokenize_texts(caps, 8, "random", seed=7)
  b = tr.tokenize_texts(caps, 8, "random", seed=7)
  c = tr.tokenize_texts(caps, 8, "random", seed=8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_errors(tok):
  wp = tok.word_pieces(tf.constant("a cat"))
  with pytest.raises(ValueError, match="truncate.*random.*block.*syntax"):
    tr.reduce_text(wp, 8, "nouns")
  with pytest.raises(ValueError, match="needs a seed"):
    tr.reduce_text(wp, 8, "random")
  with pytest.raises(ValueError, match="shape \\[2\\]"):
    tr.reduce_text(wp, 8, "block", tf.constant([1, 2, 3]))
  with pytest.raises(ValueError, match="length"):
    tr.reduce_text(wp, 0, "truncate")
  with pytest.raises(ValueError, match="one caption"):
    tr.reduce_text(tok.word_pieces(tf.constant(["a", "b"])), 8, "truncate")
  with pytest.raises(ValueError, match="unknown text reduction"):
    tr.tokenize_texts(["a"], 8, "first")
  ds = tf.data.Dataset.from_tensor_slices({"text": ["a", "b"]})
  with pytest.raises(ValueError, match="length for feature 'text'"):
    tr.tokenize_and_reduce(ds, {"image": 4})
  with pytest.raises(ValueError, match="'caption' feature"):
    tr.tokenize_and_reduce(ds, {"caption": 4}, key="caption")
  ds2 = tf.data.Dataset.from_tensor_slices({"text": [["a", "b"]]})
  with pytest.raises(ValueError, match="scalar tf.string"):
    tr.tokenize_and_reduce(ds2, {"text": 4})


# --- tf.data / SeqIO ------------------------------------------------------


def make_dataset(caps):
  return tf.data.Dataset.from_tensor_slices({
      "text": caps,
      "image": np.arange(len(caps) * 4, dtype=np.float32).reshape(-1, 2, 2),
      "id": np.arange(len(caps), dtype=np.int64)})


@pytest.mark.parametrize("method", tr.METHODS)
def test_tokenize_and_reduce_in_pipeline(tok, method):
  caps = captions(40, seed=5)
  ds = tr.tokenize_and_reduce(make_dataset(caps), {"image": 2, "text": 8},
                              method=method, seed=11)
  assert ds.element_spec["text"] == tf.TensorSpec([8], tf.int32)
  rows = list(ds.as_numpy_iterator())
  for i, ex in enumerate(rows):
    assert ex["id"] == i
    np.testing.assert_array_equal(ex["image"],
                                  np.arange(4 * i, 4 * i + 4).reshape(2, 2))
    assert ex["text"][0] == tok_lib.CLS_ID
  texts = np.stack([ex["text"] for ex in rows])
  if method in ("truncate", "syntax"):
    np.testing.assert_array_equal(texts, tr.tokenize_texts(caps, 8, method))
  else:
    # Same seed: same reduction of each caption in any order or batch.
    shuffled = tr.tokenize_and_reduce(
        make_dataset(caps).shuffle(40, seed=3), {"text": 8}, method=method,
        seed=11)
    for ex in shuffled.as_numpy_iterator():
      np.testing.assert_array_equal(ex["text"], texts[ex["id"]])
    other = tr.tokenize_and_reduce(make_dataset(caps), {"text": 8},
                                   method=method, seed=12)
    assert not np.array_equal(
        np.stack([ex["text"] for ex in other.as_numpy_iterator()]), texts)


def test_seqio_seeds_are_deterministic_under_a_seed():
  seqio = pytest.importorskip("seqio")
  caps = captions(20, seed=6)

  def run(seed):
    with seqio.utils.map_seed_manager(seed):
      ds = tr.tokenize_and_reduce(make_dataset(caps), {"text": 6},
                                  method="random")
    return np.stack([ex["text"] for ex in ds.as_numpy_iterator()])

  np.testing.assert_array_equal(run(5), run(5))
  assert not np.array_equal(run(5), run(6))


def test_seqio_task_injects_sequence_length():
  seqio = pytest.importorskip("seqio")
  caps = [FIGURE_CAPTION, "a red bus", ""]

  def source(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({"text": caps})

  name = "clipa_test_text_reduction_task"
  seqio.TaskRegistry.remove(name)
  task = seqio.Task(
      name,
      source=seqio.FunctionDataSource(source, splits=["train"]),
      output_features={"text": seqio.Feature(
          seqio.PassThroughVocabulary(32000), add_eos=False, dtype=tf.int32)},
      preprocessors=[functools.partial(tr.tokenize_and_reduce,
                                       method="syntax")])
  ds = task.get_dataset({"text": 4}, split="train", shuffle=False)
  got = np.stack([ex["text"] for ex in ds.as_numpy_iterator()])
  np.testing.assert_array_equal(got, tr.tokenize_texts(caps, 4, "syntax"))
  assert decode(tok_lib.get_tokenizer(), got[0][1:]) == FIGURE_EXPECTED[4]
