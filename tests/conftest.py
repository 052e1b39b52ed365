"""Test-wide settings: four fake CPU devices so mesh tests can run anywhere."""
import os

# Must be set before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import atexit  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

# Tests build the same tiny model, state and train step many times: JAX's compilation cache
# compiles each program once per session (and the subprocesses tests start, which inherit the
# variable, read the same cache). A fresh folder per session; JAX_COMPILATION_CACHE_DIR set
# by the caller is used as given (e.g. to keep it between runs).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="clipa_t5x_test_jax_cache_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Shared test builders (tests/helpers.py) importable as ``import helpers``.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402


@pytest.fixture
def clean_gin():
  """A gin registry without bindings before and after the test."""
  import gin  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def captured(monkeypatch):
  """Replaces stage training by a recorder: ``runner.run`` is exercised, nothing trains.

  Returns the list of ``(stage, previous_dir, kwargs)`` calls.
  """
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  calls = []

  def fake_train_stage(stage, previous_dir, **kwargs):
    calls.append((stage, previous_dir, kwargs))
    return {"stage": stage.name, "image_tokens": 0, "text_tokens": stage.text_length,
            "gflops_per_sample": 0.0, "seconds": 0.0, "zeroshot_top1": None}

  monkeypatch.setattr(runner, "train_stage", fake_train_stage)
  # Recipes sized for pods: their settings are checked, not their data or memory here.
  from clipa_t5x import memory, preflight  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(preflight, "check_train_data", lambda *args, **kwargs: None)
  monkeypatch.setattr(memory, "check_fits", lambda *args, **kwargs: None)
  return calls
