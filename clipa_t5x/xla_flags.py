"""XLA compiler flags that clipa_t5x sets for itself, per platform.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so the entry
points (``train``, ``eval``, ``infer``) and the benchmarks call
``apply_default_flags()`` before anything touches a JAX backend. It adds this
platform's defaults to ``XLA_FLAGS`` and logs what the process runs with.

Beside the flags, ``MODEL_DEFAULTS`` says which fused kernels
(``ClipaConfig.norm_impl`` / ``mlp_impl``) a model left at 'auto' uses on
each platform; ``apply_default_flags`` logs them too. Both tables are filled
from measurements: ``bench/gpu_sweep.py`` prints the GPU entries to paste
(docs/gpu.md). A model option set explicitly (gin:
``configs.get_config.norm_impl = 'xla'``) always wins.

The user's ``XLA_FLAGS`` wins flag by flag: a default whose name already
appears there is not added (``XLA_FLAGS=--xla_cpu_enable_fast_math=false``
turns that one default off and keeps the others). ``CLIPA_T5X_XLA_DEFAULTS=0``
adds none (and 'auto' model options resolve to 'xla').

The platform is guessed without starting a backend: ``JAX_PLATFORMS`` when
set, else 'gpu' when a JAX CUDA/ROCm plugin is installed, 'tpu' when libtpu is,
else 'cpu'. XLA aborts the process on a flag it does not know, so defaults
only ever go to the jaxlib versions they were measured on.
"""

import importlib.util
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging

ENV = "XLA_FLAGS"
DISABLE_ENV = "CLIPA_T5X_XLA_DEFAULTS"
# Defaults per platform, with the oldest jaxlib (major, minor) they are known to
# exist in. CPU (measured in bench/README.md, 2-core AVX-512 Xeon, Mu/8):
# - the oneDNN custom call for every dot (the YNN dot fusion, which would
#   otherwise claim them, is left out of YNN's fusion-type list): the MLP's
#   tall-skinny matmuls run about as fast as torch's, ~12% on a block;
# - YNNPACK for reductions only (fusion type 'reduce'): XLA's own CPU code
#   splits a large reduction into a slow reduce-window, which made the bias
#   gradients (a sum over batch x tokens) ~14% of the masked step; a
#   [128, 32, 512] sum went from 15 ms to 0.7 ms. ('eltwise' as well was slower.)
# - fast math (NaN/Inf semantics stay honoured: XLA's honor_nans/honor_infs
#   default on), a few % on the elementwise ops.
DEFAULT_FLAGS: Dict[str, Tuple[Tuple[int, int], Tuple[str, ...]]] = {
    "cpu": ((0, 12), ("--xla_cpu_experimental_onednn_custom_call=true",
                      "--xla_cpu_experimental_ynn_fusion_type=reduce",
                      "--xla_cpu_enable_fast_math=true")),
    # GPU: nothing measured to win yet (bench/gpu_sweep.py measures
    # --xla_gpu_enable_cudnn_layer_norm and --xla_gpu_cudnn_gemm_fusion_level).
    "gpu": ((0, 0), ()),
    "tpu": ((0, 0), ()),
}
# What 'auto' model options become per platform (absent: 'xla', the plain path).
# GPU entries come from bench/gpu_sweep.py's "defaults to paste" line.
MODEL_DEFAULTS: Dict[str, Dict[str, str]] = {
    "cpu": {},
    "gpu": {},
    "tpu": {},
}
_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                "jax_rocm7_plugin", "jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13")


def flag_name(flag: str) -> str:
  """``--xla_foo=1`` → ``xla_foo``."""
  return flag.lstrip("-").split("=", 1)[0]


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # a parent package that is missing
    return False


def detect_platform(environ: Optional[Dict[str, str]] = None) -> str:
  """'cpu', 'gpu' or 'tpu', without starting a JAX backend."""
  environ = os.environ if environ is None else environ
  requested = (environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or "").strip()
  if requested:
    first = requested.split(",")[0].strip().lower()
    return {"cuda": "gpu", "rocm": "gpu"}.get(first, first)
  if any(_installed(m) for m in _GPU_PLUGINS):
    return "gpu"
  if _installed("libtpu"):
    return "tpu"
  return "cpu"


def _jaxlib_version() -> Tuple[int, int]:
  try:
    import jaxlib.version  # pylint: disable=import-outside-toplevel
    return tuple(int(p) for p in jaxlib.version.__version__.split(".")[:2])
  except Exception:  # pylint: disable=broad-except  (no jaxlib, odd version string)
    return (0, 0)


def default_flags(platform: str, jaxlib_version: Optional[Tuple[int, int]] = None
                  ) -> Tuple[str, ...]:
  """This platform's default flags, or none if this jaxlib predates them."""
  since, flags = DEFAULT_FLAGS.get(platform, ((0, 0), ()))
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  return flags if version >= since else ()


def defaults_enabled(environ: Optional[Dict[str, str]] = None) -> bool:
  """False when ``CLIPA_T5X_XLA_DEFAULTS`` turns the platform defaults off."""
  environ = os.environ if environ is None else environ
  return environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def model_defaults(platform: str) -> Dict[str, str]:
  """The model options 'auto' stands for on ``platform`` (empty when defaults are off)."""
  return dict(MODEL_DEFAULTS.get(platform, {})) if defaults_enabled() else {}


def merge_flags(user: str, defaults: Sequence[str]) -> Tuple[str, List[str]]:
  """``XLA_FLAGS`` with the defaults the user did not set, and those added.

  Args:
    user: the environment's ``XLA_FLAGS`` (may be empty).
    defaults: flags like ``--name=value``.

  Returns:
    ``(new XLA_FLAGS value, the defaults added)``.
  """
  given = {flag_name(f) for f in user.split()}
  added = [f for f in defaults if flag_name(f) not in given]
  return " ".join(user.split() + added), added


def _backend_started() -> bool:
  jax = sys.modules.get("jax")
  if jax is None:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # pylint: disable=broad-except  (private API moved)
    return False


def apply_default_flags(platform: Optional[str] = None, log=logging.info) -> List[str]:
  """Adds the platform's default flags to ``XLA_FLAGS``; returns those added.

  Call before the first JAX computation. Logs the platform, the defaults
  added and the resulting ``XLA_FLAGS``.

  Args:
    platform: 'cpu', 'gpu' or 'tpu'; default ``detect_platform()``.
    log: where the start-up line goes (absl's info log by default).
  """
  platform = platform or detect_platform()
  user = os.environ.get(ENV, "")
  if not defaults_enabled():
    log(f"XLA flags: defaults off ({DISABLE_ENV}=0, 'auto' model options are 'xla'); "
        f"{ENV}={user!r}")
    return []
  if _backend_started():
    log(f"XLA flags: a JAX backend already runs, so the {platform} defaults cannot take "
        f"effect; {ENV}={user!r}")
    return []
  value, added = merge_flags(user, default_flags(platform))
  if value != user:
    os.environ[ENV] = value
  kept = [f for f in default_flags(platform) if f not in added]
  log(f"XLA flags for {platform}: defaults added {added or 'none'}"
      + (f", overridden by the environment {[flag_name(f) for f in kept]}" if kept else "")
      + f"; {ENV}={value!r}; 'auto' model options: "
      + (", ".join(f"{k}={v}" for k, v in sorted(model_defaults(platform).items())) or "xla"))
  return added
