r"""CLIPA's inverse scaling law in miniature, on the demo data.

Each run pre-trains a CLIPA two-tower model of one width on fewer tokens
(images resized to fewer patches; captions syntax-reduced to fewer tokens),
then fine-tunes it briefly at the full resolution and text length, and
classifies the held-out demo split zero-shot. Every run of the sweep sees the
same number of pre-training samples (CLIPA's fixed sample budget), so fewer
tokens means less compute. The question: do wider models lose less accuracy
when pre-trained on fewer tokens?

Usage, from the repository root::

  .venv/bin/python experiments/inverse_scaling/run.py                # default sweep
  .venv/bin/python experiments/inverse_scaling/run.py --quick        # a few steps per run
  .venv/bin/python experiments/inverse_scaling/run.py --widths 64,128 --pretrain_steps 400

Every run is an ordinary clipa_t5x ``MODEL_DIR`` (``OUT/runs/<run id>/``,
trained with ``clipa_t5x.runner.run``); rerunning the command skips finished
runs and resumes an interrupted one from its last checkpoint. The results go
to ``OUT/results.json``, ``OUT/results.md`` (table + reading) and
``OUT/inverse_scaling.png`` (see plot.py).
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
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


@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """Everything that defines the sweep (and so every run's training).

  Attributes:
    widths: tower widths; both towers get ``width`` with ``width // head_dim``
      heads, an MLP of ``4 * width`` and ``depth`` blocks; embed dim = width.
    depth: blocks per tower.
    head_dim: width of one attention head.
    patch_size: image patch side in pixels.
    image_sizes: pre-training resolutions; the largest is the full one (also
      the fine-tuning and final evaluation resolution).
    text_lengths: pre-training caption lengths; the largest is the full one
      (truncation), shorter ones use syntax masking as CLIPA does.
    grid: ``'axes'``: per width the full-token run, each reduced image size at
      full text and each reduced text length at full image size (CLIPA's
      separate sweeps); ``'full'``: every image size x text length.
    combined: with ``'axes'``, also the run with both the smallest image and
      the shortest text (CLIPA's own low-token recipe).
    pretrain_steps / finetune_steps: steps of the two stages (same for every
      run: a fixed sample budget).
    batch_size: global batch of both stages.
    pretrain_lr / finetune_lr: base learning rates (per 256 samples).
    pretrain_warmup / finetune_warmup: warmup steps.
    finetune_mask_ratio: random patch masking in the fine-tune (CLIPA-v1's
      "unmasked tuning" is 0; CLIPA-v2 uses 0.3).
    seeds: seeds of every run.
    repeat_seeds: extra seeds for the noise estimate, run for the full-token
      and the fewest-image-token runs of each width in ``repeat_widths``.
    repeat_widths: widths whose runs are repeated with ``repeat_seeds``.
    checkpoint_period: steps between checkpoints (resume granularity).
    eval_batch_size: images per zero-shot evaluation batch.
    data: ``demo.configure`` arguments (``data_dir`` and generator parameters).
  """
  widths: Tuple[int, ...] = (64, 128, 192)
  depth: int = 4
  head_dim: int = 32
  patch_size: int = 8
  image_sizes: Tuple[int, ...] = (64, 32)
  text_lengths: Tuple[int, ...] = (32, 8)
  grid: str = "axes"
  combined: bool = False
  pretrain_steps: int = 350
  finetune_steps: int = 35
  batch_size: int = 64
  pretrain_lr: float = 4e-3   # peak 1e-3 at batch 64, as the demo's pre-training
  pretrain_warmup: int = 30
  finetune_lr: float = 8e-4   # peak 2e-4 at batch 64, as the demo's fine-tune
  finetune_warmup: int = 5
  finetune_mask_ratio: float = 0.0
  seeds: Tuple[int, ...] = (0,)
  repeat_seeds: Tuple[int, ...] = (1,)
  repeat_widths: Tuple[int, ...] = (64,)
  checkpoint_period: int = 200
  eval_batch_size: int = 200
  data: Tuple[Tuple[str, Any], ...] = ()

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
      raise ValueError("--seeds must name at least one seed, e.g. --seeds 0.")
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
    if not 0.0 <= self.finetune_mask_ratio < 1.0:
      raise ValueError(f"--finetune_mask_ratio must be in [0, 1), got {self.finetune_mask_ratio}.")
    unknown = sorted(set(self.repeat_widths) - set(self.widths)) if self.repeat_seeds else []
    if unknown:
      raise ValueError(f"--repeat_widths {unknown} are not among --widths {list(self.widths)}.")


# The defaults: ~40 min on 2 idle CPU cores (README.md has the timing evidence).
DEFAULT = SweepSettings()
# A few steps per run on a tiny data set: checks the whole pipeline in minutes.
QUICK = SweepSettings(
    widths=(32, 64), depth=1, image_sizes=(32, 16), text_lengths=(16, 8), pretrain_steps=4,
    finetune_steps=2, batch_size=16, pretrain_warmup=1, finetune_warmup=0,
    repeat_seeds=(1,), repeat_widths=(32,), checkpoint_period=1000, eval_batch_size=20,
    data=(("num_train", 128), ("num_eval", 60), ("image_size", 32), ("num_train_shards", 2)))


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of the sweep: a width, a pre-training token setting and a seed."""
  width: int
  image_size: int
  text_length: int
  seed: int
  axis: str  # 'full', 'image', 'text' or 'both' (which tokens are reduced)

  @property
  def run_id(self) -> str:
    return f"w{self.width}_px{self.image_size}_t{self.text_length}_s{self.seed}"


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


def build_grid(settings: SweepSettings) -> List[RunSpec]:
  """Every run of the sweep, cheapest width first, in a fixed order.

  Args:
    settings: the sweep.

  Returns:
    The runs: every width x token setting x seed, then the noise repeats
    (``repeat_seeds`` for the full-token and fewest-image-token runs of each
    ``repeat_widths`` width) right after their width's runs.
  """
  settings.validate()
  pairs = token_settings(settings)
  smallest_px = min(settings.image_sizes)
  repeat_pairs = [(settings.full_image_size, settings.full_text_length),
                  (smallest_px, settings.full_text_length)]
  runs: List[RunSpec] = []
  for width in sorted(set(settings.widths)):
    for px, t in pairs:
      for seed in settings.seeds:
        runs.append(RunSpec(width, px, t, seed, _axis(px, t, settings)))
    if width in settings.repeat_widths:
      for px, t in dict.fromkeys(repeat_pairs):
        for seed in settings.repeat_seeds:
          if seed not in settings.seeds:
            runs.append(RunSpec(width, px, t, seed, _axis(px, t, settings)))
  return runs


def model_config(width: int, settings: SweepSettings):
  """The ``ClipaConfig`` of one width: both towers equal, ``Ti/8``'s layout."""
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  tower = {"width": width, "depth": settings.depth, "heads": width // settings.head_dim,
           "mlp_dim": 4 * width}
  return configs.get_config("Ti/8", image={**tower, "patch_size": settings.patch_size},
                            text=tower, embed_dim=width)


def make_stages(spec: RunSpec, settings: SweepSettings) -> list:
  """The run's two ``runner.Stage``s: reduced-token pre-training, full fine-tune."""
  from clipa_t5x import optimizers  # pylint: disable=import-outside-toplevel
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  text_reduced = spec.text_length < settings.full_text_length
  pretrain = runner.Stage(
      name="pretrain",
      mixture_or_task_name="demo_shapes_syntax" if text_reduced else "demo_shapes",
      task_feature_lengths={"image": spec.image_size, "text": spec.text_length},
      batch_size=settings.batch_size, train_steps=settings.pretrain_steps,
      optimizer=optimizers.OptimizerConfig(base_learning_rate=settings.pretrain_lr,
                                           warmup_steps=settings.pretrain_warmup,
                                           weight_decay=0.2),
      # Pre-training is evaluated at its own resolution and length, prompts
      # reduced as the captions were (as CLIPA-v2 evaluates its pre-training).
      eval_text_reduction="syntax" if text_reduced else "truncate")
  finetune = runner.Stage(
      name="finetune", mixture_or_task_name="demo_shapes",
      task_feature_lengths={"image": settings.full_image_size,
                            "text": settings.full_text_length},
      batch_size=settings.batch_size, train_steps=settings.finetune_steps,
      mask_ratio=settings.finetune_mask_ratio,
      optimizer=optimizers.OptimizerConfig(base_learning_rate=settings.finetune_lr,
                                           warmup_steps=settings.finetune_warmup,
                                           weight_decay=0.2))
  return [pretrain, finetune]


def compute_accounting(spec: RunSpec, settings: SweepSettings) -> Dict[str, Any]:
  """Tokens, samples and analytic training FLOPs (``clipa_t5x.flops``) of one run.

  Returns:
    ``image_tokens`` / ``text_tokens`` of pre-training, per-sample training
    FLOPs and samples of both stages, and ``pretrain_flops``,
    ``finetune_flops``, ``total_flops`` (per-sample FLOPs x samples).
  """
  from clipa_t5x import flops  # pylint: disable=import-outside-toplevel
  config = model_config(spec.width, settings)
  pre = flops.per_example_flops(config, spec.image_size, spec.text_length)["train"]
  fine = flops.per_example_flops(config, settings.full_image_size, settings.full_text_length,
                                 settings.finetune_mask_ratio)["train"]
  pre_samples = settings.pretrain_steps * settings.batch_size
  fine_samples = settings.finetune_steps * settings.batch_size
  return {
      "image_tokens": flops.image_tokens(spec.image_size, settings.patch_size),
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
  from clipa_t5x import cli  # pylint: disable=import-outside-toplevel
  cli.write_json_atomic(path, value, indent=1, sort_keys=True)


class SweepInterrupted(Exception):
  """A run stopped early on SIGTERM / Ctrl-C (its checkpoint is saved)."""


class EvalSet:
  """The held-out images at the full resolution, read once for the whole sweep."""

  def __init__(self, image_size: int, text_length: int):
    self.image_size = image_size
    self.text_length = text_length
    self._data = None

  def get(self):
    if self._data is None:
      self._data = _sibling("breakdown").load_eval_set("demo_shapes_eval", self.image_size,
                                                       self.text_length)
    return self._data


def run_one(spec: RunSpec, settings: SweepSettings, out_dir: str,
            eval_set: EvalSet) -> Dict[str, Any]:
  """Trains (or resumes, or loads) one run; returns its result row.

  Args:
    spec: the run.
    settings: the sweep.
    out_dir: the sweep's output folder; the run trains in ``out_dir/runs/<id>``.
    eval_set: the full-resolution held-out split (for the colour/shape split).

  Returns:
    The row: the spec, ``compute_accounting``, zero-shot top-1/top-5 after
    pre-training and after the fine-tune, colour/shape accuracy of the
    fine-tuned model, parameter count and seconds.
  """
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  from clipa_t5x.tasks import demo  # pylint: disable=import-outside-toplevel

  model_dir = os.path.join(out_dir, "runs", spec.run_id)
  fingerprint = _fingerprint(spec, settings)
  previous = _read_json(os.path.join(model_dir, RUN_FILE))
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
  evaluator = runner.ZeroShotEvalConfig(
      name="demo_shapes", task="demo_shapes_eval", split="eval", class_names=demo.class_names,
      templates=list(EVAL_TEMPLATES), batch_size=settings.eval_batch_size)
  print(f"\n=== {spec.run_id}: width {spec.width}, pre-train {spec.image_size} px / "
        f"{spec.text_length} tokens, seed {spec.seed} ===", flush=True)
  start, cpu_start = time.time(), _cpu_seconds()
  rows = runner.run(
      model_dir=model_dir, stages=make_stages(spec, settings), model_config=config,
      checkpoint_config=checkpoints.SaveCheckpointConfig(period=settings.checkpoint_period,
                                                         keep=1),
      evaluators=[evaluator], log_every=50, random_seed=spec.seed)
  if len(rows) != 2:  # SIGTERM / Ctrl-C: the runner saved a checkpoint and returned early
    raise SweepInterrupted(f"[{spec.run_id}] stopped before both stages finished; rerun the "
                           "same command to resume.")
  train_seconds = time.time() - start

  start = time.time()
  images, labels = eval_set.get()
  breakdown = _sibling("breakdown")
  predictions, num_params = breakdown.predict(
      config, os.path.join(model_dir, "finetune"), images, demo.class_names(),
      EVAL_TEMPLATES, settings.full_text_length)
  split = breakdown.accuracy_breakdown(predictions, labels)
  pre_row, fine_row = rows
  top1 = fine_row["zeroshot_top1"]
  if abs(split["top1"] - top1) > 2.0 / len(labels):
    # Same checkpoint, data and prompts: only float noise may flip a near-tie. The
    # runner's top-1 stays the result; the colour/shape split is then suspect.
    print(f"[{spec.run_id}] WARNING: the colour/shape re-evaluation gives top-1 "
          f"{split['top1']:.4f} but the runner's evaluator {top1:.4f}.", flush=True)
  row = {**dataclasses.asdict(spec), "run_id": spec.run_id,
         **compute_accounting(spec, settings),
         "num_params": num_params,
         "pretrain_top1": pre_row["zeroshot_top1"],
         "pretrain_top5": pre_row["eval"].get("demo_shapes/top5"),
         "top1": top1, "top5": fine_row["eval"].get("demo_shapes/top5"),
         "colour_acc": split["colour"], "shape_acc": split["shape"],
         "breakdown_top1": split["top1"],
         "eval_examples": int(len(labels)),
         "pretrain_seconds": pre_row["seconds"], "finetune_seconds": fine_row["seconds"],
         "wall_seconds": train_seconds + time.time() - start,
         "cpu_seconds": _cpu_seconds() - cpu_start}
  _write_json(os.path.join(model_dir, RESULT_FILE), row)
  print(f"[{spec.run_id}] zero-shot top-1 {100 * top1:.1f}% (pre-train only "
        f"{100 * row['pretrain_top1']:.1f}%), colour {100 * split['colour']:.1f}%, shape "
        f"{100 * split['shape']:.1f}%, {row['total_flops'] / 1e12:.2f} TFLOPs", flush=True)
  return row


def run_sweep(settings: SweepSettings, out_dir: str,
              only: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
  """Runs (or resumes) every run, then writes results.json, results.md and the PNG.

  Args:
    settings: the sweep.
    out_dir: output folder (created).
    only: run ids to run (default all); the report covers the finished runs.

  Returns:
    The result rows of the runs done or found finished.
  """
  from clipa_t5x.tasks import demo  # pylint: disable=import-outside-toplevel
  runs = build_grid(settings)
  if only:
    known = {r.run_id for r in runs}
    unknown = sorted(set(only) - known)
    if unknown:
      raise ValueError(f"--only {unknown} are not runs of this sweep; known: {sorted(known)}.")
    runs = [r for r in runs if r.run_id in set(only)]
  os.makedirs(out_dir, exist_ok=True)
  data = dict(settings.data)
  demo.configure(data.pop("data_dir", None), **data)
  eval_set = EvalSet(settings.full_image_size, settings.full_text_length)
  start = time.time()
  rows = []
  for i, spec in enumerate(runs):
    print(f"\n[sweep] run {i + 1}/{len(runs)}: {spec.run_id} "
          f"({(time.time() - start) / 60:.1f} min so far)", flush=True)
    rows.append(run_one(spec, settings, out_dir, eval_set))
  report = _sibling("plot").write_report(rows, out_dir, settings=_plain(settings))
  print(f"\n[sweep] {len(rows)} runs in {(time.time() - start) / 60:.1f} min; "
        f"{report['markdown']}, {report['png']}", flush=True)
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
                 help="tiny preset: 2 small widths, a few steps, a 128-image data set")
  p.add_argument("--widths", type=_ints, help="tower widths, e.g. 64,128,192")
  p.add_argument("--depth", type=int, help="blocks per tower")
  p.add_argument("--image_sizes", type=_ints, help="pre-training resolutions; the largest "
                 "is the full one, e.g. 64,48,32")
  p.add_argument("--text_lengths", type=_ints, help="pre-training text lengths; the largest is "
                 "the full one, e.g. 32,8")
  p.add_argument("--grid", choices=GRIDS, help="'axes' (default): image and text reduced "
                 "separately; 'full': every combination")
  p.add_argument("--combined", action=argparse.BooleanOptionalAction,
                 help="with --grid=axes, also smallest image + shortest text")
  p.add_argument("--pretrain_steps", type=int)
  p.add_argument("--finetune_steps", type=int)
  p.add_argument("--batch_size", type=int)
  p.add_argument("--pretrain_lr", type=float, help="base learning rate per 256 samples")
  p.add_argument("--finetune_lr", type=float, help="base learning rate per 256 samples")
  p.add_argument("--finetune_mask_ratio", type=float)
  p.add_argument("--seeds", type=_ints)
  p.add_argument("--repeat_seeds", type=_ints, help="extra seeds for the noise estimate "
                 "('' for none)")
  p.add_argument("--repeat_widths", type=_ints, help="widths repeated with --repeat_seeds")
  p.add_argument("--data_dir", default=None, help="demo data folder (default: "
                 "$CLIPA_DEMO_DATA or ~/.cache/clipa_t5x/demo_shapes; --quick: OUT/data)")
  p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x],
                 help="comma-separated run ids to run (see --list)")
  p.add_argument("--list", action="store_true", help="print the runs and their compute, "
                 "train nothing")
  args = p.parse_args(argv)
  base = QUICK if args.quick else DEFAULT
  overrides = {k: getattr(args, k) for k in (
      "widths", "depth", "image_sizes", "text_lengths", "grid", "combined", "pretrain_steps",
      "finetune_steps", "batch_size", "pretrain_lr", "finetune_lr", "finetune_mask_ratio",
      "seeds", "repeat_seeds", "repeat_widths") if getattr(args, k) is not None}
  if "widths" in overrides and "repeat_widths" not in overrides:
    overrides["repeat_widths"] = (min(overrides["widths"]),)
  args.out = args.out or os.path.join("runs", "inverse_scaling_quick" if args.quick
                                      else "inverse_scaling")
  data = dict(base.data)
  if args.data_dir:
    data["data_dir"] = args.data_dir
  elif args.quick:
    data["data_dir"] = os.path.join(args.out, "data")
  settings = dataclasses.replace(base, **overrides, data=tuple(sorted(data.items())))
  settings.validate()
  return settings, args


def describe(settings: SweepSettings) -> str:
  """One line per run: id, tokens and analytic training compute."""
  lines = []
  total = 0.0
  for spec in build_grid(settings):
    acc = compute_accounting(spec, settings)
    total += acc["total_flops"]
    lines.append(f"{spec.run_id:24s} image tokens {acc['image_tokens']:3d}  text tokens "
                 f"{acc['text_tokens']:3d}  {acc['total_flops'] / 1e12:8.2f} TFLOPs")
  lines.append(f"{len(lines)} runs, {total / 1e12:.1f} TFLOPs of training in all")
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
      print(describe(settings))
      return 0
    if compilation_cache:
      enable_compilation_cache(os.path.abspath(os.path.join(args.out, "jax_cache")))
    run_sweep(settings, args.out, only=args.only)
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
