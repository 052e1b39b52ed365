"""Evaluations run during training and by ``python -m clipa_t5x.eval``.

Configs (bindable from gin; ``runner.ZeroShotEvalConfig`` is the same class):

* ``ZeroShotEvalConfig``: zero-shot classification of a SeqIO Task or any
  classification source of ``evaluation.datasets``;
* ``RetrievalEvalConfig``: image<->text Recall@k of a retrieval source;
* ``FewShotEvalConfig``: few-shot linear probes (closed-form least squares,
  ``evaluation.fewshot``) on any classification source.

``build_evaluators`` turns them into evaluators for one image size and text
length; ``run_evaluators`` runs them with the jitted, partitioned encoders of
``Encoders``.

Distribution: the encoders are sharded over the devices of the mesh; each host
reads its own share of the examples (``shard_id`` of ``num_shards``); the
evaluators (``zeroshot.ZeroShotClassifier``, ``retrieval.RetrievalEvaluator``)
keep the hosts' encoder calls in step and combine their results.
"""

import dataclasses
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import jax
import numpy as np

from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import paths
from clipa_t5x import text_table
from clipa_t5x.evaluation import fewshot as fewshot_lib
from clipa_t5x.evaluation import retrieval as retrieval_lib
from clipa_t5x.evaluation import zeroshot

ClassNames = Union[str, Sequence[str], Callable[[], Sequence[str]], None]


@dataclasses.dataclass(frozen=True)
class ZeroShotEvalConfig:
  """A zero-shot classification evaluation, built anew for each stage.

  Attributes:
    name: metric prefix (``'<name>/top1'``).
    task: SeqIO task whose examples carry ``image`` and ``label`` (or give
      ``source``).
    class_names: names in label order, a package-data key (``'imagenet1k'``),
      a zero-argument callable returning them, or ``'auto'``: the source's
      own names (TFDS label names, ImageFolder folders), else ``'imagenet1k'``.
    templates: templates with ``{c}``, or a package-data key.
    split: split of ``task``.
    batch_size: images per encoder call over all hosts (a multiple of the
      data-parallel size).
    num_examples: evaluate only this many per host (all if None).
    source: a classification source of ``evaluation.datasets`` (instead of
      ``task``).
    ks: top-k accuracies to report.
    factors: optional parts of a compound label, ``{factor: [its id for
      each class]}`` or a zero-argument callable returning that (e.g.
      ``demo_shapes.class_factors``); adds ``'<name>/<factor>_top1'``, how
      often the top-1 class has the true class's factor (colour right
      whatever the shape, say).
  """
  name: str
  task: Optional[str] = None
  class_names: ClassNames = "auto"
  templates: Union[str, Sequence[str]] = "imagenet1k"
  split: str = "eval"
  batch_size: int = 256
  num_examples: Optional[int] = None
  source: Any = None
  ks: Sequence[int] = (1, 5)
  factors: Any = None


@dataclasses.dataclass(frozen=True)
class RetrievalEvalConfig:
  """An image<->text retrieval evaluation (Recall@k both ways).

  Attributes:
    name: metric prefix (``'<name>/image_to_text/R@1'``).
    source: a retrieval source of ``evaluation.datasets`` (``TfdsRetrieval``,
      ``WebDatasetRetrieval``, ``CsvRetrieval`` or ``SeqioTask`` with
      ``captions_key``).
    batch_size: images (and captions) per encoder call over all hosts.
    num_examples: use only this many images per host (all if None).
    ks: recall cut-offs.
    block_size: block side of the chunked similarity (memory ~ block_size**2).
  """
  name: str
  source: Any
  batch_size: int = 256
  num_examples: Optional[int] = None
  ks: Sequence[int] = (1, 5, 10)
  block_size: int = 1024


@dataclasses.dataclass(frozen=True)
class FewShotEvalConfig:
  """Few-shot linear probes on a classification set (big_vision's ``fewshot_lsr``).

  Attributes:
    name: metric prefix (``'<name>/10shot_top1'``, mean over seeds, and
      ``'<name>/10shot_top1_seed0'`` ...).
    train_source / test_source: classification sources of
      ``evaluation.datasets`` (``TfdsClassification``, ``ImageFolder``,
      ``WebDatasetClassification``, ``SeqioTask``): the shots are drawn from
      the first, accuracy is measured on all of the second.
    shots: shots per class.
    num_seeds: draws of the shots per shot count.
    l2_reg: λ of the least-squares fit (big_vision: 2^10).
    features: ``'projected'`` (the embedding) or ``'pre_projection'`` (the
      image tower's pooled output before its head).
    batch_size: images per encoder call over all hosts.
    num_train_examples / num_test_examples: read at most this many per host.
    num_classes: None: 1 + the largest label seen.
  """
  name: str
  train_source: Any
  test_source: Any
  shots: Sequence[int] = (1, 5, 10, 25)
  num_seeds: int = 3
  l2_reg: float = fewshot_lib.DEFAULT_L2_REG
  features: str = "projected"
  batch_size: int = 256
  num_train_examples: Optional[int] = None
  num_test_examples: Optional[int] = None
  num_classes: Optional[int] = None


def _per_host(batch_size: int, num_shards: int) -> int:
  if batch_size < 1 or batch_size % num_shards:
    raise ValueError(f"eval batch size {batch_size} must be a positive multiple of the "
                     f"{num_shards} hosts; change the eval config's batch_size.")
  return batch_size // num_shards


# ----------------------------------------------------------------- builder
def _resolve_class_names(spec: ZeroShotEvalConfig, source: Any) -> ClassNames:
  if spec.class_names == "auto":
    own = source.class_names if source is not None and hasattr(source, "class_names") else None
    # Resolved at evaluation time: the data may not exist when the run starts.
    return lambda: (own() if own is not None else None) or zeroshot.load_classnames("imagenet1k")
  if callable(spec.class_names) or spec.class_names is None:
    return spec.class_names
  return zeroshot.parse_class_names(spec.class_names, f"eval {spec.name!r}: class_names")


def build_evaluators(specs: Sequence[Any], image_size: int, text_length: int,
                     text_reduction: str = "truncate", shard_id: Optional[int] = None,
                     num_shards: Optional[int] = None) -> List[Any]:
  """Evaluators for ``specs`` at one eval resolution and prompt length.

  Args:
    specs: ``ZeroShotEvalConfig`` / ``RetrievalEvalConfig`` /
      ``FewShotEvalConfig`` instances.
    image_size: eval image side in pixels.
    text_length: prompt / caption length in tokens.
    text_reduction: how texts are cut to ``text_length``.
    shard_id: this host's data shard (default ``jax.process_index()``).
    num_shards: number of data shards (default ``jax.process_count()``).

  Returns:
    ``ZeroShotClassifier`` / ``RetrievalEvaluator`` instances (``name`` and
    ``evaluate(encode_images, encode_texts)``).
  """
  from clipa_t5x.evaluation import datasets
  shard_id = jax.process_index() if shard_id is None else shard_id
  num_shards = jax.process_count() if num_shards is None else num_shards
  names = [getattr(s, "name", None) for s in specs]
  if len(set(names)) != len(names):
    raise ValueError(f"evaluator names must be unique, got {names}.")

  def reader(src: Any) -> Callable[[], Any]:  # this host's examples of a source
    return lambda: src.examples(image_size, text_length, shard_id, num_shards)

  out = []
  for spec in specs:
    if isinstance(spec, RetrievalEvalConfig):
      if spec.source is None or not hasattr(spec.source, "examples"):
        raise ValueError(f"retrieval eval {spec.name!r}: source must be a retrieval source "
                         f"(e.g. datasets.TfdsRetrieval()), got {spec.source!r}.")
      out.append(retrieval_lib.RetrievalEvaluator(
          spec.name, reader(spec.source), batch_size=_per_host(spec.batch_size, num_shards),
          text_length=text_length, text_reduction=text_reduction,
          num_examples=spec.num_examples, ks=spec.ks,
          block_size=spec.block_size, image_size=image_size))
    elif isinstance(spec, ZeroShotEvalConfig):
      if (spec.task is None) == (spec.source is None):
        raise ValueError(f"zero-shot eval {spec.name!r}: give exactly one of task "
                         f"(a SeqIO Task) or source (an evaluation.datasets source).")
      source = spec.source or datasets.SeqioTask(spec.task, spec.split)
      templates = zeroshot.parse_templates(spec.templates, f"eval {spec.name!r}: templates")
      out.append(zeroshot.ZeroShotClassifier(
          name=spec.name, examples_fn=reader(source),
          class_names=_resolve_class_names(spec, source), templates=templates,
          batch_size=_per_host(spec.batch_size, num_shards), text_length=text_length,
          text_reduction=text_reduction,
          num_examples=spec.num_examples, ks=spec.ks, factors=spec.factors,
          image_size=image_size))
    elif isinstance(spec, FewShotEvalConfig):
      for what in ("train_source", "test_source"):
        if not hasattr(getattr(spec, what), "examples"):
          raise ValueError(f"few-shot eval {spec.name!r}: {what} must be a classification "
                           f"source (e.g. datasets.ImageFolder(...)), got "
                           f"{getattr(spec, what)!r}.")
      out.append(fewshot_lib.FewShotEvaluator(
          spec.name, reader(spec.train_source), reader(spec.test_source), shots=spec.shots,
          num_seeds=spec.num_seeds, l2_reg=spec.l2_reg,
          features=spec.features, batch_size=_per_host(spec.batch_size, num_shards),
          num_train_examples=spec.num_train_examples,
          num_test_examples=spec.num_test_examples, num_classes=spec.num_classes,
          image_size=image_size))
    else:
      raise ValueError(f"unknown evaluator config {spec!r}; use ZeroShotEvalConfig, "
                       "RetrievalEvalConfig or FewShotEvalConfig.")
  return out


# ---------------------------------------------------------------- encoders
def _host_local_rows(x: jax.Array) -> np.ndarray:
  """This host's rows of a batch-sharded output (all rows on one host)."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  shards = {}
  for shard in x.addressable_shards:  # model-parallel replicas repeat rows: keep one
    shards.setdefault(shard.index[0].start or 0, shard.data)
  return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])


class Encoders:
  """Jitted, partitioned ``encode_images`` / ``encode_texts`` taking host-local batches."""

  def __init__(self, model, partitioner, param_shardings):
    self._params = None
    self._partitioner = partitioner
    self._images, self._texts, self._representations = (
        partitioner.partition(fn, in_axis_resources=(param_shardings, partitioner.data_sharding),
                              out_axis_resources=partitioner.data_sharding)
        for fn in (model.encode_images, model.encode_texts, model.image_representations))

  def bind(self, params) -> "Encoders":
    """Sets the parameters the encoders use from now on."""
    self._params = params
    return self

  def _run(self, fn: Callable, x: np.ndarray, what: str) -> np.ndarray:
    size = self._partitioner.data_parallel_size // jax.process_count() or 1
    if x.shape[0] % size:
      raise ValueError(f"{what}: {x.shape[0]} rows per host is not a multiple of this host's "
                       f"{size} data-parallel devices; use an eval batch_size that is.")
    return _host_local_rows(fn(self._params, self._partitioner.shard_batch(x)))

  def encode_images(self, images: np.ndarray) -> np.ndarray:
    """uint8 [b, H, W, 3] (this host's rows) -> [b, D] features."""
    return self._run(self._images, images, "encode_images")

  def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
    """int32 [b, L] (this host's rows) -> [b, D] features."""
    return self._run(self._texts, tokens, "encode_texts")

  def image_representations(self, images: np.ndarray) -> np.ndarray:
    """uint8 [b, H, W, 3] -> [b, width]: the image tower before its projection."""
    return self._run(self._representations, images, "image_representations")


def run_evaluators(evaluators: Sequence[Any], encoders: Encoders, params) -> Dict[str, float]:
  """Runs every evaluator with ``params``; returns their merged metrics."""
  encoders.bind(params)
  results: Dict[str, float] = {}
  for evaluator in evaluators:
    # Few-shot probes may read the image tower before its projection.
    encode_images = (encoders.image_representations
                     if getattr(evaluator, "features", None) == "pre_projection"
                     else encoders.encode_images)
    results.update(evaluator.evaluate(encode_images, encoders.encode_texts))
  return results


# ------------------------------------------------------- checkpoint evals


def format_results_table(results: Dict[str, float]) -> str:
  """``data set  metric  value`` rows from ``{'<data set>/<metric>': value}``."""
  lines = [("data set", "metric", "value")]
  natural = lambda key: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]
  for key in sorted(results, key=natural):  # R@5 before R@10
    dataset, _, metric = key.partition("/")
    value = results[key]
    text = str(value) if isinstance(value, int) else f"{100 * value:.2f}%" if (
        "top" in metric or "R@" in metric) else f"{value:.4f}"
    lines.append((dataset, metric, text))
  return text_table.format_table(lines)


def evaluate_checkpoint(*,
             checkpoint_path: str,
             model_config=None,
             evaluators: Sequence[Any] = (),
             image_size: Optional[int] = None,
             text_length: Optional[int] = None,
             text_reduction: str = "truncate",
             output_dir: Optional[str] = None,
             partitioner=None) -> Dict[str, Any]:
  """Evaluates any model reference with the model it records.

  Args:
    checkpoint_path: any reference of ``model_refs``: a run directory (its
      last stage), a stage directory (latest checkpoint), a
      ``checkpoint_<step>`` directory, an open_clip folder or weights file, or
      an official CLIPA JAX ``.npz``.
    model_config: the model; None: the one the source records (a model gin
      file that disagrees with it is refused).
    evaluators: ``ZeroShotEvalConfig`` / ``RetrievalEvalConfig`` list.
    image_size: eval image side in pixels (a multiple of the patch size);
      None: the source's recorded resolution, else 224.
    text_length: prompt / caption length in tokens; None: the source's.
    text_reduction: how texts are cut to ``text_length``.
    output_dir: where ``results.json`` and TensorBoard summaries go; None:
      ``eval_<step>/`` next to a checkpoint, ``<source>_eval/`` beside others.
    partitioner: defaults to a data-parallel ``PjitPartitioner``.

  Returns:
    What ``results.json`` holds: ``checkpoint``, ``step``, ``model``,
    ``image_size``, ``text_length``, ``seconds`` and ``results``.
  """
  import optax
  from clipa_t5x import metrics_logging
  from clipa_t5x import model_refs
  from clipa_t5x import partitioning
  from clipa_t5x import train_state as train_state_lib
  from clipa_t5x.models import clip as clip_lib

  start = time.time()
  if not checkpoint_path:
    raise ValueError("CHECKPOINT_PATH is empty; pass --gin.CHECKPOINT_PATH=\"'/path'\".")
  if not evaluators:
    raise ValueError("no evaluators configured; set EVALUATORS in the eval gin file.")
  try:
    ref = model_refs.describe(checkpoint_path, model_config)
  except ValueError as e:
    raise ValueError(f"CHECKPOINT_PATH: {e}") from None
  image_size = int(image_size or ref.image_size or 224)
  text_length = int(text_length or ref.text_length or 32)
  patch = ref.config.image.patch_size
  if image_size % patch:
    raise ValueError(f"eval image size {image_size} is not divisible by the patch size "
                     f"{patch}; use {image_size - image_size % patch + patch}.")
  step = ref.step or 0
  if output_dir is None:
    output_dir = (os.path.join(model_dir_lib.stage_dir_of(ref.path),
                               model_dir_lib.eval_dir_name(step))
                  if ref.kind == model_refs.CHECKPOINT else ref.path + "_eval")

  partitioner = partitioner or partitioning.PjitPartitioner()
  model = clip_lib.ClipaModel(ref.config)
  abstract, _, shardings = train_state_lib.abstract_train_state(
      model, optax.identity(), image_size, text_length, partitioner)
  # No fresh initialisation: every parameter must come from the source.
  params = model_refs.restore_params(ref.path, abstract.params, model=ref.config)
  built = build_evaluators(evaluators, image_size, text_length, text_reduction)
  encoders = Encoders(model, partitioner, shardings.params)
  results = run_evaluators(built, encoders, params)
  record = {"checkpoint": ref.path, "step": int(step), "model": model_refs.config_name(ref.config),
            "image_size": image_size, "text_length": text_length,
            "text_reduction": text_reduction, "seconds": time.time() - start,
            "results": results}
  if jax.process_index() == 0:
    paths.makedirs(output_dir)
    logger = metrics_logging.MetricsLogger(
        output_dir, os.path.join(output_dir, model_dir_lib.EVAL_METRICS))
    logger.write(int(step), results)
    logger.close()
    results_path = os.path.join(output_dir, model_dir_lib.RESULTS)
    paths.write_json_atomic(results_path, record)
    print(f"\n{ref.kind} {ref.path} ({record['model']}) at {image_size} px, {text_length} "
          f"tokens; results in {results_path}\n" + format_results_table(results), flush=True)
  return record
