"""Tests of clipa_t5x.memory: the estimate against XLA's buffer assignment, sharding, units."""

import jax
import jax.numpy as jnp
import pytest

from clipa_t5x import memory
from clipa_t5x import model_info
from clipa_t5x import optimizers
from clipa_t5x import partitioning
from clipa_t5x import train_state
from clipa_t5x import trainer as trainer_lib
from clipa_t5x.models import clip
from clipa_t5x.models import configs

RULES = {"dp": partitioning.data_parallel_logical_axis_rules(),
         "std": partitioning.standard_logical_axis_rules(),
         "2d": partitioning.standard_logical_axis_rules(2, 2)}
TINY_VOCAB = {"vocab_size": 1024}


def _xla_peak(cfg, image, text, batch, rules="dp", num_partitions=1, mask_ratio=0.0,
              num_microbatches=1, mu_dtype=None):
  """XLA's per-device peak of the donated train step: arguments + outputs - aliased + temps."""
  partitioner = partitioning.PjitPartitioner(num_partitions=num_partitions,
                                             logical_axis_rules=RULES[rules])
  model = clip.ClipaModel(cfg)
  tx, lr = optimizers.make_optimizer(optimizers.OptimizerConfig(mu_dtype=mu_dtype), batch, 10)
  abstract, _, shardings = train_state.abstract_train_state(model, tx, image, text, partitioner)
  step = trainer_lib.make_train_step(model, tx, lr, num_microbatches, mask_ratio, "random")
  jitted = partitioner.partition(step, (shardings, partitioner.data_sharding,
                                        partitioner.replicated),
                                 (shardings, partitioner.replicated), donate_argnums=(0,))
  data = partitioner.data_sharding
  batch_shapes = {"image": jax.ShapeDtypeStruct((batch, image, image, 3), jnp.uint8,
                                                sharding=data),
                  "text": jax.ShapeDtypeStruct((batch, text), jnp.int32, sharding=data)}
  m = jitted.lower(abstract, batch_shapes, jax.random.key(0)).compile().memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes)
  estimate = memory.estimate(cfg, image_size=image, text_length=text, batch_size=batch,
                             mesh=memory.mesh_shape(jax.device_count(), num_partitions,
                                                    RULES[rules]),
                             mask_ratio=mask_ratio, num_microbatches=num_microbatches,
                             mu_dtype=mu_dtype)
  return peak, estimate


# Each case is dominated by one component: activations (per remat policy and attention
# path), parameters + optimizer state, or the contrastive loss's logits.
_ACT = dict(image={"depth": 4}, text=TINY_VOCAB)
CASES = {
    "activations, no remat, einsum attention":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="xla", **_ACT), image=64, text=16,
              batch=64), "activations"),
    "activations, full remat":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="xla", remat_policy="full", **_ACT),
              image=64, text=16, batch=256), "activations"),
    "parameters and optimizer state":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="xla"), image=16, text=8, batch=4),
         "state"),
}
SLOW_CASES = {
    "activations, dots_saveable remat":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="xla", remat_policy="dots_saveable",
                                     **_ACT), image=64, text=16, batch=64), "activations"),
    "activations, chunked attention":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="chunked", **_ACT), image=64,
              text=16, batch=64), "activations"),
    "masked patches":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="xla", **_ACT), image=64, text=16,
              batch=64, mask_ratio=0.5), "activations"),
    "micro-batches":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="xla", **_ACT), image=64, text=16,
              batch=64, num_microbatches=4), None),
    "parameters, mu in bfloat16":
        (dict(cfg=configs.get_config("Ti/8", attention_impl="xla"), image=16, text=8, batch=4,
              mu_dtype="bfloat16"), "state"),
    "logits of a large batch":
        (dict(cfg=configs.get_config(
            "Ti/8", image={"depth": 1, "width": 32, "mlp_dim": 64, "heads": 2},
            text={"vocab_size": 1024, "depth": 1, "width": 32, "mlp_dim": 64, "heads": 2},
            embed_dim=32, attention_impl="xla"), image=8, text=4, batch=8192), "loss"),
    "activations split over model, t5x rules on a 2x2 mesh":
        (dict(cfg=configs.get_config("Mu/8", attention_impl="xla", text=TINY_VOCAB), image=64,
              text=16, batch=64, rules="std", num_partitions=2), "activations"),
    "activations split over model, 2-D rules on a 2x2 mesh":
        (dict(cfg=configs.get_config("Mu/8", attention_impl="xla", text=TINY_VOCAB), image=64,
              text=16, batch=64, rules="2d", num_partitions=2), "activations"),
    "2-D rules on a 2x2 mesh, full remat":
        (dict(cfg=configs.get_config("Mu/8", attention_impl="xla", remat_policy="full"),
              image=32, text=8, batch=16, rules="2d", num_partitions=2), "state"),
}


def _check(kwargs, dominant):
  peak, estimate = _xla_peak(**kwargs)
  assert estimate.total == pytest.approx(peak, rel=0.2), (
      f"estimate {memory.breakdown(estimate)} vs XLA {memory.format_bytes(peak)}")
  # The case tests what it means to: that component is the largest.
  parts = {"activations": estimate.activations, "loss": estimate.loss,
           "state": estimate.state + estimate.update + estimate.gradients}
  if dominant:
    assert max(parts, key=parts.get) == dominant, memory.breakdown(estimate)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow
def test_estimate_within_20_percent_of_xla(name):
  _check(*CASES[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_estimate_within_20_percent_of_xla_more_configs(name):
  _check(*SLOW_CASES[name])


def test_remat_policies_order_activations():
  mesh = memory.mesh_shape(8)
  act = {policy: memory.estimate(configs.get_config("H/14", remat_policy=policy),
                                 image_size=224, text_length=32, batch_size=1024,
                                 mesh=mesh).activations
         for policy in configs.REMAT_POLICIES}
  assert act["full"] < act["dots_saveable"] < act["none"]


def test_masking_and_microbatches_reduce_activations():
  cfg = configs.get_config("B/16")
  mesh = memory.mesh_shape(4)
  base = memory.estimate(cfg, image_size=224, text_length=32, batch_size=256, mesh=mesh)
  masked = memory.estimate(cfg, image_size=224, text_length=32, batch_size=256, mesh=mesh,
                           mask_ratio=0.5)
  micro = memory.estimate(cfg, image_size=224, text_length=32, batch_size=256, mesh=mesh,
                          num_microbatches=4)
  assert masked.activations < 0.6 * base.activations
  assert micro.activations < 0.3 * base.activations
  assert micro.gradients == 2 * base.gradients  # accumulator + one piece
  assert micro.loss == base.loss  # the loss is always over the whole batch


def test_bf16_mu_shrinks_the_optimizer_state_by_a_quarter():
  cfg = configs.get_config("S/16")
  mesh = memory.mesh_shape(1)
  f32 = memory.estimate(cfg, image_size=224, text_length=32, batch_size=8, mesh=mesh)
  bf16 = memory.estimate(cfg, image_size=224, text_length=32, batch_size=8, mesh=mesh,
                         mu_dtype="bfloat16")
  assert f32.optimizer == 2 * f32.params
  assert bf16.optimizer == pytest.approx(1.5 * f32.params)


def test_param_layout_matches_the_partitioners_shardings():
  """The planner's per-device share equals what the real shardings put on a device."""
  cfg = configs.get_config("Ti/8")
  rules = partitioning.standard_logical_axis_rules(2, 2)
  partitioner = partitioning.PjitPartitioner(num_partitions=2, logical_axis_rules=rules)
  tx, _ = optimizers.make_optimizer(optimizers.OptimizerConfig(), 8, 10)
  abstract, _, shardings = train_state.abstract_train_state(clip.ClipaModel(cfg), tx, 16, 8,
                                                            partitioner)
  layout = memory.param_layout(cfg, memory.mesh_shape(4, 2, rules), 16, 8)
  assert 4 * layout.per_device == model_info.per_device_bytes(abstract.params, shardings.params)
  assert layout.count == partitioning.num_params(abstract.params)
  assert not layout.bad_shardings


@pytest.mark.slow
def test_bigg_2d_rules_shard_every_big_kernel_four_ways():
  """bigG on 2x2 fake devices with the recipe's 2-D rules: eval_shape + real shardings."""
  cfg = configs.get_config("bigG/14")
  rules = partitioning.standard_logical_axis_rules(activation_partitioning_dims=2,
                                                   parameter_partitioning_dims=2)
  partitioner = partitioning.PjitPartitioner(num_partitions=2, logical_axis_rules=rules)
  tx, _ = optimizers.make_optimizer(optimizers.OptimizerConfig(mu_dtype="bfloat16"), 8, 10)
  abstract, _, shardings = train_state.abstract_train_state(clip.ClipaModel(cfg), tx, 224, 32,
                                                            partitioner)
  flat = jax.tree_util.tree_flatten_with_path(abstract.params)[0]
  for (path, leaf), sharding in zip(flat, jax.tree.leaves(shardings.params)):
    shard = sharding.shard_shape(leaf.shape)  # raises on an invalid layout
    if leaf.ndim >= 2 and leaf.size >= 1664 * 1664:
      assert leaf.size // (jax.numpy.prod(jnp.array(shard)).item()) == 4, (path, sharding.spec)
  layout = memory.param_layout(cfg, memory.mesh_shape(4, 2, rules), 224, 32)
  assert not layout.bad_shardings
  assert layout.per_device < 0.27 * layout.count
  # 256 chips -> 128 data rows: 1664 and 1280 divide; 512 chips -> 256 rows: 1664 does not.
  assert not memory.param_layout(cfg, memory.mesh_shape(256, 2, rules)).bad_shardings
  bad = memory.estimate(cfg, image_size=224, text_length=32, batch_size=512,
                        mesh=memory.mesh_shape(512, 2, rules))
  with pytest.raises(ValueError, match=r"cannot be sharded .*'data': 256"):
    memory.check_shardings(bad, memory.mesh_shape(512, 2, rules))


def test_check_fits_names_the_figure_and_the_levers():
  cfg = configs.get_config("H/14")
  mesh = memory.mesh_shape(8, rules=partitioning.data_parallel_logical_axis_rules())
  estimate = memory.estimate(cfg, image_size=224, text_length=32, batch_size=32768, mesh=mesh)
  with pytest.raises(ValueError) as info:
    memory.check_fits("finetune_224", estimate, memory.parse_bytes("80GB"), "H100 memory", mesh)
  message = str(info.value)
  assert "\n" not in message
  assert "'finetune_224'" in message and "4096 examples/device" in message
  assert "74.5 GiB" in message and "remat_policy = 'full'" in message
  assert "num_microbatches = 2" in message and "FSDP" in message
  memory.check_fits("small", memory.estimate(cfg, image_size=224, text_length=32, batch_size=8,
                                             mesh=mesh), memory.parse_bytes("80GB"), "x", mesh)


@pytest.mark.parametrize("text,expected", [("80GB", 80e9), ("24GiB", 24 * 2**30),
                                           ("512 MB", 512e6), (1024, 1024)])
def test_parse_bytes(text, expected):
  assert memory.parse_bytes(text) == expected


def test_parse_bytes_rejects_nonsense():
  with pytest.raises(ValueError, match="80GB"):
    memory.parse_bytes("eighty")


def test_device_memory_on_cpu_is_host_ram_per_device():
  capacity, where = memory.device_memory()
  assert "host RAM" in where
  assert 0 < capacity * jax.local_device_count() <= memory.host_memory_available()
