"""Host-side (numpy) metrics for zero-shot classification.

Tie rule (deterministic, the same as ``np.argmax`` and a stable descending
sort): classes are ranked by score, equal scores by class index, lower first.
Example ``i`` with label ``y`` is a top-k hit iff its rank is below ``k``:

    rank_i = #{j : s_ij > s_iy} + #{j < y : s_ij == s_iy},  hit iff rank_i < k,

so for finite logits top-1 is exactly ``mean(argmax(logits, 1) == labels)``,
as in big_vision's argmax-based evaluator. A pessimistic rule (every
tie against the label) was rejected: CLIP's curated ImageNet names repeat
'missile' (classes 657, 744) and 'sunglasses' (836, 837), whose class embeddings
tie exactly; it would fail all 4 classes instead of 2, costing ~0.2 % top-1
against published numbers. A collapsed model (all scores equal) scores the share
of label 0, i.e. chance level on balanced data, never more. A NaN score ranks
above everything (as in ``np.argmax``), and a NaN score on the true class is
always a miss: a diverged model cannot look accurate.
"""

from typing import Dict, Sequence

import numpy as np

from clipa_t5x.losses import l2_normalize


def _check_logits_labels(logits: np.ndarray, labels: np.ndarray) -> None:
  if logits.ndim != 2:
    raise ValueError(
        f"logits must be [N, C], got shape {logits.shape}; pass one row per example.")
  if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
    raise ValueError(
        f"labels must be [N] with N = {logits.shape[0]} (rows of logits), got shape "
        f"{labels.shape}.")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}; cast them first.")
  num_classes = logits.shape[1]
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f"labels must lie in [0, {num_classes}) for {num_classes} classes, got range "
        f"[{labels.min()}, {labels.max()}]; check the class names match the data set.")


def _check_ks(ks: Sequence[int], num_classes: int) -> None:
  for k in ks:
    if not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"every k must be a positive int, got {k!r}.")
    if k > num_classes:
      raise ValueError(
          f"top-{k} is undefined with only {num_classes} classes; drop k={k} from ks.")


def label_ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """0-based rank of the true class of each example (ties: lower index first).

  Args:
    logits: [N, C] scores, higher is better.
    labels: [N] integer class ids in ``[0, C)``.

  Returns:
    [N] int64: classes scoring higher than the true class, plus tied classes
    with a lower index (NaN counts as higher; a NaN true score gives rank
    ``C``, a miss for every k).
  """
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  _check_logits_labels(logits, labels)
  rows = np.arange(logits.shape[0])
  true_score = logits[rows, labels][:, None]
  # `not (a <= b)` is True for a > b and whenever a NaN is involved.
  above = ~(logits <= true_score)
  tied_before = (logits == true_score) & (np.arange(logits.shape[1])[None, :] < labels[:, None])
  ranks = (above | tied_before).sum(axis=1).astype(np.int64)
  ranks[np.isnan(true_score[:, 0])] = logits.shape[1]
  return ranks


def topk_correct(logits: np.ndarray, labels: np.ndarray,
                 ks: Sequence[int] = (1, 5)) -> Dict[int, np.ndarray]:
  """Per-example top-k hits (see the module docstring for the tie rule).

  Args:
    logits: [N, C] scores, higher is better.
    labels: [N] integer class ids in ``[0, C)``.
    ks: the k values; each must satisfy ``1 <= k <= C``.

  Returns:
    ``{k: bool [N]}``; True where the example is a top-k hit.
  """
  ranks = label_ranks(logits, labels)  # validates shapes and labels
  _check_ks(ks, np.shape(logits)[1])
  return {int(k): ranks < k for k in ks}


def topk_accuracy(logits: np.ndarray, labels: np.ndarray,
                  ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
  """Fraction of examples whose true class is within the top k.

  Args:
    logits, labels, ks: as ``topk_correct`` (N at least 1; a k outside
      ``[1, C]`` raises ValueError).

  Returns:
    ``{k: accuracy}`` with accuracies in [0, 1]; ties go to the lower class
    index (module docstring).
  """
  logits = np.asarray(logits)
  if logits.ndim == 2 and logits.shape[0] == 0:
    raise ValueError("topk_accuracy needs at least one example, got N = 0.")
  hits = topk_correct(logits, labels, ks)
  return {k: float(np.mean(h)) for k, h in hits.items()}


def class_embeddings(text_features: np.ndarray, num_classes: int, num_templates: int) -> np.ndarray:
  """Zero-shot classifier weights from per-prompt text embeddings.

  Each prompt embedding is L2-normalised, the T prompts of a class are averaged,
  and the mean is L2-normalised again (CLIP's prompt ensembling).

  Args:
    text_features: [C*T, D], class-major: rows ``c*T .. c*T + T - 1`` are the
      T templates filled with class ``c``.
    num_classes: C.
    num_templates: T.

  Returns:
    [C, D] float32, unit-norm rows.
  """
  text_features = np.asarray(text_features)
  if num_classes < 1 or num_templates < 1:
    raise ValueError(
        f"num_classes and num_templates must be >= 1, got {num_classes} and {num_templates}.")
  if text_features.ndim != 2 or text_features.shape[0] != num_classes * num_templates:
    raise ValueError(
        f"text_features must be [C*T, D] = [{num_classes}*{num_templates}, D], got shape "
        f"{text_features.shape}; encode every (class, template) prompt, class-major.")
  per_prompt = l2_normalize(text_features.astype(np.float32))
  per_class = per_prompt.reshape(num_classes, num_templates, -1).mean(axis=1)
  return np.asarray(l2_normalize(per_class), np.float32)
