r"""Compute planner: what a recipe costs, from the same gin files as training.

Usage::

  python -m clipa_t5x.plan --gin_file=gin/runs/clipav2_h14_70_224.gin \
    [--gin_file=gin/devices/a100.gin] [--gin.KEY=VALUE ...] [--json] \
    [--devices=256 --device_memory=80GB]

Per stage and in total it prints image tokens (patches the encoder sees after
masking; the cls token is one more), text tokens, forward and training GFLOPs
per sample (training = 3x forward, ``clipa_t5x.flops``), samples seen, total
training FLOPs, and device-hours and cost for a device profile
(``gin/devices/*.gin``; A100 by default). It then plans a full-token baseline
(224 px, 32 tokens, no masking) trained on the same number of samples, and the
ratio of the two.

Then, per stage, the memory one device needs (``clipa_t5x.memory``: parameters,
optimizer state, gradients and the update, activations under the remat policy,
the loss's logits, the batch) on the mesh the gin files' partitioner builds on
``--devices`` devices (default: this machine's), whether it fits
``--device_memory`` (default: this machine's device) and, where it does not,
what to change.

How the recipe is read without training: the run file binds ``runner.run``'s
arguments; the planner parses the files (binding a dummy ``MODEL_DIR``), takes
``runner.run``'s bindings unresolved from gin and evaluates only ``stages`` and
``model_config``. Nothing else (partitioner, data, checkpoints) is built, so
planning needs no devices, data or library changes.
"""

import copy
import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import flags

from clipa_t5x import cli
from clipa_t5x import device_profiles
from clipa_t5x import flops
from clipa_t5x import gin_utils
from clipa_t5x import memory

BASELINE_IMAGE_SIZE = 224
BASELINE_TEXT_LENGTH = 32
# Without a gin/devices file: the A100 profile with gin/devices/a100.gin's assumptions.
DEFAULT_DEVICE = "A100"
DEFAULT_UTILIZATION = 0.275
DEFAULT_PRICE_PER_HOUR = 1.575


@dataclasses.dataclass(frozen=True)
class StagePlan:
  """The compute of one stage (FLOPs are per device-independent model FLOPs).

  Attributes:
    name: stage name.
    image_size: training resolution in px.
    image_tokens: patch tokens seen per image after masking (cls excluded).
    text_tokens: caption tokens.
    mask_ratio: fraction of patches dropped.
    forward_gflops: forward GFLOPs of one image-text pair.
    train_gflops: training GFLOPs of one pair (3x forward).
    samples: examples seen (steps x batch).
    train_flops: total training FLOPs of the stage.
    device_hours: device-hours at the profile's peak x utilisation.
    cost: ``device_hours`` x price per device-hour (USD).
  """
  name: str
  image_size: int
  image_tokens: int
  text_tokens: int
  mask_ratio: float
  forward_gflops: float
  train_gflops: float
  samples: int
  train_flops: float
  device_hours: float
  cost: float


def _total(field: str) -> property:
  """The sum of a ``StagePlan`` field over a ``Plan``'s stages, as a property."""
  return property(lambda plan: sum(getattr(s, field) for s in plan.stages),
                  doc=f"The stages' total {field}.")


@dataclasses.dataclass(frozen=True)
class Plan:
  """A recipe's stages, totals, and the full-token baseline on the same samples."""
  device: device_profiles.DeviceProfile
  stages: Tuple[StagePlan, ...]
  baseline: StagePlan
  samples = _total("samples")
  train_flops = _total("train_flops")
  device_hours = _total("device_hours")
  cost = _total("cost")

  @property
  def speedup(self) -> float:
    """Baseline FLOPs / recipe FLOPs: how much cheaper the reduced-token recipe is."""
    return self.baseline.train_flops / self.train_flops

  def to_dict(self) -> Dict[str, Any]:
    """JSON-ready form (``--json``)."""
    return {"device": dataclasses.asdict(self.device),
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "total": {"samples": self.samples, "train_flops": self.train_flops,
                      "device_hours": self.device_hours, "cost": self.cost},
            "baseline": dataclasses.asdict(self.baseline),
            "baseline_over_recipe": self.speedup}


def plan_stage(model_config, name: str, image_size: int, text_length: int, samples: int,
               device: device_profiles.DeviceProfile, mask_ratio: float = 0.0,
               batch_size: int = 0) -> StagePlan:
  """Plans one stage of ``samples`` examples on ``device``.

  Args:
    model_config: a ``ClipaConfig``.
    name, image_size, samples, mask_ratio: as ``StagePlan``'s.
    text_length: caption tokens.
    device: the profile (peak FLOP/s, utilisation, price).
    batch_size: global batch; counts the contrastive logits (0 = towers only).

  Returns:
    The ``StagePlan``.
  """
  per_example = flops.per_example_flops(model_config, image_size, text_length, mask_ratio,
                                        batch_size)
  total = per_example["train"] * samples
  hours = total / (device.peak_flops * device.utilization) / 3600.0
  return StagePlan(
      name=name, image_size=image_size,
      image_tokens=flops.image_tokens(image_size, model_config.image.patch_size, mask_ratio),
      text_tokens=text_length, mask_ratio=float(mask_ratio),
      forward_gflops=per_example["forward"] / 1e9, train_gflops=per_example["train"] / 1e9,
      samples=int(samples), train_flops=total, device_hours=hours,
      cost=hours * device.price_per_hour)


def plan(model_config, stages: Sequence[Any], device: device_profiles.DeviceProfile) -> Plan:
  """Plans a recipe: every ``runner.Stage`` and the 224/32 baseline on the same samples.

  Args:
    model_config: a ``ClipaConfig``.
    stages: ``runner.Stage`` objects (or anything with ``name``, ``image_size``,
      ``text_length``, ``batch_size``, ``train_steps``, ``mask_ratio``).
    device: the device profile.

  Returns:
    The ``Plan``.
  """
  if model_config is None:
    raise ValueError("plan: no model config; include a gin/models/*.gin file.")
  if not stages:
    raise ValueError("plan: no stages; set run.stages (STAGES) in the run's gin file.")
  rows = tuple(plan_stage(model_config, s.name, s.image_size, s.text_length,
                          s.train_steps * s.batch_size, device, s.mask_ratio, s.batch_size)
               for s in stages)
  # The baseline trains at the first stage's batch.
  baseline = plan_stage(model_config, f"baseline {BASELINE_IMAGE_SIZE}px/{BASELINE_TEXT_LENGTH}",
                        BASELINE_IMAGE_SIZE, BASELINE_TEXT_LENGTH,
                        sum(r.samples for r in rows), device, batch_size=stages[0].batch_size)
  return Plan(device=device, stages=rows, baseline=baseline)


def recipe_from_gin() -> Tuple[Any, List[Any]]:
  """``(model_config, stages)`` that the parsed gin config would train with.

  Only these two of ``runner.run``'s bindings are evaluated (gin evaluates a
  reference when it is deep-copied), so no partitioner or devices are built.
  """
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  import gin  # pylint: disable=import-outside-toplevel
  bindings = gin.get_bindings(runner.run, resolve_references=False)
  if "stages" not in bindings:
    raise ValueError("the gin files bind no runner.run.stages; pass a run file, "
                     "e.g. --gin_file=gin/runs/clipav2_h14_70_224.gin.")
  stages = list(copy.deepcopy(bindings["stages"]))
  model_config = copy.deepcopy(bindings.get("model_config"))
  return model_config, stages


def mesh_from_gin(devices: int) -> "memory.MeshShape":
  """The mesh the gin files' ``PjitPartitioner`` would build on ``devices`` devices.

  ``num_partitions`` and ``logical_axis_rules`` are read from the bindings
  (the rules function is evaluated; no devices or mesh are built).
  """
  from clipa_t5x import partitioning  # pylint: disable=import-outside-toplevel
  import gin  # pylint: disable=import-outside-toplevel
  try:
    bindings = gin.get_bindings(partitioning.PjitPartitioner, resolve_references=False)
  except ValueError:
    bindings = {}
  num_partitions = copy.deepcopy(bindings.get("num_partitions", 1))
  rules = copy.deepcopy(bindings.get("logical_axis_rules"))
  return memory.mesh_shape(devices, num_partitions, rules)


def memory_plan(model_config, stages: Sequence[Any], mesh: "memory.MeshShape",
                capacity: Optional[int], where: str = "",
                platform: Optional[str] = None) -> List[Any]:
  """One ``preflight.StageReport`` per stage: the estimate and whether it fits ``capacity``.

  ``platform`` (``'gpu'``, ``'tpu'``; None: this machine) picks the attention path
  that ``attention_impl='auto'`` takes there.
  """
  from clipa_t5x import preflight  # pylint: disable=import-outside-toplevel
  return [preflight.StageReport(s.name, preflight.stage_estimate(s, model_config, mesh, platform),
                                capacity, where) for s in stages]


def format_memory_plan(reports: Sequence[Any], mesh: "memory.MeshShape") -> str:
  """The memory table, then for each stage that does not fit what to change."""
  from clipa_t5x import preflight  # pylint: disable=import-outside-toplevel
  lines = [preflight.format_reports(reports, mesh)]
  for r in reports:
    if r.estimate.bad_shardings:
      name, shape, axes = r.estimate.bad_shardings[0]
      lines.append(f"{r.name}: invalid sharding: {name} {shape} as {axes} on this mesh; "
                   "choose a mesh whose axes divide it.")
    if not r.fits:
      lines.append(f"{r.name}: does not fit; to fit: "
                   f"{memory.levers(r.estimate, mesh, getattr(r, 'num_microbatches', 1))}.")
  return "\n".join(lines)


def device_from_gin() -> device_profiles.DeviceProfile:
  """The ``DEVICE_PROFILE`` macro (``gin/devices/*.gin``), else the A100 profile."""
  import gin  # pylint: disable=import-outside-toplevel
  try:
    gin.query_parameter("%DEVICE_PROFILE")
  except ValueError:
    return device_profiles.get_profile(DEFAULT_DEVICE, utilization=DEFAULT_UTILIZATION,
                                      price_per_hour=DEFAULT_PRICE_PER_HOUR)
  return gin_utils.query_macro("DEVICE_PROFILE")


def _count(x: float) -> str:
  """Large numbers with a unit: 12.81B, 524.3M, 1.85e+21."""
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.2f}{unit}"
  return f"{x:g}"


def format_plan(result: Plan) -> str:
  """The planner's table, as printed by the CLI."""
  d = result.device
  header = ("stage", "res", "img tok", "txt tok", "fwd GFLOPs", "train GFLOPs", "samples",
            "train FLOPs", "device-h", "cost $")

  def row(s: StagePlan) -> Tuple[str, ...]:
    return (s.name, str(s.image_size), str(s.image_tokens), str(s.text_tokens),
            f"{s.forward_gflops:.2f}", f"{s.train_gflops:.2f}", _count(s.samples),
            f"{s.train_flops:.3e}", f"{s.device_hours:,.0f}", f"{s.cost:,.0f}")

  lines = [header] + [row(s) for s in result.stages]
  lines.append(("total", "", "", "", "", "", _count(result.samples), f"{result.train_flops:.3e}",
                f"{result.device_hours:,.0f}", f"{result.cost:,.0f}"))
  lines.append(row(result.baseline))
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

  def fmt(line):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(line, widths))).rstrip()

  rule = "  ".join("-" * w for w in widths)
  n = len(result.stages)
  out = [f"device: {d.name}, peak {d.peak_flops / 1e12:.0f} TFLOP/s per device (bf16 dense), "
         f"assumed utilisation {d.utilization:.1%}, ${d.price_per_hour:.3f} per device-hour",
         fmt(lines[0]), rule] + [fmt(line) for line in lines[1:1 + n]]
  out += [rule, fmt(lines[1 + n]), fmt(lines[2 + n])]
  out.append(f"baseline / recipe: {result.speedup:.2f}x the training FLOPs "
             f"(the recipe costs {1 / result.speedup:.1%} of the baseline)")
  out.append("img tok = patch tokens per image after masking; the encoder also sees 1 cls token "
             "(counted in the FLOPs). training = 3x forward.")
  return "\n".join(out)


FLAGS = flags.FLAGS
cli.define_gin_flags("Gin files: a run file and optionally a gin/devices/*.gin profile "
                     "(A100 if none).", multihost=False)
if "json" not in FLAGS:  # guarded: ``train --check`` imports this module after parsing flags
  flags.DEFINE_bool("json", False, "Print the plan as JSON instead of a table.")
  flags.DEFINE_integer("devices", None, "Plan memory for a mesh of this many devices "
                       "(default: this machine's); the gin files' partitioner gives "
                       "num_partitions and the logical axis rules.")
  flags.DEFINE_string("device_memory", None, "Memory of one device, e.g. 80GB or 16GiB "
                      "(default: this machine's device, or host RAM on CPU).")
EXAMPLE = """\
clipa-plan --gin_file=gin/runs/clipav2_h14_70_224.gin --devices=256 --device_memory=80GB
clipa-plan --gin_file=gin/runs/demo_cpu.gin --json
"""


def main(argv: Sequence[str]) -> None:
  cli.check_no_extra_args(argv)
  with cli.config_errors_as_one_line("plan"):
    # MODEL_DIR is required by base.gin but irrelevant here; a user's binding still wins.
    gin_utils.parse_gin_flags(FLAGS.gin_file, ["MODEL_DIR = 'unused-by-plan'"]
                              + list(FLAGS.gin_bindings), FLAGS.gin_search_paths)
    gin_utils.check_unused_bindings(FLAGS.gin_bindings, [_run_entry()], ["DEVICE_PROFILE"])
    model_config, stages = recipe_from_gin()
    device = device_from_gin()
    result = plan(model_config, stages, device)
    platform = None  # this machine's
    if FLAGS.devices is None:  # this machine
      import jax  # pylint: disable=import-outside-toplevel
      devices = jax.device_count()
      capacity, where = memory.device_memory()
    else:
      devices, capacity, where = FLAGS.devices, None, ""
      platform = "tpu" if "tpu" in device.name.lower() else "gpu"  # the profile's kind
    if FLAGS.device_memory:
      capacity, where = memory.parse_bytes(FLAGS.device_memory), f"{FLAGS.device_memory} per device"
    mesh = mesh_from_gin(devices)
    reports = memory_plan(model_config, stages, mesh, capacity, where, platform)
  if FLAGS.json:
    out = result.to_dict()
    out["memory"] = {"mesh": {"data": mesh.data, "model": mesh.model},
                     "device_memory": capacity,
                     "stages": [dict(r.estimate.to_dict(), name=r.name, fits=r.fits)
                                for r in reports]}
    print(json.dumps(out, indent=2))
  else:
    print(format_plan(result) + "\n" + format_memory_plan(reports, mesh))


def _run_entry():
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  return runner.run


def console_main(argv: Optional[List[str]] = None) -> None:
  """Entry point (rewrites ``--gin.K=V`` into ``--gin_bindings``)."""
  cli.run_app(main, argv, quiet=False, example=EXAMPLE)


if __name__ == "__main__":
  console_main()
