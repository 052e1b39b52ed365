"""Gin at the edge: t5x's flag conventions, search paths, ``config.gin``.

Library code never imports gin; gin files configure it through
``from __gin__ import dynamic_registration``. This module holds the few
functions the entry points need.
"""

import copy
import logging
import os
import re
from typing import Callable, List, Optional, Sequence

import gin
import jax

from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import paths

# The package's own gin folder (repository root /gin, or installed data).
_PACKAGE_GIN_DIRS = [
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin"),
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "gin"),
]


def _tolerant(exists: Callable[[str], bool]) -> Callable[[str], bool]:
  """An existence check that answers False instead of raising."""
  if getattr(exists, "_clipa_tolerant", False):
    return exists

  def check(path: str) -> bool:
    try:
      return exists(path)
    except (TypeError, ValueError, ImportError):
      return False
  check._clipa_tolerant = True
  return check


def _make_file_readers_tolerant() -> None:
  """Keeps gin's package-resource reader from crashing on namespace packages.

  gin also tries ``models/x.gin`` as "file x.gin of Python package models";
  when a directory named ``models`` without ``__init__.py`` is importable (a
  namespace package), its check raises TypeError and the whole parse fails.
  """
  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  readers[:] = [(reader, _tolerant(exists)) for reader, exists in readers]


def default_search_paths() -> List[str]:
  """Current directory, then the project's ``gin/`` folder."""
  return [os.getcwd()] + [d for d in _PACKAGE_GIN_DIRS if os.path.isdir(d)]


def rewrite_gin_args(argv: Sequence[str]) -> List[str]:
  """``--gin.KEY=VALUE`` → ``--gin_bindings=KEY = VALUE`` (t5x's shorthand)."""
  out = []
  for arg in argv:
    match = re.fullmatch(r"--gin\.([^=]+)=(.*)", arg, flags=re.DOTALL)
    out.append(f"--gin_bindings={match.group(1)} = {match.group(2)}" if match else arg)
  return out


def parse_gin_flags(gin_files: Sequence[str], gin_bindings: Sequence[str],
                    gin_search_paths: Sequence[str] = ()) -> None:
  """Parses files then bindings; errors name the binding and the file.

  Raises:
    FileNotFoundError: a gin file is in none of the search paths.
    ValueError: unknown configurable or parameter, bad syntax (gin's message
      carries the file and line).
  """
  if not gin_files:
    raise ValueError("no --gin_file given; e.g. --gin_file=gin/runs/demo_cpu.gin")
  for binding in gin_bindings:
    check_binding_value(binding)
  _make_file_readers_tolerant()
  search_paths = list(gin_search_paths) + default_search_paths()
  for path in reversed(search_paths):
    gin.add_config_file_search_path(path)
  for name in gin_files:
    if not os.path.isabs(name) and not any(
        os.path.exists(os.path.join(p, name)) for p in search_paths):
      if not os.path.exists(name):
        raise FileNotFoundError(
            f"gin file {name!r} not found in {search_paths}; check the path or add "
            "--gin_search_paths.")
  # gin logs an ERROR for every search path an include is *not* found in,
  # before it finds it in the next; silence that noise, real failures raise.
  logging.disable(logging.ERROR)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings),
                                        finalize_config=True)
  except (ValueError, KeyError, SyntaxError, ImportError, IOError) as e:
    raise ValueError(f"gin configuration error: {error_line(e)}") from e
  finally:
    logging.disable(logging.NOTSET)


# ``KEY = VALUE`` of one binding (``include`` / ``import`` lines do not match).
_BINDING = re.compile(r"\s*([\w./%]+)\s*=\s*(.*?)\s*", flags=re.DOTALL)
# A value the shell left without quotes: a word, path or URL, no brackets or quotes.
_BARE_WORD = re.compile(r"[^\s'\"\[\](){},@%]+")


def check_binding_value(binding: str) -> None:
  """Fails on a binding whose value gin cannot parse, naming the binding.

  The usual case is a string without its inner quotes (``--gin.MODEL_DIR=runs/x``:
  the shell ate the only quotes); gin itself only says "Unable to parse value".

  Raises:
    ValueError: the value is not a gin value (literal, ``%MACRO`` or ``@ref``).
  """
  match = _BINDING.fullmatch(binding)
  if not match:
    return
  key, value = match.groups()
  try:
    gin.config.parse_value(value)
  except ValueError:
    pass  # an @reference to a configurable registered later: gin checks it in context
  except Exception as e:  # pylint: disable=broad-except  (SyntaxError, tokenize.TokenError)
    if _BARE_WORD.fullmatch(value):
      raise ValueError(
          f"gin binding {key} = {value}: a string value needs quotes that reach gin, inside "
          f"the shell's: --gin.{key}=\"'{value}'\" (or {key} = '{value}' in a gin file)."
      ) from None
    raise ValueError(f"gin binding {key} = {value}: the value does not parse "
                     f"({error_line(e)}).") from None


def error_line(error: BaseException) -> str:
  """``error``'s message on one line, without gin's "In call to configurable" notes.

  Args:
    error: any exception, possibly re-raised by gin with call-site lines added.

  Returns:
    The message's non-empty lines joined with `` | ``.
  """
  lines = (line.strip() for line in str(error).splitlines())
  return " | ".join(line for line in lines
                    if line and not line.startswith("In call to configurable"))


def configured(fn: Callable) -> Callable:
  """The gin-configured version of ``fn``; missing REQUIRED values read clearly."""
  bound = gin.get_configurable(fn)

  def call(*args, **kwargs):
    try:
      return bound(*args, **kwargs)
    except RuntimeError as e:
      # gin's message: "Required bindings for `fn` not provided in config: [...]".
      if "gin.REQUIRED" in str(e) or "Required bindings for" in str(e):
        raise ValueError(f"gin configuration error: {error_line(e)}; set it with "
                         "--gin.NAME=VALUE or in a gin file.") from e
      raise
    except TypeError as e:
      # Only ``fn``'s own unbound parameters; a TypeError from inside it is a bug.
      if str(e).startswith((f"{fn.__qualname__}() missing", f"{fn.__name__}() missing")):
        raise ValueError(f"gin configuration error: {error_line(e)}; bind it in a gin file "
                         "or with --gin_bindings.") from e
      raise
  return call


def query_macro(name: str) -> str:
  """The value of a gin macro such as ``MODEL_DIR``; a clear error if unset."""
  try:
    value = gin.query_parameter(f"%{name}")
  except ValueError:
    raise ValueError(f"gin macro {name} is not defined; pass --gin.{name}=... "
                     "(strings quoted: --gin.MODEL_DIR=\"'/tmp/run'\").") from None
  # Copying evaluates references (``NAME = %OTHER``, ``%gin.REQUIRED``), as gin does
  # for a configurable's arguments.
  if value is not gin.REQUIRED:
    value = copy.deepcopy(value)
  if value is None or value is gin.REQUIRED:
    raise ValueError(f"{name} is required; pass --gin.{name}=\"'...'\".")
  return value


def make_path_macros_absolute(*names: str) -> None:
  """Rebinds each named string macro that holds a relative local path to its absolute form.

  Orbax refuses relative checkpoint paths; a user types ``runs/demo_cpu/finetune``.
  Unset macros, non-strings and remote paths (``gs://``) are left as they are.
  """
  from clipa_t5x import paths  # pylint: disable=import-outside-toplevel
  for name in names:
    try:
      value = copy.deepcopy(gin.query_parameter(f"%{name}"))
    except ValueError:
      continue  # not defined
    if isinstance(value, str) and value and paths.absolute(value) != value:
      with gin.unlock_config():
        gin.parse_config(f"{name} = {paths.absolute(value)!r}")


def check_same_config(model_dir: str, allow_change: bool = False) -> None:
  """Refuses to train into a ``MODEL_DIR`` that holds a run with another config.

  Rerunning the same command (to resume) passes; anything else would mix two
  experiments in one directory. With ``allow_change`` the old config is kept
  as ``config.previous.gin`` and training goes on.
  """
  path = os.path.join(model_dir, model_dir_lib.CONFIG_GIN)
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = f.read()
  new = gin.config_str()
  if old == new:
    return
  if allow_change:
    if jax.process_index() == 0:
      os.replace(path, os.path.join(model_dir, model_dir_lib.CONFIG_PREVIOUS_GIN))
    return
  old_lines, new_lines = old.splitlines(), new.splitlines()
  first = next((n for n in new_lines if n not in old_lines),
               next((o for o in old_lines if o not in new_lines), ""))
  raise ValueError(
      f"MODEL_DIR {model_dir!r} holds a run with a different config (e.g. now {first.strip()!r}); "
      "use another MODEL_DIR, or pass --allow_config_change to continue it anyway.")


def write_config(model_dir: str) -> None:
  """Writes the resolved gin config to ``MODEL_DIR/config.gin`` (host 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(model_dir, exist_ok=True)
  paths.write_text_atomic(os.path.join(model_dir, model_dir_lib.CONFIG_GIN), gin.config_str())


def maybe_initialize_distributed(coordinator_address: Optional[str],
                                 process_count: Optional[int],
                                 process_index: Optional[int],
                                 auto: bool = False) -> None:
  """Starts ``jax.distributed`` for a multi-host run.

  Either all three of coordinator address, process count and index are given
  (any cluster), or ``auto`` lets jax find them (TPU pods, Slurm, Open MPI).
  """
  if auto and coordinator_address is None and process_count is None:
    jax.distributed.initialize()
    return
  if coordinator_address is None and process_count is None:
    return
  if coordinator_address is None or process_count is None or process_index is None:
    raise ValueError("multi-host needs --coordinator_address, --process_count and "
                     "--process_index together.")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=process_count, process_id=process_index)
