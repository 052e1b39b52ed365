"""Train-step throughput of clipa_t5x at several token budgets.

For one model (any ``VARIANTS`` name) and a list of settings
``resolution:text_length:mask_ratio``, measures samples/s of the real train
step (``Trainer``: the jitted step with pinned shardings from
``PjitPartitioner``, state donated, data parallel over the local devices),
the achieved FLOP/s (analytic training FLOPs from ``clipa_t5x.flops``), the
MFU where the device's peak is known (``device_profiles``; "-" on CPU), and,
for every setting, the speedup over the first ("full tokens") setting next to
the ratio of their FLOPs. CLIPA's premise is that fewer image tokens buy a
near-proportional speedup; ``speedup / FLOPs ratio`` says how near.

What is timed: the train step only. One fixed random batch (uint8 images,
int32 tokens) is fed through ``Trainer.step`` each step, i.e. host numpy ->
sharded ``jax.Array`` as in training; no data pipeline. Each setting
compiles once (reported separately) and runs one untimed warm-up step; then
rounds of ``--steps`` steps are alternated across the settings (A B C A B C
...) so load from other processes hits all alike, each round ending in
``jax.block_until_ready``. The median round is reported.

On a GPU the default compute dtype is bfloat16 and MFU is against the
device's dense bf16 peak; on CPU the default is float32.

Usage::

  python bench/step_throughput.py [--model S/16]
      [--settings 224:32:0,112:32:0,224:32:0.75] [--batch 64] [--steps 1]
      [--rounds 3] [--dtype float32] [--json OUT]
"""

import argparse
import dataclasses
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _timing  # noqa: E402  (bench/_timing.py)

# Defaults per platform: a small model that finishes in minutes on 2 CPU
# cores; a CLIPA-sized one on an accelerator.
DEFAULT_MODEL = {"cpu": "Mu/8", "accelerator": "B/16"}
DEFAULT_BATCH = {"cpu": 128, "accelerator": 256}
# The goal: at 1/4 of the image tokens the step is at least 0.85 x the FLOPs ratio
# faster (CLIPA's premise that fewer tokens buy a near-proportional speedup).
GOAL_EFFICIENCY = 0.85
GOAL_TOKEN_FRACTION = 0.25


# ------------------------------------------------------------- settings ---
@dataclasses.dataclass(frozen=True)
class Setting:
  """One input shape: square resolution, text length and patch mask ratio."""
  image_size: int
  text_length: int
  mask_ratio: float = 0.0

  @property
  def label(self) -> str:
    return f"{self.image_size}:{self.text_length}:{self.mask_ratio:g}"


def default_settings(patch_size: int) -> str:
  """Full tokens (14 x 14 patches), 1/4 of them by resolution (7 x 7), and 1/4 by masking.

  E.g. ``'224:32:0,112:32:0,224:32:0.75'`` for patch 16, ``'112:32:0,56:32:0,112:32:0.75'``
  for patch 8: 196 vs 49 image tokens whatever the model.
  """
  full, low = 14 * patch_size, 7 * patch_size
  return f"{full}:32:0,{low}:32:0,{full}:32:0.75"


def parse_settings(text: str) -> List[Setting]:
  """Parses ``'224:32:0,112:32:0,224:32:0.5'`` into ``Setting``s.

  Each item is ``resolution:text_length[:mask_ratio]`` (mask ratio 0 when
  left out). The first setting is the baseline the others are compared with.

  Args:
    text: comma-separated settings.

  Returns:
    The settings, in order.

  Raises:
    ValueError: on a malformed item, a non-positive size, a mask ratio
      outside [0, 1), or a repeated setting.
  """
  items = [item.strip() for item in str(text).split(",") if item.strip()]
  if not items:
    raise ValueError(f"--settings is empty ({text!r}); give e.g. 224:32:0,112:32:0.")
  settings = []
  for item in items:
    parts = item.split(":")
    try:
      if len(parts) not in (2, 3):
        raise ValueError
      size, length = int(parts[0]), int(parts[1])
      ratio = float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError:
      raise ValueError(
          f"setting {item!r} is not resolution:text_length[:mask_ratio]; write e.g. "
          "224:32:0 or 112:32:0.5.") from None
    if size < 1 or length < 1:
      raise ValueError(f"setting {item!r}: resolution and text length must be positive.")
    if not 0.0 <= ratio < 1.0:
      raise ValueError(f"setting {item!r}: mask ratio {ratio} must be in [0, 1).")
    setting = Setting(size, length, ratio)
    if setting in settings:
      raise ValueError(f"setting {item!r} is given twice; list each setting once.")
    settings.append(setting)
  return settings


def check_settings(settings: Sequence[Setting], config) -> None:
  """Checks that every setting fits the model (patch multiple, >= 1 kept patch).

  Args:
    settings: the parsed settings.
    config: the ``ClipaConfig``.

  Raises:
    ValueError: naming the setting and the fix.
  """
  from clipa_t5x.models import vit  # pylint: disable=import-outside-toplevel
  patch = config.image.patch_size
  for s in settings:
    if s.image_size % patch:
      raise ValueError(
          f"setting {s.label}: resolution {s.image_size} is not a multiple of the patch "
          f"size {patch}; use {max(patch, s.image_size // patch * patch)} or "
          f"{(s.image_size // patch + 1) * patch}.")
    vit.num_kept((s.image_size // patch) ** 2, s.mask_ratio)  # raises if none kept


def kept_image_tokens(config, setting: Setting) -> int:
  """Patch tokens the image tower sees in training (cls not counted)."""
  from clipa_t5x.models import vit  # pylint: disable=import-outside-toplevel
  return vit.num_kept((setting.image_size // config.image.patch_size) ** 2,
                      setting.mask_ratio)


def train_flops(config, setting: Setting) -> float:
  """Analytic training FLOPs of one image-text pair (``flops.per_example_flops``)."""
  from clipa_t5x import flops  # pylint: disable=import-outside-toplevel
  return flops.per_example_flops(config, setting.image_size, setting.text_length,
                                 setting.mask_ratio)["train"]


# ---------------------------------------------------------------- table ---
@dataclasses.dataclass
class Row:
  """The result of one setting; ratios are against the first setting."""
  setting: str
  image_tokens: int
  text_tokens: int
  gflops_per_sample: float    # training (forward + backward)
  samples_per_s: float        # median over rounds, wall clock
  samples_per_cpu_s: float    # median over rounds, per process CPU second
  cores: float                # median CPU s / wall s
  achieved_tflops: float
  mfu: Optional[float]        # None when the device's peak is unknown
  speedup: float              # samples/s over the first setting's
  flops_ratio: float          # first setting's FLOPs / this one's
  efficiency: float           # speedup / flops_ratio
  compile_s: float
  rounds_samples_per_s: List[float]


def make_rows(config, settings: Sequence[Setting],
              timings: Sequence[Sequence[_timing.Timing]], compile_s: Sequence[float],
              peak_flops: Optional[float]) -> List[Row]:
  """Turns per-round timings into table rows (medians and ratios).

  Args:
    config: the ``ClipaConfig`` (for tokens and FLOPs).
    settings: the settings; the first is the baseline.
    timings: ``timings[i]``: the rounds of ``settings[i]``.
    compile_s: compile seconds of each setting.
    peak_flops: peak FLOP/s of all devices together, or None if unknown.

  Returns:
    One ``Row`` per setting.
  """
  if not (len(settings) == len(timings) == len(compile_s)) or not settings:
    raise ValueError(f"need one timing list and compile time per setting, got "
                     f"{len(settings)} settings, {len(timings)} timings, "
                     f"{len(compile_s)} compile times.")
  base_rate = _timing.median_of(timings[0])
  base_flops = train_flops(config, settings[0])
  rows = []
  for s, ts, c in zip(settings, timings, compile_s):
    rate = _timing.median_of(ts)
    f = train_flops(config, s)
    achieved = rate * f
    speedup = rate / base_rate
    ratio = base_flops / f
    rows.append(Row(
        setting=s.label, image_tokens=kept_image_tokens(config, s), text_tokens=s.text_length,
        gflops_per_sample=f / 1e9, samples_per_s=rate,
        samples_per_cpu_s=_timing.median_of(ts, "samples_per_cpu_s"),
        cores=_timing.median_of(ts, "cores"), achieved_tflops=achieved / 1e12,
        mfu=achieved / peak_flops if peak_flops else None, speedup=speedup,
        flops_ratio=ratio, efficiency=speedup / ratio, compile_s=float(c),
        rounds_samples_per_s=[t.samples_per_s for t in ts]))
  return rows


def format_table(rows: Sequence[Row]) -> str:
  """The rows as a fixed-width text table.

  Left of the first bar: the setting and its throughput; middle: ratios
  against the first row by wall clock (the goal's measure); right: the
  process's CPU use, the same ratio by CPU seconds (robust to other
  processes taking cores), and the compile time.
  """
  head = (f"{'setting':>12} {'img tok':>7} {'txt tok':>7} {'GFLOP/sample':>12} "
          f"{'samples/s':>9} {'TFLOP/s':>7} {'MFU':>6} | {'speedup':>7} "
          f"{'FLOPs ratio':>11} {'speedup/FLOPs':>13} | {'cores':>5} "
          f"{'per CPU-s':>9} {'speedup/FLOPs':>13} {'compile s':>9}")
  first_bar = head.index("|")
  second_bar = head.index("|", first_bar + 1)
  over = (" " * first_bar + "| by wall clock").ljust(second_bar) + "| by CPU time"
  lines = [over, head, "-" * len(head)]
  base_cpu = rows[0].samples_per_cpu_s if rows else 1.0
  for r in rows:
    mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else "-"
    cpu_eff = r.samples_per_cpu_s / base_cpu / r.flops_ratio
    lines.append(
        f"{r.setting:>12} {r.image_tokens:>7} {r.text_tokens:>7} "
        f"{r.gflops_per_sample:>12.3f} {r.samples_per_s:>9.2f} {r.achieved_tflops:>7.3f} "
        f"{mfu:>6} | {r.speedup:>6.2f}x {r.flops_ratio:>10.2f}x {r.efficiency:>13.2f} | "
        f"{r.cores:>5.2f} {r.samples_per_cpu_s:>9.2f} {cpu_eff:>13.2f} {r.compile_s:>9.1f}")
  return "\n".join(lines)


def goal_row(rows: Sequence[Row]) -> Optional[Row]:
  """The non-baseline row whose kept image tokens are nearest 1/4 of the baseline's."""
  if len(rows) < 2:
    return None
  base = rows[0].image_tokens
  return min(rows[1:], key=lambda r: abs(r.image_tokens / base - GOAL_TOKEN_FRACTION))


def goal_lines(rows: Sequence[Row], threshold: float = GOAL_EFFICIENCY) -> List[str]:
  """Whether the goal (speedup >= threshold x FLOPs ratio at ~1/4 image tokens) is met.

  Every row nearest 1/4 of the image tokens is judged (e.g. both the
  low-resolution and the masked setting when they tie).
  """
  first = goal_row(rows)
  if first is None:
    return ["goal: not judged (give a second setting with ~1/4 of the image tokens)"]
  base = rows[0].image_tokens
  nearest = abs(first.image_tokens / base - GOAL_TOKEN_FRACTION)
  lines = []
  for r in rows[1:]:
    if abs(abs(r.image_tokens / base - GOAL_TOKEN_FRACTION) - nearest) > 1e-9:
      continue
    verdict = "MET" if r.efficiency >= threshold else "NOT MET"
    lines.append(
        f"goal {verdict}: at {r.setting} ({r.image_tokens}/{base} = "
        f"{r.image_tokens / base:.2f} of the image tokens) speedup {r.speedup:.2f}x = "
        f"{r.efficiency:.2f} x the FLOPs ratio {r.flops_ratio:.2f}x (goal >= {threshold:.2f})")
  return lines


# -------------------------------------------------------------- running ---
def default_dtype(platform_name: str) -> str:
  """bfloat16 on accelerators, float32 on CPU."""
  return "float32" if platform_name == "cpu" else "bfloat16"


def random_batch(batch_size: int, setting: Setting, vocab_size: int,
                 seed: int = 0) -> Dict[str, np.ndarray]:
  """A fixed random batch: uint8 images and int32 tokens (BERT [CLS] first)."""
  rng = np.random.RandomState(seed)
  size, length = setting.image_size, setting.text_length
  tokens = rng.randint(1000, vocab_size, (batch_size, length)).astype(np.int32)
  tokens[:, 0] = 101
  return {"image": rng.randint(0, 256, (batch_size, size, size, 3)).astype(np.uint8),
          "text": tokens}


class StepRunner:
  """One setting's model, state and compiled ``Trainer`` step.

  Args:
    model_name: a ``VARIANTS`` name.
    setting: the input shape.
    batch_size: global batch.
    dtype: compute dtype name.
    partitioner: the ``PjitPartitioner``.
    seed: init and data seed.
    base_learning_rate: per 256 examples; None keeps ``OptimizerConfig``'s default.
    **config_overrides: further ``ClipaConfig`` fields (e.g. ``attention_impl``,
      ``remat_policy``).
  """

  def __init__(self, model_name: str, setting: Setting, batch_size: int, dtype: str,
               partitioner, seed: int = 0, base_learning_rate: Optional[float] = None,
               **config_overrides):
    # pylint: disable=import-outside-toplevel
    import jax
    from clipa_t5x import optimizers, train_state, trainer
    from clipa_t5x.models import clip, configs
    config = configs.get_config(model_name, dtype=dtype, **config_overrides)
    self.config = config
    self._partitioner = partitioner
    model = clip.ClipaModel(config)
    # CLIPA's AdamW defaults; a long schedule keeps the rate at its peak.
    opt_config = optimizers.OptimizerConfig()
    if base_learning_rate is not None:
      opt_config = dataclasses.replace(opt_config, base_learning_rate=base_learning_rate)
    tx, lr_fn = optimizers.make_optimizer(opt_config, batch_size, total_steps=1_000_000)
    _, _, shardings = train_state.abstract_train_state(
        model, tx, setting.image_size, setting.text_length, partitioner)
    self.setting = setting
    self.batch_size = batch_size
    self._state = train_state.create_train_state(
        model, tx, jax.random.key(seed), setting.image_size, setting.text_length,
        partitioner, shardings)
    self._trainer = trainer.Trainer(model, tx, lr_fn, partitioner, shardings, batch_size,
                                    flops_per_example=train_flops(config, setting),
                                    mask_ratio=setting.mask_ratio)
    self._batch = random_batch(batch_size, setting, config.text.vocab_size, seed)
    self._rng = jax.random.key(seed + 1)
    self.compile_s = self._trainer.compile(self._state, self._batch, self._rng)
    self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self._state.params))
    self.loss = float("nan")
    self._device_batch = None

  @property
  def params(self):
    """The current (boxed) parameters; read them before ``run``, which donates the state."""
    return self._state.params

  def run(self, steps: int) -> int:
    """Runs ``steps`` train steps, blocks until done; returns samples processed."""
    return self._run(steps, resident=False)

  def run_resident(self, steps: int) -> int:
    """As ``run``, but on a batch placed on the devices once: no per-step host copy."""
    return self._run(steps, resident=True)

  def compiled_text(self) -> Optional[str]:
    """The compiled step's optimised HLO."""
    return self._trainer.compiled_text()

  def _run(self, steps: int, resident: bool) -> int:
    import jax  # pylint: disable=import-outside-toplevel
    if resident and self._device_batch is None:
      self._device_batch = self._partitioner.shard_batch(self._batch)
    metrics = None
    for _ in range(steps):
      if resident:
        self._state, metrics = self._trainer.step_on_device(self._state, self._device_batch,
                                                            self._rng)
      else:
        self._state, metrics = self._trainer.step(self._state, self._batch, self._rng)
    jax.block_until_ready((self._state, metrics))
    self.loss = float(metrics["loss"])
    return steps * self.batch_size

  def timed(self, steps: int) -> Callable[[], _timing.Timing]:
    """A zero-argument runner for ``_timing.alternate``."""
    return lambda: _timing.time_call(lambda: self.run(steps))


@dataclasses.dataclass
class Result:
  """Everything one run measured."""
  model: str
  dtype: str
  batch_size: int
  steps: int
  rounds: int
  platform: str
  device_kind: str
  num_devices: int
  peak_flops: Optional[float]
  rows: List[Row]
  losses: Dict[str, float]


def run(model_name: str, settings: Sequence[Setting], batch_size: int, steps: int,
        rounds: int, dtype: Optional[str] = None,
        log: Callable[[str], None] = lambda s: None) -> Result:
  """Compiles every setting, then times them in alternating rounds.

  Args:
    model_name: a ``VARIANTS`` name.
    settings: the settings; the first is the baseline.
    batch_size: global batch (a multiple of the local device count).
    steps: timed steps per round.
    rounds: alternating rounds.
    dtype: compute dtype; None picks ``default_dtype`` for the platform.
    log: progress printer.

  Returns:
    The ``Result``.
  """
  # pylint: disable=import-outside-toplevel
  import jax
  from clipa_t5x import device_profiles, partitioning
  from clipa_t5x.models import configs
  if steps < 1 or rounds < 1:
    raise ValueError(f"steps and rounds must be >= 1, got {steps} and {rounds}.")
  devices = jax.local_devices()
  plat, kind = devices[0].platform, devices[0].device_kind
  dtype = dtype or default_dtype(plat)
  config = configs.get_config(model_name, dtype=dtype)
  check_settings(settings, config)
  if batch_size < 1 or batch_size % len(devices):
    raise ValueError(f"--batch {batch_size} must be a positive multiple of the "
                     f"{len(devices)} local devices.")
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=devices)
  peak_one = device_profiles.peak_flops_for_device_kind(kind)
  peak = peak_one * len(devices) if peak_one else None
  runners = []
  for s in settings:
    start = time.perf_counter()
    runner = StepRunner(model_name, s, batch_size, dtype, partitioner)
    runner.run(1)  # warm-up: first-execution allocations are not timed
    log(f"  {s.label}: compiled in {runner.compile_s:.1f} s, set up + warm-up step "
        f"{time.perf_counter() - start:.1f} s")
    runners.append(runner)
  timings = _timing.alternate([r.timed(steps) for r in runners], rounds)
  rows = make_rows(config, settings, timings, [r.compile_s for r in runners], peak)
  return Result(model=model_name, dtype=dtype, batch_size=batch_size, steps=steps,
                rounds=rounds, platform=plat, device_kind=kind, num_devices=len(devices),
                peak_flops=peak, rows=rows,
                losses={r.setting.label: r.loss for r in runners})


def report(result: Result) -> str:
  """The table, the per-round numbers and the goal verdict as text."""
  lines = [format_table(result.rows), "samples/s per round:"]
  for r in result.rows:
    lines.append(f"  {r.setting:>13}: " + ", ".join(f"{v:.2f}" for v in r.rounds_samples_per_s))
  lines += goal_lines(result.rows)
  return "\n".join(lines)


def _settings_arg(text: str) -> List[Setting]:
  try:
    return parse_settings(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Optional[Sequence[str]] = None) -> Result:
  """Command line entry point; prints the table and returns the ``Result``."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default=None,
                      help=f"variant (default {DEFAULT_MODEL['cpu']} on CPU, "
                      f"{DEFAULT_MODEL['accelerator']} on an accelerator)")
  parser.add_argument("--settings", type=_settings_arg, default=None,
                      help="comma-separated resolution:text_length[:mask_ratio]; the first is "
                      "the baseline (default: 14x14 patches, 7x7 patches, 14x14 patches with "
                      "mask 0.75, text 32; e.g. 112:32:0,56:32:0,112:32:0.75 for Mu/8)")
  parser.add_argument("--batch", type=int, default=None,
                      help=f"global batch (default {DEFAULT_BATCH['cpu']} on CPU, "
                      f"{DEFAULT_BATCH['accelerator']} on an accelerator)")
  parser.add_argument("--steps", type=int, default=2, help="timed steps per round (default 2)")
  parser.add_argument("--rounds", type=int, default=5,
                      help="alternating rounds over the settings (default 5)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                      help="compute dtype (default float32 on CPU, bfloat16 otherwise)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  args = parser.parse_args(argv)
  if args.steps < 1 or args.rounds < 1:
    parser.error("--steps and --rounds must be >= 1.")
  # pylint: disable=import-outside-toplevel
  from clipa_t5x import xla_flags
  xla_flags.apply_default_flags(log=print)  # as the trainer does, before the backend starts
  import jax
  from clipa_t5x.models import configs, layers
  plat = jax.devices()[0].platform
  where = "cpu" if plat == "cpu" else "accelerator"
  model = args.model or DEFAULT_MODEL[where]
  if model not in configs.VARIANTS:
    parser.error(f"unknown --model {model!r}; choose one of {sorted(configs.VARIANTS)}.")
  settings = args.settings or parse_settings(
      default_settings(configs.VARIANTS[model].image.patch_size))
  batch = args.batch or DEFAULT_BATCH[where]
  dtype = args.dtype or default_dtype(plat)
  print(f"model {model}, compute {dtype}, batch {batch}, {jax.local_device_count()} x "
        f"{jax.devices()[0].device_kind} ({plat}), data parallel; jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.machine()})")
  print("data: one fixed random batch (uint8 images, int32 tokens) fed through "
        "Trainer.step every step (host numpy -> sharded jax.Array, as in training); "
        "no data pipeline")
  print(f"timing: median of {args.rounds} alternating rounds (A B C ...) of {args.steps} "
        "step(s), each ending in jax.block_until_ready; compile and one warm-up step "
        "not timed; FLOPs: clipa_t5x.flops (train = 3 x forward); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; attention "
        f"{layers.resolve_attention_impl(configs.get_config(model).attention_impl)}")
  sys.stdout.flush()

  def log(line: str) -> None:
    print(line, flush=True)

  try:
    result = run(model, settings, batch, args.steps, args.rounds, dtype, log)
  except ValueError as e:
    parser.error(str(e))
  print(report(result))
  print("final loss per setting (sanity): " +
        ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items()))
  if args.json:
    _timing.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
