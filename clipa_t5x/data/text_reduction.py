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
``reduce_text`` is the one implementation: it works on one caption with dense
ops (the per-example path of a ``tf.data`` map); ``reduce_batch`` maps it over
a ragged batch (``tokenize_texts``, e.g. zero-shot prompts), row ``i`` with
seed ``seed + [0, i]``, so a batch of one equals ``reduce_text``.
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


def reduce_batch(word_pieces: tf.RaggedTensor, length: int, method: str,
                 seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Reduces a batch of tokenized captions to ``length`` tokens each.

  ``reduce_text`` row by row (one implementation of the four methods): row
  ``i`` draws with seed ``seed + [0, i]``, so row 0 of a batch equals
  ``reduce_text`` with ``seed`` and the rows draw independently.

  Args:
    word_pieces: int ``RaggedTensor`` ``[B, (words), (pieces)]`` from
      ``WordpieceTokenizer.word_pieces``.
    length: output length (>= 1), including ``[CLS]``.
    method: one of ``METHODS``.
    seed: int tensor ``[2]``; required by ``'random'`` and ``'block'``,
      ignored by the others.

  Returns:
    int32 ``[B, length]``: ``[CLS]``, kept pieces in caption order, zeros.
  """
  length = _check_args(word_pieces, length, method, seed, 3, "[batch, words, pieces], as "
                       "WordpieceTokenizer.word_pieces returns for a vector of captions")
  random = method in RANDOM_METHODS
  rows = tf.range(word_pieces.nrows(), dtype=tf.int64)
  base = _as_seed(seed) if random else tf.zeros([2], tf.int64)
  seeds = base[None, :] + tf.stack([tf.zeros_like(rows), rows], axis=1)
  return _rows_fn(length, method)(word_pieces, seeds)


def _check_args(word_pieces: tf.RaggedTensor, length: int, method: str,
                seed: Optional[tf.Tensor], rank: int, shape: str) -> int:
  """The argument checks of ``reduce_batch`` and ``reduce_text``; returns ``length``."""
  check_method(method)
  length = tokenizer_lib.check_length(length)
  if not isinstance(word_pieces, tf.RaggedTensor) or word_pieces.shape.rank != rank:
    raise ValueError(f"word_pieces must be a RaggedTensor {shape}")
  if method in RANDOM_METHODS and seed is None:
    raise ValueError(f"method {method!r} is random and needs a seed (int tensor of shape [2])")
  return length


@functools.lru_cache(maxsize=None)
def _rows_fn(length: int, method: str):
  """``reduce_text`` mapped over rows, as a graph (eager map_fn is ~10 ms a row)."""
  random = method in RANDOM_METHODS

  def fn(word_pieces, seeds):
    return tf.map_fn(
        lambda row: reduce_text(row[0], length, method, row[1] if random else None),
        (word_pieces, seeds), fn_output_signature=tf.TensorSpec([length], tf.int32),
        parallel_iterations=64)

  return tf.function(fn, autograph=False, reduce_retracing=True)


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
  length = _check_args(word_pieces, length, method, seed, 2,
                       "[words, pieces] of one caption; use reduce_batch for a batch")
  # Plain dense ops on one caption: the per-example path of tf.data pipelines
  # (a vectorised ragged version measured about 2x slower per caption there).
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
    seed: integer seed of ``'random'``/``'block'``; text ``i`` draws with the
      stateless seed ``[seed, i]``, so the result is reproducible.

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
  return reduce_batch(tok.word_pieces(texts), length, method,
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
