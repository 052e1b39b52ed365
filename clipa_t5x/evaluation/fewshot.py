"""Few-shot linear probes: closed-form L2-regularised least squares on image features.

The protocol of big_vision's ``fewshot_lsr`` evaluator, as CLIPA reports it:
for ``k`` shots and a seed, draw ``k`` training images of every class, encode
them, and fit a linear classifier in closed form; its top-1 accuracy on the
whole test set is the metric, averaged over the seeds.

The classifier (``fit_least_squares``):

* features are standardised with the mean and standard deviation of the
  ``k × C`` training rows (``+1e-5`` on the deviation), and a constant column of
  ``BIAS_FEATURE = 100`` is appended: its weight is the bias, and its large
  value makes the penalty on that weight negligible;
* targets are one-hot labels mapped to {-1, +1};
* ``W = argmin ||X W - Y||² + λ ||W||²``, i.e. ``W = (XᵀX + λI)⁻¹ XᵀY``. With
  ``XᵀX = Q diag(e) Qᵀ`` this is ``Q diag(1 / (e + λ)) Qᵀ XᵀY``; when there are
  fewer rows ``N`` than columns ``D`` the same ``W`` is ``Xᵀ (XXᵀ + λI)⁻¹ Y``,
  computed from the (smaller) ``N × N`` eigen-decomposition instead;
* a test image's class is ``argmax`` of its standardised features times ``W``.

Features come from the image tower, either its output projection (the
embedding the contrastive loss sees; ``'projected'``) or the pooled, normalised
representation just before it (``'pre_projection'``, big_vision's
``representation_layer='pre_logits'``).
"""

import dataclasses
import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from clipa_t5x.evaluation import batching

BIAS_FEATURE = 100.0
# big_vision's few-shot default: λ = 2^10.
DEFAULT_L2_REG = 2.0 ** 10
FEATURES = ("projected", "pre_projection")

EncodeFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class LinearProbe:
  """A fitted least-squares classifier.

  Attributes:
    weights: [D + 1, C]; the last row multiplies the bias column.
    mean, std: [D] standardisation of the training features.
  """
  weights: np.ndarray
  mean: np.ndarray
  std: np.ndarray

  def design(self, features: np.ndarray) -> np.ndarray:
    """Standardised features with the bias column: the ``X`` of the fit."""
    return design_matrix(features, self.mean, self.std)

  def predict(self, features: np.ndarray) -> np.ndarray:
    """Class ids [N] of features [N, D]."""
    return np.argmax(self.design(features) @ self.weights, axis=1)


def design_matrix(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """``[(features - mean) / std, BIAS_FEATURE]`` in float64."""
  x = (np.asarray(features, np.float64) - mean) / std
  return np.concatenate([x, np.full((x.shape[0], 1), BIAS_FEATURE)], axis=1)


def signed_one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[N, C] targets: +1 at the label, -1 elsewhere."""
  return 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0


def fit_least_squares(features: np.ndarray, labels: np.ndarray, num_classes: int,
                      l2_reg: float = DEFAULT_L2_REG) -> LinearProbe:
  """The closed-form L2-regularised least-squares probe (see the module docstring).

  Args:
    features: [N, D] training features.
    labels: [N] class ids in ``[0, num_classes)``.
    num_classes: C.
    l2_reg: λ > 0.

  Returns:
    The ``LinearProbe``; computed in float64.
  """
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  if features.ndim != 2 or labels.shape != (features.shape[0],):
    raise ValueError(f"few-shot fit: features must be [N, D] and labels [N], got "
                     f"{features.shape} and {labels.shape}.")
  if not l2_reg > 0:
    raise ValueError(f"few-shot l2_reg must be positive, got {l2_reg}.")
  mean = features.mean(axis=0)
  std = features.std(axis=0) + 1e-5
  x = design_matrix(features, mean, std)
  y = signed_one_hot(labels, num_classes)
  n, d = x.shape
  if n >= d:  # primal: (XᵀX + λI)⁻¹ XᵀY from the D x D eigen-decomposition
    eigs, q = np.linalg.eigh(x.T @ x)
    weights = (q / (eigs + l2_reg)) @ (q.T @ (x.T @ y))
  else:  # dual: Xᵀ (XXᵀ + λI)⁻¹ Y from the N x N one
    eigs, q = np.linalg.eigh(x @ x.T)
    weights = ((x.T @ q) / (eigs + l2_reg)) @ (q.T @ y)
  return LinearProbe(weights=weights, mean=mean, std=std)


def sample_shots(labels: np.ndarray, num_classes: int, shots: int, seed: int) -> np.ndarray:
  """Indices of ``shots`` examples of every class, drawn with ``seed``.

  The draw of each class is a prefix of one seeded permutation, so the
  5-shot set of a seed contains its 1-shot set, as in big_vision.

  Raises:
    ValueError: a class has fewer than ``shots`` examples.
  """
  rng = np.random.default_rng(seed)
  picked = []
  for c in range(num_classes):
    members = rng.permutation(np.flatnonzero(labels == c))
    if members.size < shots:
      raise ValueError(f"few-shot: class {c} has {members.size} training examples, fewer than "
                       f"{shots} shots; lower the shots or read more training examples "
                       "(num_train_examples).")
    picked.append(members[:shots])
  return np.concatenate(picked)


class FewShotEvaluator:
  """Few-shot linear-probe accuracy of an image encoder on one classification set.

  Args:
    name: metric prefix (``'<name>/10shot_top1'``).
    train_examples_fn / test_examples_fn: zero-argument callables yielding
      this host's ``{'image', 'label'}`` examples of the two splits.
    shots: shots per class, e.g. (1, 5, 10, 25).
    num_seeds: draws of the shots (seeds 0 .. num_seeds - 1).
    l2_reg: λ of the least-squares fit.
    features: ``'projected'`` or ``'pre_projection'`` (which encoder
      ``run_evaluators`` passes in).
    batch_size: images per encoder call (per host).
    num_train_examples / num_test_examples: read at most this many per host
      (None: all). The shots are drawn from the training examples read.
    num_classes: C; None: 1 + the largest label seen in either split.
    image_size: eval resolution (for the dummy batches of multi-host runs).
  """

  def __init__(self, name: str, train_examples_fn: Callable[[], Iterator[Dict[str, Any]]],
               test_examples_fn: Callable[[], Iterator[Dict[str, Any]]],
               shots: Sequence[int] = (1, 5, 10, 25), num_seeds: int = 3,
               l2_reg: float = DEFAULT_L2_REG, features: str = "projected",
               batch_size: int = 256, num_train_examples: Optional[int] = None,
               num_test_examples: Optional[int] = None, num_classes: Optional[int] = None,
               image_size: Optional[int] = None):
    if not shots or any(not isinstance(k, int) or k < 1 for k in shots):
      raise ValueError(f"few-shot eval {name!r}: shots must be positive ints, got {shots!r}.")
    if num_seeds < 1:
      raise ValueError(f"few-shot eval {name!r}: num_seeds must be >= 1, got {num_seeds}.")
    if features not in FEATURES:
      raise ValueError(f"few-shot eval {name!r}: features must be one of {FEATURES}, got "
                       f"{features!r}.")
    if not l2_reg > 0:
      raise ValueError(f"few-shot eval {name!r}: l2_reg must be positive, got {l2_reg}.")
    self.name, self.features, self.batch_size = name, features, batch_size
    self.train_examples_fn, self.test_examples_fn = train_examples_fn, test_examples_fn
    self.shots, self.num_seeds, self.l2_reg = tuple(shots), num_seeds, float(l2_reg)
    self.num_train_examples, self.num_test_examples = num_train_examples, num_test_examples
    self.num_classes, self.image_size = num_classes, image_size

  def _encode(self, encode_images: EncodeFn, examples_fn, num_examples
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Every host's features and labels of one split (all hosts get all rows)."""
    def image_batches():
      for batch in batching.example_batches(examples_fn(), self.batch_size, num_examples,
                                            ("image", "label")):
        yield batching.stack_images(batch), np.asarray([int(ex["label"]) for ex in batch])
    side = self.image_size or 1
    dummy = (np.zeros((1, side, side, 3), np.uint8), np.zeros((0,), np.int64))
    feats: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    for f, y in batching.encode_batches(encode_images, image_batches(), self.batch_size,
                                        "encode_images", dummy):
      if y.shape[0]:
        feats.append(np.asarray(f, np.float32))
        labels.append(y)
    if not feats:
      raise ValueError(f"{self.name}: a few-shot split gave no examples; check its source.")
    x, y = np.concatenate(feats), np.concatenate(labels)
    return (np.concatenate(batching.gather_rows(x)), np.concatenate(batching.gather_rows(y)))

  def evaluate(self, encode_images: EncodeFn, encode_texts: Optional[EncodeFn] = None
               ) -> Dict[str, float]:
    """Few-shot top-1 for every shot count: the mean over seeds and each seed's value.

    Args:
      encode_images: uint8 [batch_size, H, W, 3] -> [batch_size, D] features
        of the kind named by ``features``.
      encode_texts: unused (the signature every evaluator shares).

    Returns:
      ``{'<name>/<k>shot_top1': mean over seeds, '<name>/<k>shot_top1_seed<s>':
      per seed, '<name>/num_examples': test examples}``.
    """
    del encode_texts
    x_train, y_train = self._encode(encode_images, self.train_examples_fn,
                                    self.num_train_examples)
    x_test, y_test = self._encode(encode_images, self.test_examples_fn, self.num_test_examples)
    num_classes = self.num_classes or int(max(y_train.max(), y_test.max())) + 1
    results: Dict[str, float] = {}
    for shots in self.shots:
      accuracies = []
      for seed in range(self.num_seeds):
        index = sample_shots(y_train, num_classes, shots, seed)
        probe = fit_least_squares(x_train[index], y_train[index], num_classes, self.l2_reg)
        accuracy = float(np.mean(probe.predict(x_test) == y_test))
        results[f"{self.name}/{shots}shot_top1_seed{seed}"] = accuracy
        accuracies.append(accuracy)
      results[f"{self.name}/{shots}shot_top1"] = float(np.mean(accuracies))
    results[f"{self.name}/num_examples"] = int(y_test.shape[0])
    logging.info("%s: few-shot %s", self.name,
                 {k: round(results[f"{self.name}/{k}shot_top1"], 4) for k in self.shots})
    return results
