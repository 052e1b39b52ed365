"""Training speed on CPU: clipa_t5x versus open_clip on the same CLIPA model.

The same small CLIPA configuration (widths, depths, heads, MLP, resolution,
text length, batch) is trained for the same number of steps by

* **clipa_t5x**: the real ``Trainer`` step (jitted, pinned shardings, state
  donated), float32, as ``bench/step_throughput.py`` runs it;
* **open_clip**: ``open_clip.CLIP`` built from
  ``clipa_t5x.interop.open_clip_config.open_clip_model_config`` (no ln_pre,
  average pool + LayerNorm after the pool, tanh GELU, LayerNorm eps 1e-6,
  last-token text pooling, no causal mask; patch masking as
  ``patch_dropout``; the image position embedding frozen, as CLIPA's fixed
  sin-cos is), open_clip's ``ClipLoss``, ``torch.optim.AdamW`` with
  open_clip's parameter groups and CLIPA's betas / weight decay, and the
  logit-scale clamp of open_clip's training loop; float32 eager PyTorch.

Both start from the same weights (the clipa_t5x worker's initial parameters,
converted with ``clipa_t5x.interop.open_clip``), see one fixed random batch of
the same shape (uint8 images normalised inside the step on both sides, int32
tokens) every step and use the same learning rate: so both do the same work,
and their losses agree (reported as a check; without the shared start, on
this random batch open_clip's default initialisation, with its learned random
image position embedding, memorises the batch faster than CLIPA's Xavier init
with fixed sin-cos position embedding).

Fairness: each framework runs in its own long-lived worker process (torch's
and XLA's thread pools in one process would fight for the cores), both
allowed every core (``torch.set_num_threads(os.cpu_count())``; XLA uses all
cores by default); ``--threads N`` instead pins both to the same first N cores
(``--threads 1``: a per-core comparison that other processes' load cannot
skew through thread synchronisation). After warm-up in each (XLA compile, first torch steps),
the driver alternates "run N steps" commands between them over stdin/stdout
lines (clipa_t5x, open_clip, clipa_t5x, ...), so load from other processes
hits both alike. Each worker times its own steps (wall clock and its process
CPU time, every thread counted); the median round is reported, with the
per-round numbers. Last, each worker times one float32 matmul of the image
MLP's shape on its own (XLA versus torch's GEMM), which explains most of the
step-time ratio, since both steps are mostly such matmuls.

The clipa_t5x worker runs as the trainer does: the model's default
``attention_impl`` ('auto', i.e. 'chunked' on CPU) and the trainer's default
XLA flags (``clipa_t5x.xla_flags``), to which the environment's ``XLA_FLAGS``
add or override flags (``CLIPA_T5X_XLA_DEFAULTS=0``: none of the defaults);
the worker's info line prints both.

Usage::

  python bench/vs_open_clip.py [--model Mu/8] [--settings 112:32:0,112:32:0.75]
      [--batch 128] [--steps 2] [--rounds 5] [--threads 0] [--json OUT]

Needs the ``torch`` extra: ``pip install .[torch]``.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402  (bench/_timing.py)
import step_throughput  # noqa: E402  (bench/step_throughput.py)

DEFAULT_MODEL = "Mu/8"
# 196 image tokens, then 49 of them kept by masking (open_clip: patch_dropout).
DEFAULT_SETTINGS = "112:32:0,112:32:0.75"
DEFAULT_BATCH = 128
# Peak learning rate = this x batch / 256 on both sides. Higher than CLIPA's
# pre-training rate (8e-6) so that the loss check (both losses fall, together, within a
# few steps on a fixed batch) is visible; the work per step is the same.
DEFAULT_BASE_LR = 1e-4
# Issue 15: at least open_clip's speed on CPU, 1.2x as a stretch.
GOAL_RATIO = 1.0
STRETCH_RATIO = 1.2
FRAMEWORKS = ("clipa_t5x", "open_clip")
TORCH_FIX = "pip install .[torch]  (torch, torchvision, open_clip_torch)"


def missing_torch() -> Optional[str]:
  """The first of torch / open_clip that cannot be found, or None."""
  for name in ("torch", "open_clip"):
    if importlib.util.find_spec(name) is None:
      return name
  return None


# --------------------------------------------------------------- workers ---
def _protocol_out():
  """A private copy of stdout for protocol lines; fd 1 then goes to stderr.

  Libraries that print (XLA, TF, torch warnings) must not corrupt the
  one-JSON-object-per-line protocol with the driver.
  """
  out = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  return out


class ClipaWorker:
  """clipa_t5x's side: one ``StepRunner`` per setting."""

  def __init__(self, spec: Dict[str, Any]):
    # pylint: disable=import-outside-toplevel
    import jax
    import numpy as np
    from clipa_t5x import partitioning
    devices = jax.local_devices()
    partitioner = partitioning.PjitPartitioner(
        num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
        devices=devices)
    from clipa_t5x.interop import open_clip as interop
    from clipa_t5x.models import configs
    self.runners = []
    for i, (size, length, ratio) in enumerate(spec["settings"]):
      runner = step_throughput.StepRunner(
          spec["model"], step_throughput.Setting(size, length, ratio), spec["batch"],
          "float32", partitioner, seed=spec["seed"],
          base_learning_rate=spec["base_lr"])
      # open_clip starts from these same weights, so both do the same work and
      # their losses must agree (a check that the comparison is like for like).
      state_dict = interop.to_open_clip_state_dict(
          jax.device_get(runner.params), configs.get_config(spec["model"]), size)
      np.savez(initial_weights_path(spec, i), **state_dict)
      self.runners.append(runner)
    from clipa_t5x.models import layers
    self.info = {"framework": "clipa_t5x", "version": f"jax {jax.__version__}",
                 "attention": layers.resolve_attention_impl(
                     configs.get_config(spec["model"]).attention_impl),
                 "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "devices": len(devices), "cores": len(os.sched_getaffinity(0)),
                 "params": self.runners[0].num_params,
                 "compile_s": [round(r.compile_s, 1) for r in self.runners]}

  def run(self, index: int, steps: int) -> int:
    return self.runners[index].run(steps)

  def loss(self, index: int) -> float:
    return self.runners[index].loss

  @staticmethod
  def gemm(a, b, reps: int) -> float:
    """Median seconds of one jitted ``a @ b`` (float32)."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    matmul = jax.jit(jnp.matmul)
    x, y = jnp.asarray(a), jnp.asarray(b)
    return _median_seconds(lambda: matmul(x, y).block_until_ready(), reps)


class OpenClipWorker:
  """open_clip's side: one ``open_clip_step.OpenClipStep`` per setting."""

  def __init__(self, spec: Dict[str, Any]):
    # pylint: disable=import-outside-toplevel
    import numpy as np
    import open_clip
    import open_clip_step
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(spec["seed"])
    self._torch = torch
    self.steps = []
    for model_cfg, (size, length, _) in zip(spec["open_clip_cfgs"], spec["settings"]):
      batch = step_throughput.random_batch(
          spec["batch"], step_throughput.Setting(size, length), spec["vocab_size"],
          spec["seed"])
      with np.load(initial_weights_path(spec, len(self.steps))) as weights:
        state_dict = {k: weights[k] for k in weights.files}
      self.steps.append(open_clip_step.OpenClipStep(
          model_cfg, batch, lr=spec["base_lr"] * spec["batch"] / 256,
          weight_decay=spec["weight_decay"], betas=(spec["b1"], spec["b2"]), eps=spec["eps"],
          mean=spec["mean"], std=spec["std"], state_dict=state_dict))
    self.info = {"framework": "open_clip",
                 "version": f"torch {torch.__version__}, open_clip {open_clip.__version__}",
                 "threads": torch.get_num_threads(), "cores": len(os.sched_getaffinity(0)),
                 "params": self.steps[0].num_params}

  def run(self, index: int, steps: int) -> int:
    return self.steps[index].run(steps)

  def loss(self, index: int) -> float:
    return self.steps[index].loss

  def gemm(self, a, b, reps: int) -> float:
    """Median seconds of one ``torch.matmul(a, b)`` (float32)."""
    x, y = self._torch.from_numpy(a), self._torch.from_numpy(b)
    return _median_seconds(lambda: self._torch.matmul(x, y), reps)


def initial_weights_path(spec: Dict[str, Any], index: int) -> str:
  """Where the clipa_t5x worker leaves setting ``index``'s initial weights for open_clip."""
  return os.path.join(spec["init_dir"], f"setting_{index}.npz")


def _median_seconds(fn, reps: int) -> float:
  fn()  # warm-up (compile, allocation)
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def gemm_shapes(config, setting, batch_size: int) -> Dict[str, List[int]]:
  """``[M, K, N]`` of the image MLP's first matmul: forward and weight gradient.

  The step's time is mostly such matmuls, so how fast each framework runs
  one on its own explains most of the step-time ratio.

  Args:
    config: the ``ClipaConfig``.
    setting: the input shape (kept tokens + cls per image).
    batch_size: images per step.

  Returns:
    ``{description: [M, K, N]}``.
  """
  rows = batch_size * (step_throughput.kept_image_tokens(config, setting) + 1)
  width, mlp = config.image.width, config.image.mlp_dim
  return {f"fc_in forward [{rows}x{width}] @ [{width}x{mlp}]": [rows, width, mlp],
          f"fc_in weight grad [{width}x{rows}] @ [{rows}x{mlp}]": [width, rows, mlp]}


def worker_main(framework: str, spec_json: str) -> None:
  """A worker process: builds, warms up, then serves ``run`` commands on stdin.

  Protocol (one JSON object per line): the worker first answers
  ``{"ready": true, "info": ..., "warmup_loss": [...]}``; then for each
  ``{"cmd": "run", "setting": i, "steps": n}`` it answers
  ``{"samples", "wall_s", "cpu_s", "loss"}``; ``{"cmd": "quit"}`` ends it.
  Errors are answered as ``{"error": "..."}``.
  """
  out = _protocol_out()
  spec = json.loads(spec_json)
  if framework == "clipa_t5x":
    # As the trainer's entry points do, before the first JAX computation.
    from clipa_t5x import xla_flags  # pylint: disable=import-outside-toplevel
    xla_flags.apply_default_flags(log=lambda line: print(line, file=sys.stderr))
  if spec["threads"]:
    # Before jax/torch start their thread pools, which size themselves from this.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:spec["threads"]])
  try:
    worker = (ClipaWorker if framework == "clipa_t5x" else OpenClipWorker)(spec)
    for i in range(len(spec["settings"])):
      worker.run(i, spec["warmup_steps"])
    out.write(json.dumps({"ready": True, "info": worker.info,
                          "warmup_loss": [worker.loss(i)
                                          for i in range(len(spec["settings"]))]}) + "\n")
  except Exception as e:  # pylint: disable=broad-except  (reported to the driver)
    out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
    raise
  for line in sys.stdin:
    command = json.loads(line)
    if command.get("cmd") == "quit":
      break
    if command.get("cmd") == "gemm":
      import numpy as np  # pylint: disable=import-outside-toplevel
      m, k, n = command["shape"]
      rng = np.random.RandomState(0)
      a = rng.rand(m, k).astype(np.float32)
      b = rng.rand(k, n).astype(np.float32)
      seconds = worker.gemm(a, b, int(command.get("reps", 5)))
      out.write(json.dumps({"gflops_per_s": 2 * m * k * n / seconds / 1e9}) + "\n")
      continue
    index, steps = int(command["setting"]), int(command["steps"])
    timing = _timing.time_call(lambda: worker.run(index, steps))
    out.write(json.dumps({**timing.to_dict(), "loss": worker.loss(index)}) + "\n")


# ---------------------------------------------------------------- driver ---
class Worker:
  """The driver's handle on one worker process."""

  def __init__(self, framework: str, spec: Dict[str, Any], timeout_s: float):
    self.framework = framework
    self._log = tempfile.TemporaryFile(mode="w+")
    self._proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", framework,
         "--spec", json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        bufsize=1)
    self._timeout_s = timeout_s
    self.ready = None

  def _read(self) -> Dict[str, Any]:
    line = self._proc.stdout.readline()
    if not line:
      self._proc.wait(timeout=self._timeout_s)
      raise RuntimeError(f"{self.framework} worker exited (code {self._proc.returncode}); "
                         f"its log ends with:\n{self.log_tail()}")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"{self.framework} worker failed: {reply['error']}\n"
                         f"{self.log_tail()}")
    return reply

  def wait_ready(self) -> Dict[str, Any]:
    self.ready = self._read()
    return self.ready

  def run(self, setting: int, steps: int) -> Dict[str, Any]:
    self._proc.stdin.write(json.dumps({"cmd": "run", "setting": setting,
                                       "steps": steps}) + "\n")
    self._proc.stdin.flush()
    return self._read()

  def gemm(self, shape: Sequence[int], reps: int = 5) -> float:
    """GFLOP/s of one float32 ``[M, K] x [K, N]`` matmul in this worker's framework."""
    self._proc.stdin.write(json.dumps({"cmd": "gemm", "shape": list(shape),
                                       "reps": reps}) + "\n")
    self._proc.stdin.flush()
    return self._read()["gflops_per_s"]

  def log_tail(self, chars: int = 3000) -> str:
    self._log.seek(0)
    return self._log.read()[-chars:]

  def close(self) -> None:
    if self._proc.poll() is None:
      try:
        self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self._proc.kill()
        self._proc.wait()
    self._log.close()


def make_spec(model_name: str, settings: Sequence[step_throughput.Setting], batch_size: int,
              base_lr: float, warmup_steps: int, seed: int = 0, threads: int = 0
              ) -> Dict[str, Any]:
  """The JSON spec both workers build their side from (same model, data, optimizer).

  Args:
    model_name: a ``VARIANTS`` name.
    settings: the input shapes.
    batch_size: batch per step.
    base_lr: learning rate per 256 examples.
    warmup_steps: untimed steps per setting before the first round.
    seed: init and data seed.
    threads: 0 lets each worker use every core; N pins both workers to the
      same first N cores (they never run at once) and gives torch N threads.

  Returns:
    A JSON-serialisable dict, including open_clip's ``model_cfg`` per setting.
  """
  # pylint: disable=import-outside-toplevel
  from clipa_t5x import optimizers
  from clipa_t5x.interop import open_clip_config
  from clipa_t5x.models import configs, vit
  config = configs.get_config(model_name)
  step_throughput.check_settings(settings, config)
  if batch_size < 2:
    raise ValueError(f"--batch must be >= 2 for a contrastive loss, got {batch_size}.")
  if warmup_steps < 1:
    raise ValueError(f"warmup steps must be >= 1, got {warmup_steps}.")
  cores = len(os.sched_getaffinity(0))
  if not 0 <= threads <= cores:
    raise ValueError(f"--threads {threads} must be 0 (all cores) or 1..{cores} (the cores "
                     "this process may use).")
  cfgs = []
  for s in settings:
    cfg = open_clip_config.open_clip_model_config(config, s.image_size, s.text_length)
    cfg["vision_cfg"]["patch_dropout"] = float(s.mask_ratio)
    cfgs.append(cfg)
  opt = optimizers.OptimizerConfig()
  return {"model": model_name, "batch": int(batch_size), "seed": int(seed),
          "settings": [[s.image_size, s.text_length, s.mask_ratio] for s in settings],
          "open_clip_cfgs": cfgs, "vocab_size": config.text.vocab_size,
          "base_lr": float(base_lr), "b1": opt.b1, "b2": opt.b2, "eps": opt.eps,
          "weight_decay": opt.weight_decay, "warmup_steps": int(warmup_steps),
          "threads": int(threads),
          "mean": list(vit.IMAGENET_MEAN), "std": list(vit.IMAGENET_STD)}


@dataclasses.dataclass
class Row:
  """One setting: medians of each framework and their ratio."""
  setting: str
  image_tokens: int
  clipa_samples_per_s: float
  open_clip_samples_per_s: float
  ratio: float                    # clipa_t5x / open_clip, wall clock
  clipa_samples_per_cpu_s: float
  open_clip_samples_per_cpu_s: float
  cpu_ratio: float                # clipa_t5x / open_clip, per CPU second
  clipa_cores: float
  open_clip_cores: float
  clipa_loss: List[float]         # after warm-up, after the timed steps
  open_clip_loss: List[float]
  clipa_rounds: List[float]       # samples/s per round
  open_clip_rounds: List[float]


def make_rows(config, settings: Sequence[step_throughput.Setting],
              clipa: Sequence[Sequence[_timing.Timing]],
              open_clip: Sequence[Sequence[_timing.Timing]],
              clipa_loss: Sequence[Sequence[float]],
              open_clip_loss: Sequence[Sequence[float]]) -> List[Row]:
  """Medians and ratios per setting from the per-round timings of both sides.

  Args:
    config: the ``ClipaConfig`` (for the token count).
    settings: the settings.
    clipa: ``clipa[i]``: clipa_t5x's rounds at ``settings[i]``.
    open_clip: the same for open_clip.
    clipa_loss: ``[loss after warm-up, loss after the timed steps]`` per setting.
    open_clip_loss: the same for open_clip.

  Returns:
    One ``Row`` per setting.
  """
  rows = []
  for i, s in enumerate(settings):
    ours, ref = clipa[i], open_clip[i]
    ours_rate, ref_rate = _timing.median_of(ours), _timing.median_of(ref)
    ours_cpu = _timing.median_of(ours, "samples_per_cpu_s")
    ref_cpu = _timing.median_of(ref, "samples_per_cpu_s")
    rows.append(Row(
        setting=s.label, image_tokens=step_throughput.kept_image_tokens(config, s),
        clipa_samples_per_s=ours_rate, open_clip_samples_per_s=ref_rate,
        ratio=ours_rate / ref_rate, clipa_samples_per_cpu_s=ours_cpu,
        open_clip_samples_per_cpu_s=ref_cpu, cpu_ratio=ours_cpu / ref_cpu,
        clipa_cores=_timing.median_of(ours, "cores"),
        open_clip_cores=_timing.median_of(ref, "cores"),
        clipa_loss=list(clipa_loss[i]), open_clip_loss=list(open_clip_loss[i]),
        clipa_rounds=[t.samples_per_s for t in ours],
        open_clip_rounds=[t.samples_per_s for t in ref]))
  return rows


def format_table(rows: Sequence[Row]) -> str:
  """The rows as a fixed-width text table."""
  head = (f"{'setting':>12} {'img tok':>7} | {'clipa_t5x/s':>11} {'open_clip/s':>11} "
          f"{'ratio':>6} | {'clipa/CPU-s':>11} {'oc/CPU-s':>8} {'ratio':>6} "
          f"{'cores':>9} | {'clipa loss':>15} {'open_clip loss':>15}")
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(
        f"{r.setting:>12} {r.image_tokens:>7} | {r.clipa_samples_per_s:>11.2f} "
        f"{r.open_clip_samples_per_s:>11.2f} {r.ratio:>5.2f}x | "
        f"{r.clipa_samples_per_cpu_s:>11.2f} {r.open_clip_samples_per_cpu_s:>8.2f} "
        f"{r.cpu_ratio:>5.2f}x {r.clipa_cores:>4.2f}/{r.open_clip_cores:<4.2f} | "
        f"{r.clipa_loss[0]:>6.4f}->{r.clipa_loss[1]:<6.4f} "
        f"{r.open_clip_loss[0]:>6.4f}->{r.open_clip_loss[1]:<6.4f}")
  return "\n".join(lines)


def load_warning(rows: Sequence[Row], cores: int) -> Optional[str]:
  """A warning when a worker got clearly fewer cores than it may use.

  Then other processes held cores during the timing, and the ratio says
  more about how each framework copes with that (torch's OpenMP threads wait
  on each other when one of them is descheduled) than about its speed.

  Args:
    rows: the results.
    cores: the cores each worker may use.

  Returns:
    The warning, or None.
  """
  got = min(min(r.clipa_cores, r.open_clip_cores) for r in rows)
  if cores > 1 and got < 0.8 * cores:
    return (f"warning: a worker got only {got:.2f} of its {cores} cores (other processes "
            "were running); with fewer cores than threads, torch's OpenMP threads stall on "
            "each other, so these ratios measure that load; rerun on an idle machine or "
            "with --threads 1 for a per-core comparison")
  return None


def loss_agreement(rows: Sequence[Row]) -> str:
  """How far apart the two sides' losses are: both start from the same weights.

  Unmasked settings agree to about 1e-4 (float32 rounding; open_clip also
  decays the token and text position embeddings, which CLIPA does not);
  masked ones drop different random patches on each side, so only roughly.
  """
  parts = [f"{r.setting} {max(abs(a - b) for a, b in zip(r.clipa_loss, r.open_clip_loss)):.1e}"
           for r in rows]
  return ("same initial weights on both sides; largest loss difference (after warm-up, after "
          "the timed steps): " + ", ".join(parts))


def goal_lines(rows: Sequence[Row], goal: float = GOAL_RATIO) -> List[str]:
  """One verdict per setting: clipa_t5x samples/s >= ``goal`` x open_clip's."""
  return [f"goal {'MET' if r.ratio >= goal else 'NOT MET'} at {r.setting}: clipa_t5x "
          f"{r.ratio:.2f}x open_clip's samples/s (goal >= {goal:.1f}x, stretch "
          f"{STRETCH_RATIO:.1f}x; per CPU second {r.cpu_ratio:.2f}x)" for r in rows]


@dataclasses.dataclass
class Result:
  """Everything one comparison measured."""
  model: str
  batch_size: int
  steps: int
  rounds: int
  threads: int
  clipa_info: Dict[str, Any]
  open_clip_info: Dict[str, Any]
  rows: List[Row]
  gemm: Dict[str, Dict[str, float]]   # shape -> framework -> GFLOP/s


def run(model_name: str, settings: Sequence[step_throughput.Setting], batch_size: int,
        steps: int, rounds: int, base_lr: float = DEFAULT_BASE_LR, warmup_steps: int = 1,
        threads: int = 0, timeout_s: float = 1800.0, log=lambda s: None) -> Result:
  """Starts both workers, waits for their warm-up, alternates timed rounds.

  Args:
    model_name: a ``VARIANTS`` name.
    settings: the input shapes.
    batch_size: batch per step.
    steps: timed steps per round.
    rounds: rounds (each: every setting on clipa_t5x, then on open_clip).
    base_lr: learning rate per 256 examples, both sides.
    warmup_steps: untimed steps per setting and side before timing.
    threads: 0 for every core, else both workers pinned to the first N cores.
    timeout_s: how long to wait for a worker that has exited.
    log: progress printer.

  Returns:
    The ``Result``.
  """
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  if steps < 1 or rounds < 1:
    raise ValueError(f"steps and rounds must be >= 1, got {steps} and {rounds}.")
  missing = missing_torch()
  if missing:
    raise ModuleNotFoundError(f"{missing} is not installed; the open_clip side needs it: "
                              f"{TORCH_FIX}")
  spec = make_spec(model_name, settings, batch_size, base_lr, warmup_steps, threads=threads)
  workers = {}
  init_dir = tempfile.TemporaryDirectory(prefix="vs_open_clip_init_")
  spec["init_dir"] = init_dir.name
  try:
    start = time.perf_counter()
    # Started one after the other: warming up both at once would have them fight.
    for name in FRAMEWORKS:
      workers[name] = Worker(name, spec, timeout_s)
      info = workers[name].wait_ready()["info"]
      log(f"  {name} ready after {time.perf_counter() - start:.1f} s: {info}")
      start = time.perf_counter()
    runners = []
    for i in range(len(settings)):
      for name in FRAMEWORKS:
        def runner(w=workers[name], i=i):
          reply = w.run(i, steps)
          return _timing.Timing(reply["samples"], reply["wall_s"], reply["cpu_s"]), reply["loss"]
        runners.append(runner)
    results = _timing.alternate(runners, rounds)
    gemm = {}
    config = configs.get_config(model_name)
    for name, shape in gemm_shapes(config, settings[0], batch_size).items():
      gemm[name] = {fw: workers[fw].gemm(shape) for fw in FRAMEWORKS}
  finally:
    for w in workers.values():
      w.close()
    init_dir.cleanup()
  timings = {name: [] for name in FRAMEWORKS}
  losses = {name: [] for name in FRAMEWORKS}
  for k, rounds_of in enumerate(results):
    i, name = divmod(k, len(FRAMEWORKS))
    name = FRAMEWORKS[name]
    timings[name].append([t for t, _ in rounds_of])
    losses[name].append([workers[name].ready["warmup_loss"][i], rounds_of[-1][1]])
  rows = make_rows(config, settings, timings["clipa_t5x"], timings["open_clip"],
                   losses["clipa_t5x"], losses["open_clip"])
  return Result(model=model_name, batch_size=batch_size, steps=steps, rounds=rounds,
                threads=threads, clipa_info=workers["clipa_t5x"].ready["info"],
                open_clip_info=workers["open_clip"].ready["info"], rows=rows, gemm=gemm)


def report(result: Result) -> str:
  """Table, per-round samples/s and verdicts as text."""
  lines = [format_table(result.rows), "samples/s per round (clipa_t5x | open_clip):"]
  for r in result.rows:
    lines.append(f"  {r.setting:>12}: " + ", ".join(f"{v:.2f}" for v in r.clipa_rounds) +
                 " | " + ", ".join(f"{v:.2f}" for v in r.open_clip_rounds))
  lines.append("one float32 matmul alone, GFLOP/s (clipa_t5x = XLA:CPU, open_clip = torch):")
  for name, by_fw in result.gemm.items():
    lines.append(f"  {name}: XLA {by_fw['clipa_t5x']:.1f}, torch {by_fw['open_clip']:.1f} "
                 f"({by_fw['clipa_t5x'] / by_fw['open_clip']:.2f}x)")
  lines.append(loss_agreement(result.rows))
  lines += goal_lines(result.rows)
  warning = load_warning(result.rows, int(result.clipa_info.get("cores", 1)))
  return "\n".join(lines + ([warning] if warning else []))


def main(argv: Optional[Sequence[str]] = None) -> Optional[Result]:
  """Command line entry point (driver, or a worker with ``--worker``)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default=DEFAULT_MODEL, help=f"variant (default {DEFAULT_MODEL})")
  parser.add_argument("--settings", default=DEFAULT_SETTINGS,
                      help="comma-separated resolution:text_length[:mask_ratio] (default "
                      f"{DEFAULT_SETTINGS}); mask_ratio is open_clip's patch_dropout")
  parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                      help=f"batch per step (default {DEFAULT_BATCH})")
  parser.add_argument("--steps", type=int, default=2, help="timed steps per round (default 2)")
  parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
  parser.add_argument("--warmup_steps", type=int, default=2,
                      help="untimed steps per setting and side after compiling (default 2)")
  parser.add_argument("--base_lr", type=float, default=DEFAULT_BASE_LR,
                      help=f"learning rate per 256 examples, both sides (default {DEFAULT_BASE_LR})")
  parser.add_argument("--threads", type=int, default=0,
                      help="0 (default): each worker may use every core; N: both pinned to "
                      "the first N cores, torch with N threads (1 = per-core comparison)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
  parser.add_argument("--spec", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker_main(args.worker, args.spec)
    return None
  missing = missing_torch()
  if missing:
    parser.exit(2, f"error: {missing} is not installed; the open_clip side of this "
                f"benchmark needs it: {TORCH_FIX}\n")
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  if args.model not in configs.VARIANTS:
    parser.error(f"unknown --model {args.model!r}; choose one of {sorted(configs.VARIANTS)}.")
  try:
    settings = step_throughput.parse_settings(args.settings)
  except ValueError as e:
    parser.error(str(e))
  cores = (f"pinned to {args.threads} of {os.cpu_count()} cores" if args.threads
           else f"every one of {os.cpu_count()} cores")
  print(f"model {args.model} (same widths/depths/heads/MLP on both sides), batch {args.batch}, "
        f"float32, {cores}; one fixed random batch per step, the same shapes "
        f"and learning rate ({args.base_lr} x batch/256) on both sides")
  print(f"timing: each framework in its own worker process; median of "
        f"{args.rounds} alternating rounds (clipa_t5x, open_clip, ...) of {args.steps} "
        f"step(s) after {args.warmup_steps} warm-up step(s); timed inside each worker; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  sys.stdout.flush()

  def log(line: str) -> None:
    print(line, flush=True)

  try:
    result = run(args.model, settings, args.batch, args.steps, args.rounds, args.base_lr,
                 args.warmup_steps, threads=args.threads, log=log)
  except ValueError as e:
    parser.error(str(e))
  print(report(result))
  if args.json:
    _timing.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
