"""Tests of clipa_t5x.evaluation.evaluators: configs, builder, sharded encoders (1 vs 4 devices)."""

import dataclasses

import gin
import jax
import numpy as np
import pytest

import helpers
from clipa_t5x import partitioning
from clipa_t5x import runner
from clipa_t5x import train_state
from clipa_t5x.evaluation import evaluators
from clipa_t5x.evaluation import fewshot
from clipa_t5x.evaluation import metrics
from clipa_t5x.evaluation import retrieval

SIZE = helpers.IMAGE_SIZE
LENGTH = helpers.TEXT_LENGTH
N = 14  # not a multiple of the batch: the last batch is padded


@dataclasses.dataclass(frozen=True)
class _MemorySource:
  """In-memory classification + retrieval source."""
  seed: int = 0

  def class_names(self):
    return ["red thing", "blue thing", "green thing"]

  def _data(self):
    rng = np.random.RandomState(self.seed)
    return rng.randint(0, 256, (N, SIZE, SIZE, 3)).astype(np.uint8)

  def examples(self, image_size, text_length, shard_id=0, num_shards=1):
    assert (image_size, text_length) == (SIZE, LENGTH)
    for i, image in enumerate(self._data()):
      if i % num_shards == shard_id:
        yield {"image": image, "label": i % 3,
               # Distinct captions: identical ones embed to exactly tied scores,
               # and the reference below (one unbatched call) may then break the
               # tie differently from the batched evaluator by a rounding error.
               "captions": [f"a photo number {i}", f"thing {i % 3} #{i}"][:1 + i % 2]}


def _partitioner(num_devices):
  return partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=jax.devices()[:num_devices])


@pytest.fixture(scope="module")
def params_host():
  p1 = _partitioner(1)
  model, tx, _, _, _, shardings = helpers.tiny_setup(p1)
  state = train_state.create_train_state(model, tx, jax.random.key(0), SIZE, LENGTH, p1, shardings)
  return model, jax.device_get(state.params)


def _evaluate(params_host, num_devices, batch_size=8):
  model, params = params_host
  p = _partitioner(num_devices)
  _, tx, _, abstract, _, shardings = helpers.tiny_setup(p)
  params = jax.device_put(params, shardings.params)
  specs = [evaluators.ZeroShotEvalConfig(name="cls", source=_MemorySource(),
                                         templates=["a {c}.", "the {c}"], batch_size=batch_size,
                                         ks=(1, 2)),
           evaluators.RetrievalEvalConfig(name="ret", source=_MemorySource(),
                                          batch_size=batch_size, ks=(1, 5), block_size=4)]
  built = evaluators.build_evaluators(specs, SIZE, LENGTH)
  encoders = evaluators.Encoders(model, p, shardings.params)
  return evaluators.run_evaluators(built, encoders, params)


@pytest.mark.slow
def test_same_numbers_on_1_and_4_devices_and_unsharded_reference(params_host):
  one = _evaluate(params_host, 1)
  four = _evaluate(params_host, 4)
  assert one.keys() == four.keys()
  for k in one:
    assert one[k] == pytest.approx(four[k], abs=1e-9), k
  assert one["cls/num_examples"] == N and one["ret/num_images"] == N
  assert one["ret/num_captions"] == sum(1 + i % 2 for i in range(N))

  # Reference: the whole set in one unpadded, unjitted call per tower.
  model, params = params_host
  from clipa_t5x.data.text_reduction import tokenize_texts
  src = _MemorySource()
  examples = list(src.examples(SIZE, LENGTH))
  images = np.stack([e["image"] for e in examples])
  img = np.asarray(model.encode_images(params, images))
  prompts = [t.format(c=c).replace("{c}", c) for c in src.class_names()
             for t in ["a {c}.", "the {c}"]]
  weights = metrics.class_embeddings(
      np.asarray(model.encode_texts(params, tokenize_texts(prompts, LENGTH))), 3, 2)
  labels = np.array([e["label"] for e in examples])
  acc = metrics.topk_accuracy(img @ weights.T, labels, (1, 2))
  assert one["cls/top1"] == pytest.approx(acc[1]) and one["cls/top2"] == pytest.approx(acc[2])
  caps = [c for e in examples for c in e["captions"]]
  owner = np.concatenate([[i] * len(e["captions"]) for i, e in enumerate(examples)])
  txt = np.asarray(model.encode_texts(params, tokenize_texts(caps, LENGTH)))
  want = retrieval.recall_at_k(img, txt, owner, (1, 5))
  for k, v in want.items():
    assert one[f"ret/{k}"] == pytest.approx(v), k


def test_host_sharded_examples_combine_to_the_whole_set():
  """Two simulated hosts' shards cover every example exactly once."""
  src = _MemorySource()
  parts = [list(src.examples(SIZE, LENGTH, s, 2)) for s in range(2)]
  assert len(parts[0]) + len(parts[1]) == N


def test_class_names_auto_uses_the_source_then_imagenet():
  spec = evaluators.ZeroShotEvalConfig(name="a", source=_MemorySource(), templates=["{c}"],
                                       batch_size=4)
  (ev,) = evaluators.build_evaluators([spec], SIZE, LENGTH, num_shards=1, shard_id=0)
  assert ev.resolve_class_names() == ["red thing", "blue thing", "green thing"]
  spec = evaluators.ZeroShotEvalConfig(name="b", task="demo_shapes_eval", templates=["{c}"],
                                       batch_size=4)
  (ev,) = evaluators.build_evaluators([spec], SIZE, LENGTH)
  assert len(ev.resolve_class_names()) == 1000


@pytest.mark.parametrize("specs, match", [
    ([evaluators.ZeroShotEvalConfig(name="a")], "exactly one of task"),
    ([evaluators.ZeroShotEvalConfig(name="a", task="t", source=_MemorySource())],
     "exactly one of task"),
    ([evaluators.RetrievalEvalConfig(name="r", source=None)], "must be a retrieval source"),
    ([evaluators.ZeroShotEvalConfig(name="a", task="t"),
      evaluators.RetrievalEvalConfig(name="a", source=_MemorySource())], "must be unique"),
    (["nonsense"], "unknown evaluator config"),
])
def test_builder_errors_are_one_line(specs, match):
  with pytest.raises(ValueError, match=match) as info:
    evaluators.build_evaluators(specs, SIZE, LENGTH)
  assert "\n" not in str(info.value)


def test_batch_size_must_divide_over_hosts():
  spec = evaluators.RetrievalEvalConfig(name="r", source=_MemorySource(), batch_size=6)
  with pytest.raises(ValueError, match="batch size 6 must be a positive multiple of the 4 hosts"):
    evaluators.build_evaluators([spec], SIZE, LENGTH, shard_id=0, num_shards=4)


def test_encoders_reject_rows_not_divisible_by_devices(params_host):
  model, params = params_host
  p = _partitioner(4)
  _, _, _, _, _, shardings = helpers.tiny_setup(p)
  enc = evaluators.Encoders(model, p, shardings.params).bind(
      jax.device_put(params, shardings.params))
  with pytest.raises(ValueError, match="6 rows per host is not a multiple of this host's 4"):
    enc.encode_images(np.zeros((6, SIZE, SIZE, 3), np.uint8))


def test_runner_keeps_the_old_names_for_gin():
  assert runner.ZeroShotEvalConfig is evaluators.ZeroShotEvalConfig
  assert runner.RetrievalEvalConfig is evaluators.RetrievalEvalConfig
  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config("""
from __gin__ import dynamic_registration
from clipa_t5x import runner
E = [@runner.ZeroShotEvalConfig()]
runner.ZeroShotEvalConfig:
  name = 'x'
  task = 'demo_shapes_eval'
""")
    (spec,) = gin.query_parameter("%E")
    built = gin.get_configurable(runner.ZeroShotEvalConfig)()
  gin.clear_config()
  assert isinstance(built, evaluators.ZeroShotEvalConfig) and built.task == "demo_shapes_eval"


def test_format_results_table_orders_k_naturally():
  table = evaluators.format_results_table(
      {"coco/text_to_image/R@10": 0.5, "coco/text_to_image/R@5": 0.25, "in/num_examples": 3})
  lines = table.splitlines()
  assert lines[0].split() == ["data", "set", "metric", "value"]
  assert [line.split()[1] for line in lines[2:]] == ["text_to_image/R@5", "text_to_image/R@10",
                                                     "num_examples"]
  assert lines[2].split()[-1] == "25.00%" and lines[4].split()[-1] == "3"


@pytest.mark.parametrize("features", ["projected", "pre_projection"])
def test_fewshot_eval_on_4_devices_matches_a_probe_of_unsharded_features(params_host, features):
  model, params = params_host
  p = _partitioner(4)
  _, _, _, _, _, shardings = helpers.tiny_setup(p)
  spec = evaluators.FewShotEvalConfig(name="probe", train_source=_MemorySource(seed=1),
                                      test_source=_MemorySource(seed=2), shots=(1, 4),
                                      num_seeds=2, l2_reg=4.0, features=features, batch_size=8)
  built = evaluators.build_evaluators([spec], SIZE, LENGTH)
  results = evaluators.run_evaluators(built, evaluators.Encoders(model, p, shardings.params),
                                      jax.device_put(params, shardings.params))
  # The reference: the same probes on features computed in one unsharded call.
  encode = (model.image_representations if features == "pre_projection"
            else model.encode_images)
  def feats(seed):
    data = list(_MemorySource(seed=seed).examples(SIZE, LENGTH))
    return (np.asarray(encode(params, np.stack([d["image"] for d in data]))),
            np.array([d["label"] for d in data]))
  (x_train, y_train), (x_test, y_test) = feats(1), feats(2)
  width = helpers.tiny_setup(p)[0].config.image.width if features == "pre_projection" else None
  if width:
    assert x_train.shape[1] == width
  for shots in (1, 4):
    accs = []
    for seed in range(2):
      index = fewshot.sample_shots(y_train, 3, shots, seed)
      probe = fewshot.fit_least_squares(x_train[index], y_train[index], 3, 4.0)
      accs.append(float(np.mean(probe.predict(x_test) == y_test)))
      assert results[f"probe/{shots}shot_top1_seed{seed}"] == pytest.approx(accs[-1])
    assert results[f"probe/{shots}shot_top1"] == pytest.approx(np.mean(accs))
  assert results["probe/num_examples"] == N
