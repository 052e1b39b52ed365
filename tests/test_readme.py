"""Every command in README.md and docs/*.md works as written; the docs stay short and timeless.

The ```bash blocks (each command) and ```python blocks (each block as one
script) of README.md, then of each docs/*.md in name order, are extracted and
run in order (slow: trains a tiny demo run), from a scratch
working directory that holds the repository's ``gin/`` (so relative paths such
as ``gin/runs/demo_cpu.gin``, ``runs/demo_cpu`` and ``exported/`` resolve as
they do for a user in the repository root). What is substituted, and why:

* ``python`` is this interpreter; ``clipa-<tool>`` and ``.venv/bin/clipa-<tool>``
  are this environment's console scripts (``python -m`` of the module when the
  scripts are not installed); ``bash scripts/demo.sh`` runs the command
  the README says it runs (without its ``setup_env.sh``, which would install
  packages into the shared ``.venv``).
* ``TINY_TRAIN`` / ``TINY_DATA`` bindings are appended to the train and eval
  commands of the demo recipe: a few steps on a few hundred generated images
  instead of ~6 minutes of training on 21,000. Bindings given later win, so
  the README's own flags are all still parsed and used.
* ``my_gin_dir/``, ``photos/`` (images with ``.txt`` captions), ``a.jpg``,
  ``b.png`` and ``captions.txt`` are made in the scratch directory.

``NOT_RUN`` lists the commands that are not run, each with the reason. A new
command is run unless it is listed there: a command that needs data this test
does not make fails the test until it is given the data or listed. A fast test
requires every command to be either one this test knows how to run
(``RUNNABLE``) or listed, so a doc that lands with a new kind of command fails
at once, not only in the slow run. Fast tests also keep README.md within
``README_MAX_LINES`` and every doc free of history words and machine paths.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from typing import List, Tuple

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")
README_MAX_LINES = 250
# Words that tell the project's history instead of describing it, and paths of one machine.
HISTORY = (r"\bbefore:", r"\(before\b", r"\bthis change\b", r"\bthis session\b",
           r"\bafter this\b[^.]*\bchanges?\b", r"\bused to\b", r"\bno longer\b")
MACHINE_PATH = r"(?<![\w.~$])/(tmp|work)/"
# Console scripts and the modules they run.
SCRIPTS = {"clipa-train": "clipa_t5x.train", "clipa-eval": "clipa_t5x.eval",
           "clipa-infer": "clipa_t5x.infer", "clipa-convert": "clipa_t5x.convert",
           "clipa-plan": "clipa_t5x.plan", "clipa-make-shards": "clipa_t5x.data.make_shards"}

# (substring of the command, why it is not run here).
# The first match names the reason.
NOT_RUN = [
    ("bash scripts/test.sh", "the test suite itself, which contains this test"),
    ("source .venv/bin/activate", "changes the calling shell; the commands run as .venv/bin's"),
    ("bench/gpu_check.sh", "needs an NVIDIA GPU"),
    ("bench/gpu_sweep.sh", "needs an NVIDIA GPU"),
    ("--gin.MODEL_DIR=\"'runs/mine'\"", "needs your own shards under /data/mine (a B/16 run); "
     "the README's tiny trial runs the same recipe"),
    ("--gin.MODEL_DIR=\"'runs/mix'\"", "needs your own shards and LAION-2B"),
    ("DATACOMP1B_DATA=\"'gs://bucket/", "needs DataComp-1B on Cloud Storage"),
    # docs/evaluate.md, docs/finetune.md
    ("runs/my_clipa", "needs your own trained run and eval shards"),
    ("eval_imagenet.gin", "needs an H/14 run and ImageNet's validation set"),
    ("clipa_h14_224.npz", "needs the official CLIPA H/14 weights (a multi-GB download)"),
    ("finetune_released.gin", "needs the released weights and training data"),
    # docs/losses.md
    ("gs://bucket/bigg_lion", "a bigG run on a pod"),
    # docs/pods.md
    ("bash scripts/setup_env.sh", "installs into .venv; the test session's environment is ready"),
    ("PYV=$(", "a shell variable for the install lines after it"),
    ("JAX_VERSION=$(", "a shell variable for the install lines after it"),
    ("RUN=", "a shell variable for the cluster commands after it"),
    ("--gin.DATACOMP1B_DATA=\"'/shared/", "part of the Slurm commands' RUN variable"),
    ("cd /shared/", "a cluster's shared folder"),
    ("scripts/two_process_check.sh", "starts two training processes; the multi-host tests run "
     "the same path"),
    ('DEFAULT_FLAGS["gpu"]', "lines a GPU sweep prints for clipa_t5x/xla_flags.py, not a script"),
    ("clipa_t5x.demo.generate --scene glyphs",
     "generates the full glyph set (minutes); the shapes command runs the same generator"),
    ("bench/gpu_profile.py", "needs an NVIDIA GPU"),
    ("bench/fetch_gpu_wheels.sh", "downloads wheels from the network"),
    ("bench/step_throughput.py", "a benchmark (minutes); tests/bench runs it small"),
    ("bench/vs_open_clip.py", "a benchmark (minutes, torch); tests/bench runs it small"),
    ("bench/data_throughput.py", "a benchmark (minutes); tests/bench runs it small"),
    ("bench/op_profile.py", "a benchmark (minutes); tests/bench runs it small"),
    ("gcloud compute tpus", "needs a Cloud TPU pod"),
    ("srun ", "needs a Slurm GPU cluster"),
    ("pip install", "installs packages from the network; this environment has them"),
    ("--weights open_clip_pytorch_model.bin",
     "needs the released ViT-H-14-CLIPA weights (a multi-GB download)"),
    ("--checkpoint imported/h14", "needs those H/14 weights and ImageNet's validation images"),
]
# What this test knows how to run: the console scripts, the modules, Python blocks, the demo.
RUNNABLE = tuple(SCRIPTS) + tuple(f".venv/bin/{s}" for s in SCRIPTS) + (
    "python -m clipa_t5x.", ".venv/bin/python -m clipa_t5x.", "python -c", "bash scripts/demo.sh")
# Run only where the package is installed (the [torch] extra), with the reason otherwise.
NEEDS_PACKAGE = [("import open_clip", "open_clip", "needs the [torch] extra (open_clip_torch)")]

DEMO_COMMAND = ["clipa-train", "--gin_file=gin/runs/demo_cpu.gin",
                "--gin.MODEL_DIR='runs/demo_cpu'"]
TINY_DATA = ["--gin.demo_data.DemoData.num_train=256", "--gin.demo_data.DemoData.num_eval=60",
             "--gin.demo_data.DemoData.num_train_shards=2"]
TINY_TRAIN = [f"--gin.{stage}/{binding}" for stage in ("pretrain", "finetune")
              for binding in ("runner.Stage.batch_size=32", "runner.Stage.train_steps=2",
                              "optimizers.OptimizerConfig.warmup_steps=1")] + [
                  # 256 images hold too few of some classes for 10 or 25 shots.
                  "--gin.evaluators.FewShotEvalConfig.shots=[1, 2]"] + TINY_DATA
# The demo and the run files that include it (other loss / optimizer): run tiny.
DEMO_RUN_FILES = ("demo_cpu.gin", "demo_sigmoid.gin", "demo_lion.gin")
# Start-up lines that must not reach the console (see tests/test_cli.py).
NOISE = ("absl::InitializeLog", "cuInit", "oneDNN custom operations")


def doc_files() -> List[str]:
  """README.md, then docs/*.md in name order (docs that land later are included)."""
  docs = sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md")) \
      if os.path.isdir(DOCS) else []
  return [README] + docs


def readme_commands(path: str = README) -> List[Tuple[int, str, List[str]]]:
  """``(line, text, argv)`` of each command in a Markdown file's bash and python blocks."""
  commands = []
  lang, pending, start, code = None, "", 0, []
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for number, line in enumerate(lines, 1):
    if line.strip().startswith("```"):
      if lang == "python":  # a Python block runs as one script
        commands.append((start, "\n".join(code), ["python", "-c", "\n".join(code)]))
      lang = None if lang is not None else (line.strip()[3:].strip() or "text")
      start, code = number + 1, []
      continue
    if lang == "python":
      code.append(line)
      continue
    if lang not in ("bash", "sh", "shell"):
      continue
    if not pending:
      start = number
    pending += line + "\n"
    if line.rstrip().endswith("\\"):
      continue  # continued on the next line
    try:
      argv = shlex.split(pending.replace("\\\n", " "), comments=True)
    except ValueError:
      continue  # a quote opened on this line closes on a later one
    if argv:
      commands.append((start, " ".join(pending.split()), argv))
    pending = ""
  return commands


def all_commands() -> List[Tuple[str, int, str, List[str]]]:
  """``(file, line, text, argv)`` of every command in README.md and docs/*.md, in run order."""
  return [(os.path.relpath(path, REPO), line, text, argv)
          for path in doc_files() for line, text, argv in readme_commands(path)]


def test_readme_commands_are_found():
  texts = [text for _, text, _ in readme_commands()]
  assert any(t.startswith("bash scripts/demo.sh") for t in texts)
  assert any(t.startswith("clipa-eval") for t in texts)
  assert any(t.startswith("clipa-convert to-open-clip") for t in texts)
  assert any("inference.load(" in t for t in texts)  # a ```python block, as one script
  # A multi-line quoted command is one command (docs/pods.md has three gcloud commands).
  assert sum("gcloud" in t for f, _, t, _ in all_commands() if f.endswith("pods.md")) == 3
  assert any(f.startswith("docs") for f, _, _, _ in all_commands())


def test_every_command_is_run_or_listed_with_its_reason():
  unknown = [f"{f}:{line}: {text}" for f, line, text, argv in all_commands()
             if _not_run_reason(text) is None
             and not any(" ".join(argv).startswith(r) for r in RUNNABLE)]
  assert not unknown, ("commands this test cannot run; list each in NOT_RUN with the reason, or "
                       "teach _as_run to run it:\n" + "\n".join(unknown))


def test_readme_is_a_ten_minute_read():
  with open(README, encoding="utf-8") as f:
    count = len(f.read().splitlines())
  assert count <= README_MAX_LINES, (f"README.md has {count} lines (at most {README_MAX_LINES}); "
                                     "move detail to docs/")


@pytest.mark.parametrize("path", doc_files(), ids=os.path.basename)
def test_docs_have_no_history_words_or_machine_paths(path):
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  found = [f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}" for n, line in enumerate(lines, 1)
           if any(re.search(p, line, re.IGNORECASE) for p in HISTORY)
           or re.search(MACHINE_PATH, line)]
  assert not found, ("describe the project as it is, without history words or one machine's "
                     "paths:\n" + "\n".join(found))


def test_the_checks_catch_what_they_look_for():
  assert any(re.search(p, "0.88x (before: 0.69x)", re.IGNORECASE) for p in HISTORY)
  assert any(re.search(p, "after this session's changes", re.IGNORECASE) for p in HISTORY)
  assert re.search(MACHINE_PATH, "bash scripts/demo.sh /tmp/dd/timed")
  assert not re.search(MACHINE_PATH, "~/.cache/clipa_t5x and gs://b/tmp/x")


def test_demo_script_runs_the_command_the_readme_names():
  with open(os.path.join(REPO, "scripts", "demo.sh")) as f:
    script = f.read()
  assert "-m clipa_t5x.train" in script and "--gin_file=gin/runs/demo_cpu.gin" in script
  assert "MODEL_DIR=${1:-runs/demo_cpu}" in script


def _not_run_reason(text: str):
  for what, package, why in NEEDS_PACKAGE:
    if what in text and importlib.util.find_spec(package) is None:
      return why
  return next((why for what, why in NOT_RUN if what in text), None)


def _prepare(work: str) -> None:
  os.symlink(os.path.join(REPO, "gin"), os.path.join(work, "gin"))
  os.makedirs(os.path.join(work, "my_gin_dir"))
  photos = os.path.join(work, "photos")
  os.makedirs(photos)
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        os.path.join(photos, f"p{i}.jpg"))
    with open(os.path.join(photos, f"p{i}.txt"), "w") as f:  # captions, for make_shards
      f.write(f"a photo of noise number {i}\n")
  for name in ("a.jpg", "b.png"):  # the inference API example's images
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(
        os.path.join(work, name))
  with open(os.path.join(work, "captions.txt"), "w") as f:
    f.write("a red circle\na blue square\n")


def _as_run(argv: List[str], work: str) -> List[str]:
  """The command as this test runs it (see the module docstring)."""
  if argv[:2] == ["bash", "scripts/demo.sh"]:
    argv = list(DEMO_COMMAND)
  script = argv[0].removeprefix(".venv/bin/")
  module = SCRIPTS.get(script)
  if argv[0] in ("python", "python3", ".venv/bin/python"):
    argv = [sys.executable] + argv[1:]
    if argv[1:2] == ["-m"]:
      module = argv[2]
  elif module is not None:
    installed = os.path.join(os.path.dirname(sys.executable), script)
    argv = ([installed] if os.path.exists(installed) else [sys.executable, "-m", module]) + argv[1:]
  demo = any(f"--gin_file=gin/runs/{f}" in argv for f in DEMO_RUN_FILES)
  if module == "clipa_t5x.train" and demo:
    argv += TINY_TRAIN
  if module == "clipa_t5x.eval" and "--gin_file=gin/runs/eval_demo.gin" in argv:
    argv += TINY_DATA
  return argv


@pytest.mark.slow
def test_every_readme_command_works_as_written(tmp_path):
  work = str(tmp_path / "repo_root")
  os.makedirs(work)
  _prepare(work)
  # The user's environment: without the test session's log-level and GPU settings.
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
  env["CLIPA_DEMO_DATA"] = str(tmp_path / "demo_data")  # never the user's cached data
  ran, skipped = [], []
  for path, line, text, argv in all_commands():
    where = f"{path} line {line}"
    why = _not_run_reason(text)
    if why:
      skipped.append((where, why))
      continue
    proc = subprocess.run(_as_run(argv, work), cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, (f"{where}: {text}\n"
                                  f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}")
    if argv[:2] != ["python", "-c"]:  # the entry points' console, not the library's
      for noise in NOISE:
        assert noise not in proc.stderr, f"{where}: {text}\n{proc.stderr[-3000:]}"
    ran.append(text)
  # The relative-path commands that used to fail (Orbax refuses relative paths) ran.
  assert any(t.startswith("clipa-eval") and "runs/demo_cpu/finetune" in t for t in ran)
  assert any("to-open-clip --checkpoint runs/demo_cpu/finetune --out exported/" in t
             for t in ran)
  assert os.path.exists(os.path.join(work, "exported", "open_clip_config.json"))
  assert os.path.exists(os.path.join(work, "predictions.csv"))
  print("not run:", *(f"{where}: {why}" for where, why in skipped), sep="\n  ")


def test_commands_run_as_this_environment_runs_them(tmp_path):
  work = str(tmp_path)
  argv = _as_run(["clipa-eval", "--gin_file=gin/runs/eval_demo.gin", "--checkpoint=r"], work)
  script = os.path.join(os.path.dirname(sys.executable), "clipa-eval")
  assert argv[0] in (script, sys.executable)
  assert argv[-len(TINY_DATA):] == TINY_DATA
  argv = _as_run([".venv/bin/clipa-train", "--gin_file=gin/runs/demo_cpu.gin"], work)
  assert argv[-len(TINY_TRAIN):] == TINY_TRAIN
  for run_file in ("demo_sigmoid.gin", "demo_lion.gin"):  # the demo with another loss / optimizer
    argv = _as_run(["python", "-m", "clipa_t5x.train", f"--gin_file=gin/runs/{run_file}"], work)
    assert argv[-len(TINY_TRAIN):] == TINY_TRAIN
  argv = _as_run(["python", "-m", "clipa_t5x.train", "--gin_file=gin/runs/demo_cpu.gin"], work)
  assert argv[0] == sys.executable and argv[-len(TINY_TRAIN):] == TINY_TRAIN
  assert _as_run(["bash", "scripts/demo.sh"], work)[-len(TINY_TRAIN):] == TINY_TRAIN


# Guides written on other branches (preflight); a link to one of these is
# accepted while the file is absent. Empty this once they are all on main.
LANDING: set = set()


@pytest.mark.parametrize("path", doc_files(), ids=os.path.basename)
def test_relative_links_name_files_that_exist(path):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  missing = []
  for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
    if "://" in target:
      continue
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    if not os.path.exists(resolved) and os.path.relpath(resolved, REPO) not in LANDING:
      missing.append(target)
  assert not missing, f"{os.path.relpath(path, REPO)} links to missing files: {missing}"


def _demo_tables(path: str) -> List[str]:
  with open(path, encoding="utf-8") as f:
    blocks = re.findall(r"```\n(stage +image tokens.*?)```", f.read(), re.S)
  return [b for b in blocks if "pretrain" in b and "colour top-1" in b]


def test_the_demo_table_reads_the_same_wherever_it_is_shown():
  readme = _demo_tables(README)
  assert len(readme) == 1
  demo_doc = os.path.join(DOCS, "demo.md")
  for table in _demo_tables(demo_doc) if os.path.exists(demo_doc) else []:
    assert table == readme[0], "update the demo table in README.md and docs/demo.md together"
