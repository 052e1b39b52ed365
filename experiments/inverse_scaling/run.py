r"""CLIPA's inverse scaling law in miniature, on the demo data.

Per model size, CLIPA two-tower models are pre-trained on fewer tokens, then
fine-tuned briefly at the full resolution and text length, and the held-out
demo split is classified zero-shot:

* image tokens by **resizing** (e.g. 64 / 48 / 32 px = 64 / 36 / 16 patches)
  and by **random patch masking** at full resolution (one setting, e.g. 75%
  of 64 patches masked = 16 tokens, the same count as the smallest resize);
* text tokens by **syntax masking** (e.g. 32 truncated vs 8 syntax-reduced);
* every setting with **two or more seeds**, so each point has a spread and
  the tables a seed-noise interval;
* **the headline**: the CLIPA schedule (pre-training on the fewest image and
  text tokens + the short full-resolution fine-tune) against training at
  full resolution only, for the same training FLOPs, the same model and the
  same evaluation.

Every pre-training sees the same number of samples (CLIPA's fixed sample
budget), so fewer tokens means less compute; the full-resolution baseline of
the headline trains for as many steps as the CLIPA schedule's FLOPs buy.

Usage, from the repository root::

  .venv/bin/python experiments/inverse_scaling/run.py                # default study
  .venv/bin/python experiments/inverse_scaling/run.py --quick        # CI preset
  .venv/bin/python experiments/inverse_scaling/run.py --list         # runs + compute
  .venv/bin/python experiments/inverse_scaling/run.py --confirm      # confirmatory test

Every run is an ordinary clipa_t5x ``MODEL_DIR`` (``OUT/runs/<run id>/``,
trained with ``clipa_t5x.runner.run``); rerunning the command skips finished
runs and resumes an interrupted one from its last checkpoint. The results go
to ``OUT/results.json``, ``OUT/results.md`` (tables with 95% intervals),
``OUT/accuracy_vs_tokens.png`` and ``OUT/accuracy_vs_flops.png`` (plot.py).
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))


def _sibling(name: str):
  """Imports ``<name>.py`` from this folder under a unique module name."""
  key = f"inverse_scaling_{name}"
  if key not in sys.modules:
    spec = importlib.util.spec_from_file_location(key, os.path.join(_HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
  return sys.modules[key]


GRIDS = ("axes", "full")
EVAL_TEMPLATES = ("a photo of a {c}.", "a {c}.", "a picture of a {c}.", "a drawing of a {c}.",
                  "there is a {c} in the image.")
RUN_FILE = "sweep_run.json"      # what a run directory was trained with
RESULT_FILE = "sweep_result.json"  # its finished result row
# Which tokens a run's pre-training reduces. 'both' is CLIPA's own recipe (the
# headline's schedule); 'fullres' is the headline's compute-matched baseline
# (one stage at full resolution and text length, no fine-tune).
AXES = ("full", "image", "mask", "text", "both", "fullres")


@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """Everything that defines the study (and so every run's training).

  Attributes:
    widths: tower widths (the model sizes); both towers get ``width`` with
      ``width // head_dim`` heads, an MLP of ``4 * width`` and ``depth``
      blocks; embed dim = width.
    depth: blocks per tower.
    head_dim: width of one attention head.
    patch_size: image patch side in pixels.
    image_sizes: pre-training resolutions (image tokens by resizing); the
      largest is the full one (also the fine-tuning and final evaluation
      resolution).
    mask_ratio: random patch masking in pre-training at the full resolution,
      one extra setting per width (0 = none). 0.75 of 8x8 patches keeps 16,
      as many as resizing 64 px to 32 px: resizing vs masking at equal tokens.
    text_lengths: pre-training caption lengths; the largest is the full one
      (truncation), shorter ones use syntax masking as CLIPA does.
    grid: ``'axes'``: per width the full-token run, each reduced image size at
      full text and each reduced text length at full image size (CLIPA's
      separate sweeps); ``'full'``: every image size x text length.
    combined: with ``'axes'``, also the run with both the smallest image and
      the shortest text (CLIPA's own low-token recipe) at every width.
    headline_widths: widths that get the headline pair: the CLIPA schedule
      (smallest image + shortest text pre-training, then the fine-tune) and
      full-resolution training for the same FLOPs.
    pretrain_steps / finetune_steps: steps of the two stages (same for every
      run: a fixed sample budget).
    batch_size: global batch of both stages.
    pretrain_lr / finetune_lr: base learning rates (per 256 samples); the
      full-resolution baseline uses the pre-training ones.
    pretrain_warmup / finetune_warmup: warmup steps.
    finetune_mask_ratio: random patch masking in the fine-tune (CLIPA-v1's
      "unmasked tuning" is 0; CLIPA-v2 uses 0.3).
    seeds: seeds of every run (initialisation, masking and data order); two
      or more give every point a spread and the tables their noise.
    checkpoint_period: steps between checkpoints (resume granularity).
    eval_batch_size: images per zero-shot evaluation batch.
    scene: the demo data set: ``'glyphs'`` (``demo_glyphs``, textures of bold
      capitals whose pairs differ in one stroke: fewer tokens cost accuracy
      there) or
      ``'shapes'`` (``demo_shapes``, the demo's, learned as well at 16 px).
    data: ``DemoData`` arguments (``data_dir`` and generator parameters).
  """
  widths: Tuple[int, ...] = (32, 64, 96)
  depth: int = 2
  head_dim: int = 32
  patch_size: int = 8
  image_sizes: Tuple[int, ...] = (32, 24, 16)
  mask_ratio: float = 0.75
  text_lengths: Tuple[int, ...] = (16, 8)
  grid: str = "axes"
  combined: bool = False
  headline_widths: Tuple[int, ...] = (96,)
  # Batch 128, not 64: on the demo data a Mu/8-sized model at batch 64 and peak
  # 1e-3 stayed at the colour-only solution for 600 steps (shape 21%), while at
  # batch 128 shape reached 37% / 59% / 76% / 81% at steps 200 / 300 / 400 /
  # 500 (README.md: the pilot). 320 steps is what 34 runs can afford in about an hour.
  pretrain_steps: int = 1000
  # 200 fine-tune steps: on demo_glyphs v2 a width-64 model pre-trained at 16 px
  # reached 55.7% at 32 px after 100 steps and 67.3% after 200 (48.6% / 52.8%
  # at 100 steps with base learning rates 3e-4 / 3e-3; clip_probe.py,
  # experiments/demo_diagnosis/README.md, section 6). In compute the fine-tune
  # is then about half the smallest-token pre-training, as CLIPA-v2 H/14's
  # 224 + 336 px fine-tunes are about 44% of its 84 px pre-training.
  finetune_steps: int = 200
  batch_size: int = 128
  pretrain_lr: float = 2e-3   # peak 1e-3 at batch 128, as the demo's pre-training
  pretrain_warmup: int = 50
  finetune_lr: float = 1e-3   # peak 5e-4 at batch 128, as the demo's fine-tune
  finetune_warmup: int = 10
  finetune_mask_ratio: float = 0.0
  seeds: Tuple[int, ...] = (0, 1)
  checkpoint_period: int = 1000
  eval_batch_size: int = 200
  scene: str = "glyphs"
  data: Tuple[Tuple[str, Any], ...] = ()

  def demo_data(self):
    """The ``DemoData`` the study trains and evaluates on."""
    from clipa_t5x.demo import data as demo_data  # pylint: disable=import-outside-toplevel
    data = dict(self.data)
    return demo_data.DemoData.from_kwargs(data.pop("data_dir", None), scene=self.scene, **data)

  @property
  def full_image_size(self) -> int:
    return max(self.image_sizes)

  @property
  def full_text_length(self) -> int:
    return max(self.text_lengths)

  def validate(self) -> None:
    """Raises a one-line ValueError naming the bad setting and the fix."""
    def positive(name, values):
      if not values or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"--{name} must be a non-empty list of positive ints, got {values!r}.")
    positive("widths", self.widths)
    positive("image_sizes", self.image_sizes)
    positive("text_lengths", self.text_lengths)
    if not self.seeds:
      raise ValueError("--seeds must name at least one seed, e.g. --seeds 0,1.")
    if len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"--seeds must not repeat a seed, got {list(self.seeds)}.")
    for width in self.widths:
      if width % self.head_dim:
        raise ValueError(f"width {width} is not a multiple of head_dim {self.head_dim}; use e.g. "
                         f"{max(self.head_dim, width - width % self.head_dim)}.")
    for size in self.image_sizes:
      if size % self.patch_size:
        raise ValueError(f"image size {size} is not divisible by the patch size "
                         f"{self.patch_size}; use {size - size % self.patch_size or self.patch_size}.")
    if min(self.text_lengths) < 2:
      raise ValueError("text lengths must be >= 2 ([CLS] plus at least one word piece).")
    if self.grid not in GRIDS:
      raise ValueError(f"--grid must be one of {GRIDS}, got {self.grid!r}.")
    for stage, steps, warmup in (("pretrain", self.pretrain_steps, self.pretrain_warmup),
                                 ("finetune", self.finetune_steps, self.finetune_warmup)):
      if not 0 <= warmup < steps:
        raise ValueError(f"--{stage}_steps={steps} must exceed --{stage}_warmup={warmup}; "
                         "train longer or shorten the warmup.")
    for name in ("mask_ratio", "finetune_mask_ratio"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}.")
    patches = (self.full_image_size // self.patch_size) ** 2
    if self.mask_ratio and int(patches * (1.0 - self.mask_ratio) + 1e-6) < 1:
      raise ValueError(f"--mask_ratio {self.mask_ratio} keeps no patch of {patches}; lower it.")
    unknown = sorted(set(self.headline_widths) - set(self.widths))
    if unknown:
      raise ValueError(f"--headline_widths {unknown} are not among --widths {list(self.widths)}.")
    if self.headline_widths and len(set(self.image_sizes)) < 2:
      raise ValueError("the headline needs a reduced image size: give two or more "
                       "--image_sizes, or --headline_widths '' for none.")


# The default study: estimated ~60 min on 2 idle CPU cores (README.md: the estimate).
DEFAULT = SweepSettings()
# The CI preset: the whole study's structure (3 sizes, resizing, masking, short
# text, 2 seeds, the headline pair, the tables and both plots) at tiny widths
# and one block, on a small data set. Runs this small cost mostly start-up,
# compilation and evaluation, so 60 steps cost little more than 4.
QUICK = SweepSettings(
    widths=(32, 64, 96), depth=1, image_sizes=(32, 16), mask_ratio=0.75, text_lengths=(16, 8),
    headline_widths=(96,), pretrain_steps=60, finetune_steps=10, batch_size=32,
    pretrain_warmup=6, finetune_warmup=1, seeds=(0, 1), checkpoint_period=1000,
    eval_batch_size=100,
    data=(("num_train", 2000), ("num_eval", 200), ("image_size", 32), ("num_train_shards", 2)))


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of the study: a width, a pre-training token setting and a seed.

  ``train_steps`` is set for the ``'fullres'`` baseline only (its single
  stage's steps, bought with the CLIPA schedule's FLOPs).
  """
  width: int
  image_size: int
  text_length: int
  seed: int
  axis: str  # one of AXES
  mask_ratio: float = 0.0
  train_steps: Optional[int] = None

  @property
  def point_id(self) -> str:
    """The run id without its seed: runs of one point differ only in the seed."""
    mask = f"m{round(100 * self.mask_ratio)}" if self.mask_ratio else ""
    if self.axis == "fullres":
      return f"w{self.width}_fullres_px{self.image_size}_t{self.text_length}_n{self.train_steps}"
    return f"w{self.width}_px{self.image_size}{mask}_t{self.text_length}"

  @property
  def run_id(self) -> str:
    return f"{self.point_id}_s{self.seed}"


def _axis(image_size: int, text_length: int, settings: SweepSettings) -> str:
  image_reduced = image_size < settings.full_image_size
  text_reduced = text_length < settings.full_text_length
  return {(False, False): "full", (True, False): "image", (False, True): "text",
          (True, True): "both"}[(image_reduced, text_reduced)]


def token_settings(settings: SweepSettings) -> List[Tuple[int, int]]:
  """(image size, text length) pairs pre-trained for every width, full first."""
  full_px, full_t = settings.full_image_size, settings.full_text_length
  sizes = sorted(set(settings.image_sizes), reverse=True)
  lengths = sorted(set(settings.text_lengths), reverse=True)
  if settings.grid == "full":
    return [(px, t) for px in sizes for t in lengths]
  pairs = [(full_px, full_t)] + [(px, full_t) for px in sizes[1:]]
  pairs += [(full_px, t) for t in lengths[1:]]
  if settings.combined and len(sizes) > 1 and len(lengths) > 1:
    pairs.append((sizes[-1], lengths[-1]))
  return pairs


def schedule_spec(width: int, seed: int, settings: SweepSettings) -> RunSpec:
  """The headline's CLIPA schedule: fewest image and text tokens, then the fine-tune."""
  px, t = min(settings.image_sizes), min(settings.text_lengths)
  return RunSpec(width, px, t, seed, _axis(px, t, settings))


def matched_fullres_steps(width: int, settings: SweepSettings) -> int:
  """Steps of full-resolution training that cost the CLIPA schedule's FLOPs.

  Same batch, so the same FLOPs means as many samples as the schedule's
  training FLOPs buy at the full-resolution per-sample cost (rounded to the
  nearest step, at least warmup + 1).
  """
  from clipa_t5x import flops  # pylint: disable=import-outside-toplevel
  budget = compute_accounting(schedule_spec(width, 0, settings), settings)["total_flops"]
  per_sample = flops.per_example_flops(model_config(width, settings), settings.full_image_size,
                                       settings.full_text_length)["train"]
  steps = round(budget / (per_sample * settings.batch_size))
  return max(settings.pretrain_warmup + 1, steps)


def build_grid(settings: SweepSettings) -> List[RunSpec]:
  """Every run of the study, cheapest width first, in a fixed order.

  Args:
    settings: the study.

  Returns:
    Per width: every token setting (``token_settings``), the masked setting
    (``mask_ratio`` > 0) and, for ``headline_widths``, the CLIPA schedule and
    its compute-matched full-resolution baseline; each with every seed, the
    seeds of one point next to each other.
  """
  settings.validate()
  pairs = token_settings(settings)
  full_px, full_t = settings.full_image_size, settings.full_text_length
  runs: List[RunSpec] = []
  for width in sorted(set(settings.widths)):
    points = [RunSpec(width, px, t, 0, _axis(px, t, settings)) for px, t in pairs]
    if settings.mask_ratio:
      points.append(RunSpec(width, full_px, full_t, 0, "mask", mask_ratio=settings.mask_ratio))
    if width in settings.headline_widths:
      schedule = schedule_spec(width, 0, settings)
      if all(p.point_id != schedule.point_id for p in points):
        points.append(schedule)
      points.append(RunSpec(width, full_px, full_t, 0, "fullres",
                            train_steps=matched_fullres_steps(width, settings)))
    for point in points:
      for seed in settings.seeds:
        runs.append(dataclasses.replace(point, seed=seed))
  return runs


def model_config(width: int, settings: SweepSettings):
  """The ``ClipaConfig`` of one width: both towers equal, ``Ti/8``'s layout."""
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  tower = {"width": width, "depth": settings.depth, "heads": width // settings.head_dim,
           "mlp_dim": 4 * width}
  return configs.get_config("Ti/8", image={**tower, "patch_size": settings.patch_size},
                            text=tower, embed_dim=width)


def make_stages(spec: RunSpec, settings: SweepSettings) -> list:
  """The run's ``runner.Stage``s: reduced-token pre-training, then the full fine-tune.

  The ``'fullres'`` baseline is one stage, ``'train'``, at the full resolution
  and text length for ``spec.train_steps`` steps with the pre-training's
  learning rate and warmup.
  """
  from clipa_t5x import optimizers  # pylint: disable=import-outside-toplevel
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  task = settings.demo_data().name  # demo_glyphs, demo_glyphs_syntax
  pretrain_optimizer = optimizers.OptimizerConfig(base_learning_rate=settings.pretrain_lr,
                                                  warmup_steps=settings.pretrain_warmup,
                                                  weight_decay=0.2)
  full_lengths = {"image": settings.full_image_size, "text": settings.full_text_length}
  if spec.axis == "fullres":
    return [runner.Stage(name="train", mixture_or_task_name=task,
                         task_feature_lengths=full_lengths, batch_size=settings.batch_size,
                         train_steps=spec.train_steps, optimizer=pretrain_optimizer)]
  text_reduced = spec.text_length < settings.full_text_length
  pretrain = runner.Stage(
      name="pretrain",
      mixture_or_task_name=f"{task}_syntax" if text_reduced else task,
      task_feature_lengths={"image": spec.image_size, "text": spec.text_length},
      batch_size=settings.batch_size, train_steps=settings.pretrain_steps,
      mask_ratio=spec.mask_ratio, optimizer=pretrain_optimizer,
      # Pre-training is evaluated at its own resolution and length (unmasked),
      # prompts reduced as the captions were (as CLIPA-v2 evaluates it).
      eval_text_reduction="syntax" if text_reduced else "truncate")
  finetune = runner.Stage(
      name="finetune", mixture_or_task_name=task,
      task_feature_lengths=full_lengths,
      batch_size=settings.batch_size, train_steps=settings.finetune_steps,
      mask_ratio=settings.finetune_mask_ratio,
      optimizer=optimizers.OptimizerConfig(base_learning_rate=settings.finetune_lr,
                                           warmup_steps=settings.finetune_warmup,
                                           weight_decay=0.2))
  return [pretrain, finetune]


def compute_accounting(spec: RunSpec, settings: SweepSettings) -> Dict[str, Any]:
  """Tokens, samples and analytic training FLOPs (``clipa_t5x.flops``) of one run.

  Returns:
    ``image_tokens`` / ``text_tokens`` of pre-training (after masking),
    per-sample training FLOPs and samples of both stages, and
    ``pretrain_flops``, ``finetune_flops``, ``total_flops`` (per-sample FLOPs
    x samples). The ``'fullres'`` baseline's single stage counts as its
    pre-training, with no fine-tune.
  """
  from clipa_t5x import flops  # pylint: disable=import-outside-toplevel
  config = model_config(spec.width, settings)
  pre = flops.per_example_flops(config, spec.image_size, spec.text_length,
                                spec.mask_ratio)["train"]
  fine = flops.per_example_flops(config, settings.full_image_size, settings.full_text_length,
                                 settings.finetune_mask_ratio)["train"]
  if spec.axis == "fullres":
    pre_samples, fine_samples, fine = spec.train_steps * settings.batch_size, 0, 0.0
  else:
    pre_samples = settings.pretrain_steps * settings.batch_size
    fine_samples = settings.finetune_steps * settings.batch_size
  return {
      "image_tokens": flops.image_tokens(spec.image_size, settings.patch_size, spec.mask_ratio),
      "text_tokens": spec.text_length,
      "pretrain_train_flops_per_sample": pre,
      "finetune_train_flops_per_sample": fine,
      "pretrain_samples": pre_samples,
      "finetune_samples": fine_samples,
      "pretrain_flops": pre * pre_samples,
      "finetune_flops": fine * fine_samples,
      "total_flops": pre * pre_samples + fine * fine_samples,
  }


def _fingerprint(spec: RunSpec, settings: SweepSettings) -> Dict[str, Any]:
  """What a run directory was trained with (compared on a rerun)."""
  return {"spec": dataclasses.asdict(spec),
          "model_config": _plain(model_config(spec.width, settings)),
          "stages": [_plain(s) for s in make_stages(spec, settings)],
          "data": dict(settings.data),
          "templates": list(EVAL_TEMPLATES)}


# Keys older model configs carried that are training settings now (masking
# flows from the Stage): a run recorded with them was trained the same way.
_MOVED_MODEL_KEYS = ("mask_ratio", "mask_type")
# Model-config fields added later, at the values runs recorded before them were trained with.
_ADDED_MODEL_KEYS = {"loss": "softmax", "init_log_temperature": None, "init_logit_bias": -10.0}


def _upgrade_fingerprint(previous: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
  """A recorded fingerprint in today's form (drops keys that moved out of the model config)."""
  if not previous or not isinstance(previous.get("model_config"), dict):
    return previous
  config = {**_ADDED_MODEL_KEYS, **{k: v for k, v in previous["model_config"].items()
                                    if k not in _MOVED_MODEL_KEYS}}
  return {**previous, "model_config": config}


def _cpu_seconds() -> float:
  """CPU time of this process so far (all threads): with wall time, how busy the cores were."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _read_json(path: str) -> Optional[Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _write_json(path: str, value: Any) -> None:
  from clipa_t5x import paths  # pylint: disable=import-outside-toplevel
  paths.write_json_atomic(path, value, indent=1, sort_keys=True)


class SweepInterrupted(Exception):
  """A run stopped early on SIGTERM / Ctrl-C (its checkpoint is saved)."""


def run_one(spec: RunSpec, settings: SweepSettings, out_dir: str) -> Dict[str, Any]:
  """Trains (or resumes, or loads) one run; returns its result row.

  Args:
    spec: the run.
    settings: the sweep.
    out_dir: the sweep's output folder; the run trains in ``out_dir/runs/<id>``.

  Returns:
    The row: the spec, ``compute_accounting``, zero-shot top-1/top-5 after
    pre-training and after the fine-tune, per-factor top-1 of both
    (``factor_<name>``, ``pretrain_factor_<name>``: the letter pair of
    demo_glyphs, the colour and shape of demo_shapes), parameter count and
    seconds.
  """
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel

  # Absolute: Orbax refuses relative checkpoint paths (the default --out is relative).
  model_dir = os.path.abspath(os.path.join(out_dir, "runs", spec.run_id))
  fingerprint = _fingerprint(spec, settings)
  previous = _upgrade_fingerprint(_read_json(os.path.join(model_dir, RUN_FILE)))
  if previous is not None and previous != fingerprint:
    if runner.has_training_state(model_dir):
      raise ValueError(f"{model_dir} was trained with other settings ({RUN_FILE} differs); "
                       "use another --out or delete that run directory.")
  cached = _read_json(os.path.join(model_dir, RESULT_FILE))
  if previous == fingerprint and cached is not None:
    print(f"[{spec.run_id}] finished before; using {RESULT_FILE}", flush=True)
    return cached

  os.makedirs(model_dir, exist_ok=True)
  _write_json(os.path.join(model_dir, RUN_FILE), fingerprint)
  config = model_config(spec.width, settings)
  data = settings.demo_data()
  evaluator = runner.ZeroShotEvalConfig(
      name=data.name, task=f"{data.name}_eval", split="eval", class_names=data.class_names,
      templates=list(EVAL_TEMPLATES), batch_size=settings.eval_batch_size,
      factors=data.class_factors)
  stages = make_stages(spec, settings)
  what = (f"full resolution only, {spec.train_steps} steps" if spec.axis == "fullres" else
          f"pre-train {spec.image_size} px" + (f" {100 * spec.mask_ratio:g}% masked"
                                               if spec.mask_ratio else "")
          + f" / {spec.text_length} tokens")
  print(f"\n=== {spec.run_id}: width {spec.width}, {what}, seed {spec.seed} ===", flush=True)
  start, cpu_start = time.time(), _cpu_seconds()
  rows = runner.run(
      model_dir=model_dir, stages=stages, model_config=config,
      checkpoint_config=checkpoints.SaveCheckpointConfig(period=settings.checkpoint_period,
                                                         keep=1),
      evaluators=[evaluator], log_every=100, random_seed=spec.seed)
  if len(rows) != len(stages):  # SIGTERM / Ctrl-C: the runner saved a checkpoint and returned early
    raise SweepInterrupted(f"[{spec.run_id}] stopped before both stages finished; rerun the "
                           "same command to resume.")
  pre_row, fine_row = rows[0], rows[-1]
  two_stage = len(rows) == 2
  name = data.name
  row = {**dataclasses.asdict(spec), "run_id": spec.run_id, "point_id": spec.point_id,
         **compute_accounting(spec, settings),
         "num_params": _count_params(os.path.join(model_dir, stages[-1].name)),
         # The full-resolution baseline has no separate pre-training result.
         "pretrain_top1": pre_row["zeroshot_top1"] if two_stage else None,
         "pretrain_top5": pre_row["eval"].get(f"{name}/top5") if two_stage else None,
         "top1": fine_row["zeroshot_top1"], "top5": fine_row["eval"].get(f"{name}/top5"),
         **{f"factor_{k}": v for k, v in (fine_row.get("zeroshot_factor_top1") or {}).items()},
         **({f"pretrain_factor_{k}": v
             for k, v in (pre_row.get("zeroshot_factor_top1") or {}).items()} if two_stage else {}),
         "eval_examples": int(fine_row["eval"][f"{name}/num_examples"]),
         "pretrain_seconds": pre_row["seconds"],
         "finetune_seconds": fine_row["seconds"] if two_stage else 0.0,
         "wall_seconds": time.time() - start,
         "cpu_seconds": _cpu_seconds() - cpu_start}
  _write_json(os.path.join(model_dir, RESULT_FILE), row)
  pre_only = (f" (pre-train only {100 * row['pretrain_top1']:.1f}%)"
              if row["pretrain_top1"] is not None else "")
  factors = "".join(f", {k[len('factor_'):]} {100 * v:.1f}%" for k, v in row.items()
                    if k.startswith("factor_"))
  print(f"[{spec.run_id}] zero-shot top-1 {100 * row['top1']:.1f}%{pre_only}{factors}, "
        f"{row['total_flops'] / 1e12:.2f} TFLOPs", flush=True)
  return row


def _count_params(stage_dir: str) -> int:
  """Parameters in the latest checkpoint of ``stage_dir``."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  params, _, _ = checkpoints.load_params(stage_dir)
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def select_runs(runs: Sequence[RunSpec], only: Optional[Sequence[str]]) -> List[RunSpec]:
  """The runs named by ``only`` (run or point ids; all when empty), in grid order.

  Raises:
    ValueError: an id that is no run or point of the grid.
  """
  if not only:
    return list(runs)
  known = {r.run_id for r in runs} | {r.point_id for r in runs}
  unknown = sorted(set(only) - known)
  if unknown:
    raise ValueError(f"--only {unknown} are not runs or points of this study; see --list.")
  return [r for r in runs if r.run_id in set(only) or r.point_id in set(only)]


def run_sweep(settings: SweepSettings, out_dir: str, only: Optional[Sequence[str]] = None,
              command: str = "") -> List[Dict[str, Any]]:
  """Runs (or resumes) every run, then writes results.json, results.md and the two PNGs.

  Args:
    settings: the sweep.
    out_dir: output folder (created).
    only: run or point ids to run (default all); the report covers the finished runs.
    command: the command line, printed in results.md and on the figures.

  Returns:
    The result rows of the runs done or found finished.
  """
  from clipa_t5x.tasks import demo  # pylint: disable=import-outside-toplevel
  runs = select_runs(build_grid(settings), only)
  os.makedirs(out_dir, exist_ok=True)
  demo.register(settings.demo_data())  # the Tasks over this study's data location
  start = time.time()
  rows = []
  for i, spec in enumerate(runs):
    print(f"\n[sweep] run {i + 1}/{len(runs)}: {spec.run_id} "
          f"({(time.time() - start) / 60:.1f} min so far)", flush=True)
    rows.append(run_one(spec, settings, out_dir))
  report = _sibling("plot").write_report(rows, out_dir, settings=_plain(settings),
                                         command=command)
  print(f"\n[sweep] {len(rows)} runs in {(time.time() - start) / 60:.1f} min; "
        f"{report['markdown']}, {report['tokens_png']}, {report['flops_png']}", flush=True)
  return rows


def _plain(x: Any) -> Dict[str, Any]:
  """A dataclass as plain JSON values (tuples as lists, other objects as strings)."""
  return json.loads(json.dumps(dataclasses.asdict(x), default=str))


def _ints(text: str) -> Tuple[int, ...]:
  try:
    return tuple(int(x) for x in text.split(",") if x.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[SweepSettings, argparse.Namespace]:
  """Command-line flags -> (settings, namespace); flags override the preset."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=None, help="output folder (default: runs/inverse_scaling, "
                 "or runs/inverse_scaling_quick with --quick)")
  p.add_argument("--quick", action="store_true",
                 help="CI preset: every axis, two seeds and the headline at 3 tiny widths, "
                 "a few steps each, on a 128-image data set")
  p.add_argument("--widths", type=_ints, help="tower widths, e.g. 64,128,192")
  p.add_argument("--depth", type=int, help="blocks per tower")
  p.add_argument("--image_sizes", type=_ints, help="pre-training resolutions; the largest "
                 "is the full one, e.g. 64,48,32")
  p.add_argument("--mask_ratio", type=float, help="random patch masking of the one masked "
                 "pre-training setting, at full resolution (0: none)")
  p.add_argument("--text_lengths", type=_ints, help="pre-training text lengths; the largest is "
                 "the full one, e.g. 32,8")
  p.add_argument("--grid", choices=GRIDS, help="'axes' (default): image and text reduced "
                 "separately; 'full': every combination")
  p.add_argument("--combined", action=argparse.BooleanOptionalAction,
                 help="with --grid=axes, also smallest image + shortest text at every width")
  p.add_argument("--headline_widths", type=_ints, help="widths with the CLIPA schedule vs "
                 "compute-matched full-resolution pair (default: the largest; '' for none)")
  p.add_argument("--pretrain_steps", type=int)
  p.add_argument("--finetune_steps", type=int)
  p.add_argument("--batch_size", type=int)
  p.add_argument("--pretrain_warmup", type=int, help="warmup steps of pre-training")
  p.add_argument("--finetune_warmup", type=int, help="warmup steps of the fine-tune")
  p.add_argument("--pretrain_lr", type=float, help="base learning rate per 256 samples")
  p.add_argument("--finetune_lr", type=float, help="base learning rate per 256 samples")
  p.add_argument("--finetune_mask_ratio", type=float)
  p.add_argument("--seeds", type=_ints, help="seeds of every point, e.g. 0,1")
  p.add_argument("--scene", choices=("glyphs", "shapes"), help="the data: glyphs (default, "
                 "demo_glyphs: textures of capitals) or shapes (demo_shapes, the demo's)")
  p.add_argument("--data_dir", default=None, help="demo data folder (default: "
                 "$CLIPA_DEMO_GLYPHS_DATA or ~/.cache/clipa_t5x/demo_glyphs, shapes: "
                 "$CLIPA_DEMO_DATA or ~/.cache/clipa_t5x/demo_shapes; --quick: OUT/data)")
  p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x],
                 help="comma-separated run or point ids to run (see --list)")
  p.add_argument("--list", action="store_true", help="print the runs and their compute, "
                 "train nothing")
  p.add_argument("--confirm", action="store_true",
                 help="the confirmatory test declared in README.md: fresh seeds 4-11 for the "
                 "smallest width and 4-7 for the largest, at full tokens and the second-largest "
                 "image size (24 runs, about 32 min); combine with --out to keep it apart")
  args = p.parse_args(argv)
  if args.confirm and (args.only or args.seeds):
    p.error("--confirm picks its own runs and seeds; drop --only / --seeds.")
  base = QUICK if args.quick else DEFAULT
  overrides = {k: getattr(args, k) for k in (
      "widths", "depth", "image_sizes", "mask_ratio", "text_lengths", "grid", "combined",
      "headline_widths", "pretrain_steps", "finetune_steps", "pretrain_warmup",
      "finetune_warmup", "batch_size", "pretrain_lr",
      "finetune_lr", "finetune_mask_ratio", "seeds", "scene") if getattr(args, k) is not None}
  if "widths" in overrides and "headline_widths" not in overrides:
    overrides["headline_widths"] = (max(overrides["widths"]),)
  args.out = args.out or os.path.join("runs", "inverse_scaling_quick" if args.quick
                                      else "inverse_scaling")
  data = dict(base.data)
  if args.data_dir:
    data["data_dir"] = args.data_dir
  elif args.quick:
    data["data_dir"] = os.path.join(args.out, "data")
  settings = dataclasses.replace(base, **overrides, data=tuple(sorted(data.items())))
  settings.validate()
  if args.confirm:
    settings, args.only = confirm_runs(settings)
  return settings, args


# The confirmatory test of README.md ("declared before it ran"): seeds no
# earlier study used, twice as many for the smallest width, whose seeds spread
# about four times as much as the largest's.
CONFIRM_SEEDS = {"smallest": tuple(range(4, 12)), "largest": tuple(range(4, 8))}


def confirm_runs(settings: SweepSettings) -> Tuple[SweepSettings, List[str]]:
  """The confirmatory test's settings and ``--only`` list.

  Full tokens and the second-largest image size (at full text) for the
  smallest and the largest width, with ``CONFIRM_SEEDS``.

  Raises:
    ValueError: fewer than two widths or image sizes.
  """
  sizes = sorted(set(settings.image_sizes), reverse=True)
  widths = sorted(set(settings.widths))
  if len(sizes) < 2 or len(widths) < 2:
    raise ValueError("--confirm compares two widths at two image sizes; give at least two of "
                     "each.")
  settings = dataclasses.replace(settings, seeds=CONFIRM_SEEDS["smallest"])
  only = []
  for width, seeds in ((widths[0], CONFIRM_SEEDS["smallest"]),
                       (widths[-1], CONFIRM_SEEDS["largest"])):
    for px in sizes[:2]:
      axis = _axis(px, settings.full_text_length, settings)
      only += [RunSpec(width, px, settings.full_text_length, seed, axis).run_id
               for seed in seeds]
  return settings, only


def describe(settings: SweepSettings, only: Optional[Sequence[str]] = None) -> str:
  """One line per run (those ``only`` names, default all): id, tokens and training compute."""
  lines = []
  total = 0.0
  runs = select_runs(build_grid(settings), only)
  for spec in runs:
    acc = compute_accounting(spec, settings)
    total += acc["total_flops"]
    lines.append(f"{spec.run_id:32s} {spec.axis:7s} image tokens {acc['image_tokens']:3d}  "
                 f"text tokens {acc['text_tokens']:3d}  {acc['total_flops'] / 1e12:8.3f} TFLOPs")
  points = len({r.point_id for r in runs})
  lines.append(f"{len(runs)} runs ({points} points, {len({r.seed for r in runs})} seeds), "
               f"{total / 1e12:.1f} TFLOPs of training in all")
  return "\n".join(lines)


def enable_compilation_cache(directory: str) -> None:
  """Keeps compiled XLA programs on disk, shared by the runs of the sweep.

  Runs of one width share their fine-tune step and evaluation encoders, and
  the seed repeats share everything, so each of those compiles once. Set by
  the command line only: it is process-wide JAX state.
  """
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: Optional[Sequence[str]] = None, compilation_cache: bool = False) -> int:
  """The command line; returns the exit status (2 with a one-line error).

  Args:
    argv: the flags (default ``sys.argv[1:]``).
    compilation_cache: keep compiled programs in ``OUT/jax_cache``.
  """
  try:
    settings, args = parse_args(argv)
    if args.list:
      print(describe(settings, args.only))
      return 0
    if compilation_cache:
      enable_compilation_cache(os.path.abspath(os.path.join(args.out, "jax_cache")))
    argv = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python experiments/inverse_scaling/run.py"]
                       + [shlex.quote(a) for a in argv])
    run_sweep(settings, args.out, only=args.only, command=command)
  except SweepInterrupted as e:
    # As clipa_t5x.train does on a preemption: saved, exit 0, rerun to resume.
    print(f"[sweep] {e}", flush=True)
    return 0
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main(compilation_cache=True))
