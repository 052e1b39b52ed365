"""clipa_t5x.xla_flags: per-platform defaults, the environment winning per flag."""

import os
import subprocess
import sys

import pytest

from clipa_t5x import xla_flags


def test_merge_keeps_the_users_value_per_flag():
  value, added = xla_flags.merge_flags(
      "--xla_force_host_platform_device_count=4 --xla_cpu_enable_fast_math=false",
      ["--xla_cpu_enable_fast_math=true", "--xla_cpu_experimental_ynn_fusion_type="])
  assert added == ["--xla_cpu_experimental_ynn_fusion_type="]
  assert value.split() == ["--xla_force_host_platform_device_count=4",
                           "--xla_cpu_enable_fast_math=false",
                           "--xla_cpu_experimental_ynn_fusion_type="]
  assert xla_flags.merge_flags("", ["--a=1"]) == ("--a=1", ["--a=1"])
  assert xla_flags.flag_name("--xla_cpu_experimental_ynn_fusion_type=") == (
      "xla_cpu_experimental_ynn_fusion_type")


def test_defaults_per_platform_and_jaxlib_version():
  cpu = xla_flags.default_flags("cpu", (0, 12))
  assert "--xla_cpu_experimental_onednn_custom_call=true" in cpu
  assert xla_flags.default_flags("cpu", (0, 11)) == ()  # not known to exist there
  assert all(not f.startswith("--xla_cpu") for f in xla_flags.default_flags("gpu", (0, 12)))
  assert xla_flags.default_flags("weird", (9, 9)) == ()


def test_platform_from_the_environment():
  assert xla_flags.detect_platform({"JAX_PLATFORMS": "cpu"}) == "cpu"
  assert xla_flags.detect_platform({"JAX_PLATFORMS": "cuda,cpu"}) == "gpu"
  assert xla_flags.detect_platform({"JAX_PLATFORMS": "tpu"}) == "tpu"
  assert xla_flags.detect_platform({}) in ("cpu", "gpu", "tpu")


def test_apply_sets_the_environment_and_logs(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  monkeypatch.delenv(xla_flags.DISABLE_ENV, raising=False)
  monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
  monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (0, 12))
  lines = []
  added = xla_flags.apply_default_flags("cpu", log=lines.append)
  assert "--xla_cpu_experimental_onednn_custom_call=true" in added
  assert "--xla_cpu_enable_fast_math=true" not in added
  assert os.environ["XLA_FLAGS"].startswith("--xla_cpu_enable_fast_math=false ")
  assert "defaults added" in lines[0] and "xla_cpu_enable_fast_math" in lines[0]


def test_apply_does_nothing_when_disabled_or_too_late(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--x=1")
  monkeypatch.setenv(xla_flags.DISABLE_ENV, "0")
  lines = []
  assert xla_flags.apply_default_flags("cpu", log=lines.append) == []
  assert os.environ["XLA_FLAGS"] == "--x=1" and "off" in lines[0]
  monkeypatch.delenv(xla_flags.DISABLE_ENV)
  monkeypatch.setattr(xla_flags, "_backend_started", lambda: True)
  assert xla_flags.apply_default_flags("cpu", log=lines.append) == []
  assert os.environ["XLA_FLAGS"] == "--x=1" and "already runs" in lines[1]


def test_the_defaults_are_accepted_by_this_jaxlib_in_a_fresh_process():
  """XLA aborts on unknown flags: start a CPU backend with the defaults applied."""
  code = ("from clipa_t5x import xla_flags; added = xla_flags.apply_default_flags(log=print); "
          "import jax, jax.numpy as jnp; "
          "print('sum', float(jax.jit(lambda x: x @ x)(jnp.ones((64, 64))).sum())); "
          # Fast math must keep NaN/Inf semantics: the trainer checks losses for them.
          "x = jnp.asarray([0.0, 1.0, jnp.inf]); "
          "print('nan', jax.jit(lambda x: jnp.isnan(x * jnp.inf - 1.0))(x).tolist(), "
          "jax.jit(lambda x: jnp.isfinite(x / x))(x).tolist())")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  env.pop(xla_flags.DISABLE_ENV, None)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "sum 262144.0" in out.stdout
  assert "nan [True, False, False] [False, True, False]" in out.stdout
  assert "XLA flags for cpu" in out.stdout


def test_gpu_defaults_table_is_applied_and_logged_and_can_be_turned_off(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.delenv(xla_flags.DISABLE_ENV, raising=False)
  monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
  monkeypatch.setitem(xla_flags.DEFAULT_FLAGS, "gpu",
                      ((0, 0), ("--xla_gpu_enable_cudnn_layer_norm=true",)))
  monkeypatch.setitem(xla_flags.MODEL_DEFAULTS, "gpu", {"norm_impl": "pallas"})
  lines = []
  assert xla_flags.apply_default_flags("gpu", log=lines.append) == [
      "--xla_gpu_enable_cudnn_layer_norm=true"]
  assert "'auto' model options: norm_impl=pallas" in lines[0]
  assert xla_flags.model_defaults("gpu") == {"norm_impl": "pallas"}
  assert xla_flags.model_defaults("cpu") == {}
  monkeypatch.setenv(xla_flags.DISABLE_ENV, "off")
  assert xla_flags.model_defaults("gpu") == {}

