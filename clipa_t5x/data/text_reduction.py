"""CLIPA text token reduction: shorten captions to ``length`` tokens, pure TF.

CLIPA trains on very short texts (8 tokens in CLIPA-v2 pretraining) and
compares four ways of choosing which word pieces of a caption survive:

* ``'truncate'``: the first ``length - 1`` pieces (CLIPA's ``bert_tokenize``);
* ``'random'``: a random subset of ``length - 1`` pieces, in original order;
* ``'block'``: one random contiguous span of ``length - 1`` pieces;
* ``'syntax'``: CLIPA-v2's ``noun_tokenize``. Only when a caption has more than
  ``length - 1`` *words*, words are ranked by the part-of-speech priority of
  their first piece (nouns 1, adjectives 2, verbs 3, other 4; ties by position,
  i.e. a stable sort), the best ``length - 1`` words are kept in their
  original order, flattened to pieces and cut to ``length - 1``. The priority
  table is built offline by ``tools/build_syntax_priority.py``. (CLIPA's code
  uses ``tf.argsort`` without ``stable=True``; we make the tie-break explicit.)

Every output is int32 ``[length]``: ``[CLS]``, the kept pieces, zero padding.
``reduce_text`` works on one caption with dense ops (the per-example path of a
``tf.data`` map), ``reduce_batch`` on a ragged batch (``tokenize_texts``, e.g.
zero-shot prompts); on a batch of one they agree, random draws included.
Random methods use only stateless ops, so a seed fixes the result.

Seeds in ``tokenize_and_reduce`` (the SeqIO preprocessor): with ``seed=None``
the random methods take per-example seeds from SeqIO's
``map_over_dataset(num_seeds=1)`` stream, reproducible when the SeqIO Task is
given a seed (``seqio.utils.map_seed_manager``), and new for every element the
map sees, so a repeated dataset gets fresh draws each epoch. With an integer
``seed`` an example's seed is ``[seed, fingerprint(caption)]``: the same caption
reduces identically in every run, epoch, shard and order.
"""

import functools
import os
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from clipa_t5x.data import tokenizer as tokenizer_lib

METHODS = ("truncate", "random", "block", "syntax")
RANDOM_METHODS = ("random", "block")

SYNTAX_PRIORITY_PATH: str = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "assets",
    "syntax_priority.txt")
# Sorts after every real priority (1..4): padding slots of a dense batch.
_NO_WORD = 5


def check_method(method: str) -> str:
  """Returns ``method`` if it is one of ``METHODS``, else raises ValueError."""
  if method not in METHODS:
    raise ValueError(f"unknown text reduction method {method!r}; choose one "
                     f"of {METHODS}")
  return method


@functools.lru_cache(maxsize=None)
def load_syntax_priority(path: str = SYNTAX_PRIORITY_PATH) -> np.ndarray:
  """Per-vocab-id priorities (1 noun, 2 adjective, 3 verb, 4 other), int32.

  Args:
    path: text file with one integer per vocabulary id.

  Returns:
    Read-only int32 numpy array ``[vocab_size]``.
  """
  if not os.path.exists(path):
    raise ValueError(f"syntax priority table {path!r} not found; build it with "
                     "tools/build_syntax_priority.py")
  table = np.loadtxt(path, dtype=np.int32, ndmin=1)
  if table.size and (table.min() < 1 or table.max() > 4):
    raise ValueError(f"{path!r} must hold priorities 1..4, found "
                     f"{table.min()}..{table.max()}; rebuild it")
  table.setflags(write=False)
  return table


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_table_matches(tok: tokenizer_lib.WordpieceTokenizer) -> None:
  size = load_syntax_priority().shape[0]
  if size != tok.vocab_size:
    raise ValueError(f"syntax priority table has {size} rows but the "
                     f"vocabulary has {tok.vocab_size}; rebuild it with "
                     "tools/build_syntax_priority.py")


def _as_seed(seed) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed)
  if not seed.dtype.is_integer or seed.shape.rank != 1 or (
      seed.shape[0] is not None and seed.shape[0] != 2):
    raise ValueError(f"seed must be an integer tensor of shape [2] (as for "
                     f"tf.random.stateless_*), got {seed.dtype.name} "
                     f"{seed.shape}")
  return tf.cast(seed, tf.int64)


def _gather_rows(values: tf.RaggedTensor, local: tf.RaggedTensor
                 ) -> tf.RaggedTensor:
  """``out[b] = values[b][local[b]]`` for ragged ``values`` [B, (n), ...].

  Args:
    values: ragged ``[B, (n), ...]``.
    local: ragged int ``[B, (k)]`` of indices into each row of ``values``.

  Returns:
    ragged ``[B, (k), ...]``.
  """
  starts = tf.cast(values.row_starts(), local.dtype)
  flat = local.values + tf.repeat(starts, local.row_lengths())
  return tf.RaggedTensor.from_row_splits(
      tf.gather(values.values, flat), tf.cast(local.row_splits, tf.int64))


def _first_k_sorted(order: tf.Tensor, k: tf.Tensor) -> tf.RaggedTensor:
  """Row b: the first ``k[b]`` entries of ``order[b]``, sorted ascending."""
  width = tf.shape(order, out_type=tf.int64)[1]
  valid = tf.range(width)[None, :] < k[:, None]
  big = tf.constant(np.iinfo(np.int32).max, order.dtype)
  ordered = tf.sort(tf.where(valid, order, big), axis=1)
  return tf.RaggedTensor.from_tensor(ordered, lengths=k)


def _select_pieces(pieces: tf.RaggedTensor, keep: int, method: str,
                   seed: Optional[tf.Tensor]) -> tf.RaggedTensor:
  """Pieces ``[B, (n)]`` → at most ``keep`` pieces per row (random/block)."""
  n = pieces.row_lengths()
  k = tf.minimum(n, keep)
  if method == "random":
    # Longest row (reduce_max of no rows is the int64 minimum, hence the max).
    width = tf.maximum(tf.reduce_max(n), 0)
    noise = tf.random.stateless_uniform(
        tf.stack([pieces.nrows(), tf.maximum(width, 1)]), seed)
    # Padding slots get -1 < every uniform draw, so top-k skips them.
    real = tf.range(tf.maximum(width, 1))[None, :] < n[:, None]
    noise = tf.where(real, noise, -1.0)
    top = tf.math.top_k(noise, k=tf.cast(tf.minimum(width, keep), tf.int32))
    local = _first_k_sorted(tf.cast(top.indices, tf.int64), k)
  else:  # block
    u = tf.random.stateless_uniform(tf.reshape(pieces.nrows(), [1]), seed)
    spans = n - k + 1  # number of possible starts, >= 1
    start = tf.minimum(
        tf.cast(u * tf.cast(spans, tf.float32), tf.int64), spans - 1)
    local = tf.ragged.range(start, start + k)
  return _gather_rows(pieces, local)


def _select_words(word_pieces: tf.RaggedTensor, keep: int,
                  priority: tf.Tensor) -> tf.RaggedTensor:
  """``[B, (words), (pieces)]`` → best ``keep`` words per row, order kept."""
  words = word_pieces.values  # [total words, (pieces)]; each has >= 1 piece
  first = tf.gather(words.values, words.row_starts())
  prio = tf.gather(priority, first)
  dense = tf.RaggedTensor.from_row_splits(
      prio, word_pieces.row_splits).to_tensor(default_value=_NO_WORD)
  # Stable: equal priorities keep caption order, so with <= keep words every
  # word is kept and the caption is unchanged.
  order = tf.argsort(dense, axis=1, stable=True)
  k = tf.minimum(word_pieces.row_lengths(), keep)
  local = _first_k_sorted(tf.cast(order, tf.int64), k)
  return _gather_rows(word_pieces, local)


def reduce_batch(word_pieces: tf.RaggedTensor, length: int, method: str,
                 seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Reduces a batch of tokenized captions to ``length`` tokens each.

  Args:
    word_pieces: int ``RaggedTensor`` ``[B, (words), (pieces)]`` from
      ``WordpieceTokenizer.word_pieces``.
    length: output length (>= 1), including ``[CLS]``.
    method: one of ``METHODS``.
    seed: int tensor ``[2]``; required by ``'random'`` and ``'block'``
      (one seed for the batch), ignored by the others.

  Returns:
    int32 ``[B, length]``: ``[CLS]``, kept pieces in caption order, zeros.
  """
  check_method(method)
  length = tokenizer_lib.check_length(length)
  if (not isinstance(word_pieces, tf.RaggedTensor)
      or word_pieces.shape.rank != 3):
    raise ValueError("word_pieces must be a RaggedTensor [batch, words, "
                     "pieces], as WordpieceTokenizer.word_pieces returns for a "
                     "vector of captions")
  keep = length - 1
  if method == "syntax":
    priority = tf.constant(load_syntax_priority())
    pieces = _select_words(word_pieces, keep, priority).merge_dims(1, 2)
  else:
    pieces = word_pieces.merge_dims(1, 2)
    if method in RANDOM_METHODS:
      if seed is None:
        raise ValueError(f"method {method!r} is random and needs a seed "
                         "(int tensor of shape [2])")
      pieces = _select_pieces(pieces, keep, method, _as_seed(seed))
  # 'truncate', and 'syntax' after word selection: cut at length - 1.
  return tokenizer_lib.pad_with_cls(pieces, length)


def reduce_text(word_pieces: tf.RaggedTensor, length: int, method: str,
                seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Reduces one tokenized caption to ``length`` tokens.

  Args:
    word_pieces: int ``RaggedTensor`` ``[words, (pieces)]`` of one caption
      (``WordpieceTokenizer.word_pieces`` of a scalar string).
    length: output length (>= 1), including ``[CLS]``.
    method: one of ``METHODS``.
    seed: int tensor ``[2]`` for ``'random'``/``'block'`` (same seed, same
      output); ignored by ``'truncate'`` and ``'syntax'``.

  Returns:
    int32 ``[length]``: ``[CLS]``, kept pieces in caption order, zeros.
  """
  check_method(method)
  length = tokenizer_lib.check_length(length)
  if (not isinstance(word_pieces, tf.RaggedTensor)
      or word_pieces.shape.rank != 2):
    raise ValueError("word_pieces must be a RaggedTensor [words, pieces] of "
                     "one caption; use reduce_batch for a batch")
  if method in RANDOM_METHODS and seed is None:
    raise ValueError(f"method {method!r} is random and needs a seed "
                     "(int tensor of shape [2])")
  # The per-example path of tf.data pipelines: plain dense ops on one caption,
  # several times faster than reduce_batch on a batch of one. The draws equal
  # reduce_batch's for a batch of one (same seed, same number of draws).
  keep = length - 1
  flat = word_pieces.flat_values  # [n]
  n = tf.size(flat, out_type=tf.int64)
  if method == "syntax":
    priority = tf.constant(load_syntax_priority())
    first = tf.gather(flat, word_pieces.row_starts())
    order = tf.argsort(tf.gather(priority, first), stable=True)
    kept_words = order[:keep]
    kept = tf.scatter_nd(kept_words[:, None], tf.ones_like(kept_words),
                         tf.reshape(tf.cast(word_pieces.nrows(), tf.int32),
                                    [1]))
    flat = tf.boolean_mask(flat, tf.gather(kept, word_pieces.value_rowids())
                           > 0)
  elif method == "random":
    noise = tf.random.stateless_uniform(
        tf.stack([tf.constant(1, tf.int64), tf.maximum(n, 1)]),
        _as_seed(seed))[0]
    top = tf.math.top_k(noise[:n], k=tf.cast(tf.minimum(n, keep), tf.int32))
    flat = tf.gather(flat, tf.sort(top.indices))
  elif method == "block":
    k = tf.minimum(n, keep)
    u = tf.random.stateless_uniform([1], _as_seed(seed))[0]
    spans = n - k + 1
    start = tf.minimum(tf.cast(u * tf.cast(spans, tf.float32), tf.int64),
                       spans - 1)
    flat = flat[start:start + k]
  body = flat[:keep]
  body = tf.pad(body, [[0, keep - tf.size(body)]])
  out = tf.cast(tf.concat([tf.constant([tokenizer_lib.CLS_ID], body.dtype),
                           body], axis=0), tf.int32)
  out.set_shape([length])
  return out


def tokenize_texts(texts: Sequence[str], length: int, method: str = "truncate",
                 seed: int = 0) -> np.ndarray:
  """Tokenizes and reduces a list of strings (e.g. zero-shot prompts).

  Args:
    texts: N strings.
    length: output length (>= 1), including ``[CLS]``.
    method: one of ``METHODS``; ``'truncate'`` and ``'syntax'`` involve no
      randomness.
    seed: integer seed of ``'random'``/``'block'`` (the whole list is reduced
      with one stateless draw, so the result is reproducible).

  Returns:
    numpy int32 ``[N, length]``.
  """
  check_method(method)
  if isinstance(texts, (str, bytes)):
    raise ValueError("tokenize_texts takes a sequence of strings, not one "
                     "string; wrap it in a list")
  if method in RANDOM_METHODS and not _is_int(seed):
    raise ValueError(f"seed must be an int, got {seed!r}")
  texts = tf.constant(list(texts), dtype=tf.string, shape=[len(texts)])
  tok = tokenizer_lib.get_tokenizer()
  if method == "syntax":
    _check_table_matches(tok)
  word_pieces = tok.word_pieces(texts)
  return reduce_batch(word_pieces, length, method,
                      tf.constant([seed, 0], tf.int64)).numpy()


def tokenize_and_reduce(dataset: tf.data.Dataset,
                        sequence_length: Mapping[str, int],
                        method: str = "truncate", key: str = "text",
                        seed: Optional[int] = None) -> tf.data.Dataset:
  """SeqIO preprocessor: caption string ``key`` → int32 ``[length]`` tokens.

  SeqIO passes ``sequence_length`` by keyword (e.g. ``{'image': 64,
  'text': 8}``); bind the other arguments with ``functools.partial`` or gin.
  Other features pass through untouched.

  Args:
    dataset: examples (dicts) whose ``key`` feature is a scalar tf.string.
    sequence_length: feature lengths; the text length is
      ``sequence_length[key]``.
    method: one of ``METHODS``.
    key: name of the caption feature, replaced by its tokens.
    seed: ``None``: random methods draw per-example seeds from SeqIO's
      ``map_over_dataset(num_seeds=1)`` (deterministic under a seeded SeqIO
      Task, fresh each epoch). An int: per-example seed
      ``[seed, fingerprint(caption)]``, identical across runs and epochs.

  Returns:
    The mapped dataset.
  """
  check_method(method)
  if sequence_length is None or key not in sequence_length:
    raise ValueError(f"sequence_length must give a length for feature {key!r}, "
                     f"got {sequence_length!r}")
  length = tokenizer_lib.check_length(sequence_length[key])
  spec = dataset.element_spec
  if not isinstance(spec, Mapping) or key not in spec:
    raise ValueError(f"examples must be dicts with a {key!r} feature; got "
                     f"{spec!r}")
  if spec[key].dtype != tf.string or spec[key].shape.rank not in (0, None):
    raise ValueError(f"feature {key!r} must be a scalar tf.string caption, got "
                     f"{spec[key].dtype.name} {spec[key].shape}; sample one "
                     "caption per example first")
  if seed is not None and not _is_int(seed):
    raise ValueError(f"seed must be None or an int, got {seed!r}")
  tok = tokenizer_lib.get_tokenizer()
  if method == "syntax":
    _check_table_matches(tok)  # fail early, not inside the pipeline

  # Written with TF ops only: skipping autograph saves seconds per pipeline build.
  @tf.autograph.experimental.do_not_convert
  def reduce_example(ex, example_seed):
    ex = dict(ex)
    text = tf.reshape(ex[key], [])
    ex[key] = reduce_text(tok.word_pieces(text), length, method, example_seed)
    return ex

  if method not in RANDOM_METHODS:
    return dataset.map(lambda ex: reduce_example(ex, None),
                       num_parallel_calls=tf.data.AUTOTUNE)
  if seed is not None:
    def with_caption_seed(ex):
      fingerprint = tf.strings.to_hash_bucket_fast(
          tf.reshape(ex[key], []), np.iinfo(np.int64).max)
      return reduce_example(
          ex, tf.stack([tf.constant(seed, tf.int64), fingerprint]))
    return dataset.map(with_caption_seed, num_parallel_calls=tf.data.AUTOTUNE)

  import seqio  # pylint: disable=import-outside-toplevel

  @seqio.map_over_dataset(num_seeds=1)
  def with_seqio_seed(ex, seed):
    return reduce_example(ex, seed)

  return with_seqio_seed(dataset)
