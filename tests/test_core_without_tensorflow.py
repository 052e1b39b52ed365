"""The JAX core imports and trains without TensorFlow, seqio, gin or clu.

Accelerator images (e.g. a CUDA jax + torch image) often have none of them, so
``clipa_t5x.models``, ``partitioning``, ``train_state``, ``trainer``,
``losses``, ``optimizers`` and the step benchmark must not import them. Each
check runs in a fresh interpreter, where ``sys.modules`` shows every import.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from hidden_packages import NOT_IN_CORE, REPO, hidden_packages_env

CORE_MODULES = ("clipa_t5x.models", "clipa_t5x.partitioning", "clipa_t5x.train_state",
                "clipa_t5x.trainer", "clipa_t5x.losses", "clipa_t5x.optimizers",
                "clipa_t5x.grad_accumulation", "clipa_t5x.metrics_logging",
                "clipa_t5x.flops", "clipa_t5x.device_profiles",
                "clipa_t5x.interop.open_clip_config")

def _run(code, env=None):
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_core_modules_import_no_tensorflow_seqio_gin_or_clu():
  code = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(REPO, 'bench')!r})
      for name in {CORE_MODULES!r} + ("step_throughput",):
        __import__(name)
      print(sorted(m for m in {NOT_IN_CORE!r} if m in sys.modules))
  """)
  assert _run(code).strip() == "[]"


def test_hiding_helper_hides(tmp_path):
  code = ("import importlib.util\n"
          "assert importlib.util.find_spec('tensorflow') is None\n"
          "try:\n  import gin\nexcept ModuleNotFoundError:\n  print('hidden')\n")
  assert _run(code, hidden_packages_env(tmp_path)).strip() == "hidden"


@pytest.mark.slow
def test_a_train_step_runs_with_tensorflow_absent(tmp_path):
  """Trainer.train on a tiny model logs to JSONL only when clu/TF are missing."""
  jsonl = tmp_path / "metrics.jsonl"
  code = textwrap.dedent(f"""
      import itertools
      import jax
      import helpers
      from clipa_t5x import metrics_logging, partitioning, trainer
      from clipa_t5x import train_state
      part = partitioning.PjitPartitioner(
          num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules())
      model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(part)
      state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                             helpers.TEXT_LENGTH, part, shardings)
      t = trainer.Trainer(model, tx, lr_fn, part, shardings, 8)
      logger = metrics_logging.MetricsLogger({str(tmp_path / 'tb')!r}, {str(jsonl)!r},
                                             enabled=True)
      t.train(state, itertools.repeat(helpers.random_batch()), jax.random.key(1), 2, logger,
              log_every=1)
      print("ok")
  """)
  env = hidden_packages_env(tmp_path)
  env["XLA_FLAGS"] = ""
  assert _run(code, env).strip().endswith("ok")
  lines = [l for l in jsonl.read_text().splitlines() if l]
  assert len(lines) == 2 and '"loss"' in lines[0]
  assert not (tmp_path / "tb").exists() or not os.listdir(tmp_path / "tb")
