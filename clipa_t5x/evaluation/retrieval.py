"""Image-text retrieval: Recall@k in both directions, several captions per image.

Protocol (COCO / Flickr30k, as in CLIP and big_vision): every image has one or
more captions.

* image -> text: an image query is a hit at k if *any* of its captions is
  among the k best-scoring captions;
* text -> image: a caption query is a hit at k if *its* image is among the k
  best-scoring images.

Tie rule, the same as ``metrics.py``: candidates are ranked by score, equal
scores by candidate index, lower first; a NaN score ranks above everything,
and a NaN score on a correct candidate never counts as a hit. For an image
query the best-ranked own caption decides, so its rank is the number of
*other* images' captions ranked before it.

Similarities are computed block by block (``block_size`` queries x
``block_size`` candidates), and only counts are kept, so memory stays bounded
at 5k images x 25k captions whatever the data set size: the largest
intermediate is a ``[block_size, block_size]`` matrix.

The evaluator ``RetrievalEvaluator`` (the one retrieval computation, in
training and in ``clipa_t5x.eval``) only calls two host callables, with
exactly ``batch_size`` (``text_batch_size``) rows, like ``zeroshot.py``. Under
multi-host evaluation each host encodes its own share and the features of all
hosts are ranked together.
"""

import logging
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from clipa_t5x.evaluation import batching
from clipa_t5x.evaluation import zeroshot

EncodeFn = Callable[[np.ndarray], Any]
TokenizeFn = Callable[[Sequence[str], int, str], np.ndarray]


def _similarity_block(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
  """Cosine-style scores of one block (a seam for tests to watch block sizes)."""
  return queries @ candidates.T


def _check_inputs(image_features: np.ndarray, text_features: np.ndarray,
                  text_to_image: np.ndarray) -> None:
  if image_features.ndim != 2 or text_features.ndim != 2:
    raise ValueError(
        f"features must be 2-D [N, D], got image {image_features.shape} and text "
        f"{text_features.shape}.")
  if image_features.shape[1] != text_features.shape[1]:
    raise ValueError(
        f"image features have D={image_features.shape[1]} but text features "
        f"D={text_features.shape[1]}; both towers must project to the same size.")
  if image_features.shape[0] == 0 or text_features.shape[0] == 0:
    raise ValueError("retrieval needs at least one image and one caption, got "
                     f"{image_features.shape[0]} and {text_features.shape[0]}.")
  if text_to_image.shape != (text_features.shape[0],):
    raise ValueError(
        f"text_to_image must be [num_captions={text_features.shape[0]}], got shape "
        f"{text_to_image.shape}.")
  if not np.issubdtype(text_to_image.dtype, np.integer):
    raise ValueError(f"text_to_image must hold integer image ids, got {text_to_image.dtype}.")
  n = image_features.shape[0]
  if text_to_image.min() < 0 or text_to_image.max() >= n:
    raise ValueError(
        f"text_to_image must lie in [0, {n}) for {n} images, got range "
        f"[{text_to_image.min()}, {text_to_image.max()}].")
  if np.bincount(text_to_image, minlength=n).min() == 0:
    missing = int(np.argmin(np.bincount(text_to_image, minlength=n)))
    raise ValueError(f"image {missing} has no caption; every image needs at least one.")


def _count_before(queries: np.ndarray, candidates: np.ndarray, true_score: np.ndarray,
                  true_index: np.ndarray, excluded: Callable[[int, int], np.ndarray],
                  block_size: int) -> np.ndarray:
  """Per query: candidates ranked before its correct one, excluded ones left out.

  Args:
    queries: [Q, D].
    candidates: [C, D].
    true_score: [Q] the correct candidate's score.
    true_index: [Q] the correct candidate's index (for the tie rule).
    excluded: ``(q_start, c_start) -> bool [q, c]`` candidates not to count
      (the query's own correct candidates: comparing a candidate with itself
      would only measure rounding).
    block_size: rows and columns of each block.

  Returns:
    [Q] int64 ranks.
  """
  ranks = np.zeros(queries.shape[0], np.int64)
  for q0 in range(0, queries.shape[0], block_size):
    q = queries[q0:q0 + block_size]
    ts = true_score[q0:q0 + block_size, None]
    ti = true_index[q0:q0 + block_size, None]
    for c0 in range(0, candidates.shape[0], block_size):
      s = _similarity_block(q, candidates[c0:c0 + block_size])
      index = np.arange(c0, c0 + s.shape[1])[None, :]
      # `not (s <= t)` is True for s > t and whenever a NaN is involved.
      before = ~(s <= ts) | ((s == ts) & (index < ti))
      before &= ~excluded(q0, c0)[:, :s.shape[1]]
      ranks[q0:q0 + block_size] += before.sum(axis=1)
  return ranks


def retrieval_ranks(image_features: np.ndarray, text_features: np.ndarray,
                    text_to_image: Sequence[int], block_size: int = 1024
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """0-based rank of the correct answer of every query, in both directions.

  Args:
    image_features: [N, D] image embeddings (normalised by the caller).
    text_features: [T, D] caption embeddings.
    text_to_image: [T] the image index of each caption; every image needs one.
    block_size: block side of the chunked similarity (memory ~ block_size**2).

  Returns:
    ``(image_to_text [N], text_to_image [T])`` int64 ranks; a query is a
    top-k hit iff its rank < k. A NaN score on the correct candidate gives
    the number of candidates (a miss for every k).
  """
  image_features = np.asarray(image_features, np.float32)
  text_features = np.asarray(text_features, np.float32)
  text_to_image = np.asarray(text_to_image)
  _check_inputs(image_features, text_features, text_to_image)
  if not isinstance(block_size, (int, np.integer)) or block_size < 1:
    raise ValueError(f"block_size must be a positive int, got {block_size!r}.")
  num_images, num_texts = image_features.shape[0], text_features.shape[0]
  # The correct pairs' scores, computed once row by row.
  own = np.einsum("td,td->t", text_features, image_features[text_to_image])

  # text -> image: the correct image is text_to_image[t]; itself is excluded.
  def not_self(q0, c0):
    q = text_to_image[q0:q0 + block_size, None]
    return q == np.arange(c0, min(c0 + block_size, num_images))[None, :]

  t2i = _count_before(text_features, image_features, own, text_to_image, not_self, block_size)
  t2i[np.isnan(own)] = num_images

  # image -> text: the best own caption (highest score, then lowest index,
  # NaN ones never) decides; the image's other captions are excluded.
  order = np.lexsort((np.arange(num_texts), -np.nan_to_num(own, nan=-np.inf),
                      np.isnan(own), text_to_image))
  first = np.ones(num_texts, bool)
  first[1:] = text_to_image[order][1:] != text_to_image[order][:-1]
  best = np.empty(num_images, np.int64)
  best[text_to_image[order][first]] = order[first]

  def own_captions(q0, c0):
    c = text_to_image[c0:c0 + block_size][None, :]
    return c == np.arange(q0, min(q0 + block_size, num_images))[:, None]

  i2t = _count_before(image_features, text_features, own[best], best, own_captions, block_size)
  i2t[np.isnan(own[best])] = num_texts
  return i2t, t2i


def recall_at_k(image_features: np.ndarray, text_features: np.ndarray,
                text_to_image: Sequence[int], ks: Sequence[int] = (1, 5, 10),
                block_size: int = 1024) -> Dict[str, float]:
  """Recall@k in both directions (see the module docstring for the protocol).

  Args:
    image_features, text_features, text_to_image, block_size: as ``retrieval_ranks``.
    ks: the k values (positive ints).

  Returns:
    ``{'image_to_text/R@k': ..., 'text_to_image/R@k': ...}`` in [0, 1].
  """
  zeroshot.check_ks(ks)
  i2t, t2i = retrieval_ranks(image_features, text_features, text_to_image, block_size)
  out = {}
  for k in ks:
    out[f"image_to_text/R@{k}"] = float(np.mean(i2t < k))
    out[f"text_to_image/R@{k}"] = float(np.mean(t2i < k))
  return out


def _as_captions(value: Any) -> List[str]:
  """A caption list from a string, bytes, or an array/list of them."""
  if isinstance(value, (str, bytes)):
    value = [value]
  return [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
          for c in np.asarray(value, dtype=object).reshape(-1)]


class RetrievalEvaluator:
  """Recall@k of an image-text model on one captioned image set.

  Examples are ``{'image': uint8 [H, W, 3], 'captions': list of str}`` (a
  single string is one caption). Images go through ``encode_images`` in
  batches of exactly ``batch_size`` rows and captions through
  ``encode_texts`` in batches of ``text_batch_size``; padded rows never count.
  Metrics: ``'<name>/image_to_text/R@k'``, ``'<name>/text_to_image/R@k'``,
  ``'<name>/num_images'``, ``'<name>/num_captions'``.
  """

  def __init__(self, name: str, examples_fn: Callable[[], Iterable[Dict[str, Any]]],
               batch_size: int = 256, text_length: int = 32,
               text_reduction: str = "truncate", num_examples: Optional[int] = None,
               ks: Sequence[int] = (1, 5, 10), text_batch_size: Optional[int] = None,
               block_size: int = 1024, image_size: Optional[int] = None):
    """Configures the evaluator; nothing is read until ``evaluate``.

    Args:
      name, batch_size, text_length, text_reduction, text_batch_size,
        image_size: as ``zeroshot.ZeroShotClassifier``'s.
      examples_fn: zero-arg callable returning a fresh iterable of examples.
      num_examples: use only the first this many images (all if None).
      ks: recall cut-offs.
      block_size: block side of the chunked similarity.
    """
    zeroshot.set_settings(self, name, examples_fn, batch_size, text_batch_size, text_length,
                          text_reduction, num_examples, ks, image_size, block_size=block_size)

  def image_batches(self) -> Iterator[Tuple[np.ndarray, List[List[str]]]]:
    """Yields ``(images [b, H, W, 3], captions per image)``, b <= batch_size, unpadded."""
    offset = 0
    for batch in batching.example_batches(self.examples_fn(), self.batch_size,
                                          self.num_examples, ("image", "captions")):
      captions = []
      for i, example in enumerate(batch):
        caps = _as_captions(example["captions"])
        if not caps:
          raise ValueError(f"{self.name}: example {offset + i} has no caption; drop it from "
                           "the data.")
        captions.append(caps)
      offset += len(batch)
      yield batching.stack_images(batch), captions

  def evaluate(self, encode_images: EncodeFn, encode_texts: EncodeFn,
               tokenize: Optional[TokenizeFn] = None) -> Dict[str, float]:
    """Recalls (module docstring) over every host's images and captions.

    Each host encodes its own share; the features of all hosts are gathered
    and ranked together (image ids of host h follow those of hosts < h).
    """
    feats, captions, owner = [], [], []
    num_images = 0
    side = self.image_size or 1
    dummy = (np.zeros((1, side, side, 3), np.uint8), [])
    for out, caps in batching.encode_batches(encode_images, self.image_batches(),
                                             self.batch_size, "encode_images", dummy):
      feats.append(out)
      for c in caps:
        captions.extend(c)
        owner.extend([num_images] * len(c))
        num_images += 1
    if not batching.any_host(bool(captions)):
      raise ValueError(f"{self.name}: examples_fn yielded no examples; check the eval split.")
    tokens = np.asarray(zeroshot.default_tokenize(tokenize)(
        captions, self.text_length, self.text_reduction)) if captions else np.zeros(
            (0, self.text_length), np.int32)
    if tokens.shape != (len(captions), self.text_length):
      raise ValueError(f"tokenize must return [{len(captions)}, {self.text_length}] tokens, "
                       f"got {tokens.shape}.")
    text_feats = batching.encode_in_batches(encode_texts, tokens, self.text_batch_size,
                                            "encode_texts")
    image_feats = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    all_images = batching.gather_rows(image_feats.astype(np.float32))
    all_texts = batching.gather_rows(text_feats.astype(np.float32))
    all_owner = batching.gather_rows(np.asarray(owner, np.int64))
    offsets = np.cumsum([0] + [x.shape[0] for x in all_images])
    return self.metrics(np.concatenate([x for x in all_images if x.size]),
                        np.concatenate([x for x in all_texts if x.size]),
                        np.concatenate([o + offsets[h] for h, o in enumerate(all_owner)]))

  def metrics(self, image_feats: np.ndarray, text_feats: np.ndarray,
              owner: np.ndarray) -> Dict[str, float]:
    """Prefixed recalls and counts from features."""
    recalls = recall_at_k(image_feats, text_feats, owner, self.ks, self.block_size)
    logging.info("%s: %d images, %d captions", self.name, image_feats.shape[0],
                 text_feats.shape[0])
    out = {f"{self.name}/{k}": v for k, v in recalls.items()}
    out[f"{self.name}/num_images"] = int(image_feats.shape[0])
    out[f"{self.name}/num_captions"] = int(text_feats.shape[0])
    return out
