"""Gin at the edge: t5x's flag conventions, search paths, ``config.gin``.

Library code never imports gin; gin files configure it through
``from __gin__ import dynamic_registration``. This module holds the few
functions the entry points need.
"""

import copy
import logging
import os
import re
from typing import Callable, List, Optional, Sequence, Tuple

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
    if not os.path.isabs(name) and not os.path.exists(name) and not any(
        os.path.exists(os.path.join(p, name)) for p in search_paths):
      raise FileNotFoundError(f"gin file {name!r} not found in {search_paths}; check the path "
                              "or add --gin_search_paths.")
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


# ----------------------------------------------------------------- unknown settings
MACRO = "gin.macro"
# ``[scope/]selector.param = ...`` or ``MACRO = ...`` at the start of a binding.
_BINDING_KEY = re.compile(r"\s*([A-Za-z_][\w./]*)\s*=")


def _references(value):
  """Every ``@ref`` / ``%MACRO`` reference inside a bound value (lists, dicts, tuples)."""
  if isinstance(value, gin.config.ConfigurableReference):
    yield value
  elif isinstance(value, dict):
    for k, v in value.items():
      yield from _references(k)
      yield from _references(v)
  elif isinstance(value, (list, tuple, set, frozenset)):
    for v in value:
      yield from _references(v)


def _scope_parts(scope: str):
  return tuple(p for p in scope.split("/") if p)


def used_settings(roots: Sequence[Callable] = (), macros: Sequence[str] = ()) -> set:
  """``(scope, selector, param)`` of every binding a call of ``roots`` would read.

  Walks the parsed config from the roots the way gin evaluates it: a reference
  ``@a/fn()`` calls ``fn`` with scope ``a`` added to the active scopes; a
  binding applies where its scope's parts are all active and no more specific
  binding of the same parameter does; macros (``%X``) count where they are
  referenced. Everything gin files define (any stage, parsed up front) is seen,
  so a macro used only by the last stage counts as used. ``macros`` are read
  directly by the entry point (``MODEL_DIR``).
  """
  config = gin.config._CONFIG  # pylint: disable=protected-access
  by_selector = {}
  for (scope, selector), params in config.items():
    by_selector.setdefault(selector, []).append((set(_scope_parts(scope)), scope, params))
  used = set()
  seen = set()
  # (active scopes, selector, macro name or None)
  todo = [((), _selector_of(fn), None) for fn in roots] + [((), MACRO, m) for m in macros]
  while todo:
    item = todo.pop()
    if item in seen:
      continue
    seen.add(item)
    active, selector, macro = item
    if macro is not None:
      applicable = [(set(), macro, config[(macro, MACRO)])] if (macro, MACRO) in config else []
    else:
      applicable = [c for c in by_selector.get(selector, []) if c[0] <= set(active)]
    for param in {p for _, _, ps in applicable for p in ps}:
      # The most specific applicable binding wins (gin's rule for nested scopes).
      _, scope, bound = max((c for c in applicable if param in c[2]), key=lambda c: len(c[0]))
      used.add((scope, selector, param))
      for ref in _references(bound[param]):
        ref_scope, ref_selector = ref.config_key
        if ref_selector == MACRO:
          todo.append((active, MACRO, ref_scope))
        else:
          todo.append((active + _scope_parts(ref_scope), ref_selector, None))
  return used


def _selector_of(fn: Callable) -> str:
  return gin.config._REGISTRY.get_match(  # pylint: disable=protected-access
      f"{fn.__module__}.{fn.__qualname__}").selector


def _short(selector: str) -> str:
  """``clipa_t5x.runner.Stage`` -> ``runner.Stage`` (how gin files write it)."""
  return ".".join(selector.split(".")[-2:])


def _setting_name(scope: str, selector: str, param: str) -> str:
  if selector == MACRO:
    return scope
  return f"{scope + '/' if scope else ''}{_short(selector)}.{param}"


def _words(name: str) -> List[str]:
  return re.findall(r"[a-z]+|\d+", name.lower())


def _similarity(a: str, b: str) -> float:
  """How alike two setting names are: shared words (``224``, ``batch``) and spelling."""
  import difflib  # pylint: disable=import-outside-toplevel
  wa, wb = _words(a), _words(b)
  shared = len(set(wa) & set(wb)) / max(1, len(set(wa) | set(wb)))
  # An abbreviation (``ft``) matches a word it is the initials or prefix of (``finetune``).
  abbrev = sum(1 for x in set(wa) ^ set(wb) for y in set(wa) ^ set(wb)
               if x != y and len(x) <= 3 and y.startswith(x[0]) and set(x) <= set(y))
  return shared + 0.1 * min(abbrev, 2) + 0.5 * difflib.SequenceMatcher(None, a, b).ratio()


def closest(name: str, candidates: Sequence[str]) -> Optional[str]:
  """The candidate most like ``name`` (None when nothing is close)."""
  scored = sorted(((_similarity(name, c), c) for c in set(candidates) if c != name), reverse=True)
  return scored[0][1] if scored and scored[0][0] > 0.45 else None


def command_line_key(binding: str) -> Optional[Tuple[str, str, str]]:
  """``(scope, selector, param)`` a ``--gin_bindings`` entry sets; None for include/import."""
  match = _BINDING_KEY.match(binding)
  if not match or binding.strip().startswith(("include", "import", "from")):
    return None
  key = match.group(1)
  scope, _, rest = key.rpartition("/")
  if "." not in rest:
    return (rest, MACRO, "value")
  selector, _, param = rest.rpartition(".")
  found = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
  return (scope, found.selector if found else selector, param)


def check_unused_bindings(gin_bindings: Sequence[str], roots: Sequence[Callable],
                          macros: Sequence[str] = ()) -> None:
  """Stops on a command-line setting that nothing in the run reads.

  ``--gin.FINETUNE_224_BATCH_SIZE=16`` where the recipe's macro is
  ``FT224_BATCH_SIZE`` would otherwise be accepted silently and the recipe's
  own value used. Settings made in gin files may go unused (a recipe defines
  ``IMAGENET_DATA`` even with ``EVALUATORS = []``); only the command line's
  must be read.

  Args:
    gin_bindings: the ``--gin_bindings`` (``--gin.K=V``) strings, after parsing.
    roots: the configurables the entry point calls (``runner.run``).
    macros: macros the entry point reads itself.

  Raises:
    ValueError: naming the unused setting and the closest one that is used.
  """
  used = used_settings(roots, macros)
  used_names = [_setting_name(*k) for k in used]
  all_macros = [scope for scope, selector in gin.config._CONFIG  # pylint: disable=protected-access
                if selector == MACRO]
  referenced = {ref.config_key for params in gin.config._CONFIG.values()  # pylint: disable=protected-access
                for value in params.values() for ref in _references(value)}
  for binding in gin_bindings:
    key = command_line_key(binding)
    if key is None or key in used:
      continue
    name = _setting_name(*key)
    if key[1] == MACRO and (key[0], MACRO) in referenced:
      raise ValueError(
          f"--gin.{name} is not read by anything in this run: what reads it is switched off "
          f"(e.g. EVALUATORS = [] leaves IMAGENET_DATA unread); drop --gin.{name}.")
    pool = ([n for n in all_macros if n in used_names] or all_macros) if key[1] == MACRO \
        else [n for n in used_names if "." in n]
    hint = closest(name, pool)
    raise ValueError(
        f"--gin.{name} is not read by anything in this run"
        + (f" ({name} -> {hint}?)" if hint else "; check its spelling and scope")
        + "; settings given on the command line must be used.")
