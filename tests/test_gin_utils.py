"""Tests of clipa_t5x.gin_utils with throwaway gin files and functions."""

import os
import sys
import textwrap
import types

import gin
import pytest

from clipa_t5x import gin_utils

# A test-local module that gin files import with dynamic registration.
_TARGETS = "clipa_gin_test_targets"


def _train(model_dir, steps=1):
  return model_dir, steps


def _run(*, model_dir, steps=1):
  return model_dir, steps


def _broken(steps=1):
  return len(steps)  # TypeError from inside the function, not a config mistake


def _make_targets_module() -> types.ModuleType:
  module = types.ModuleType(_TARGETS)
  for name, fn in (("train", _train), ("run", _run), ("broken", _broken)):
    fn.__module__ = _TARGETS
    fn.__name__ = fn.__qualname__ = name
    setattr(module, name, fn)
  return module


targets = sys.modules.setdefault(_TARGETS, _make_targets_module())

HEADER = f"from __gin__ import dynamic_registration\nimport {_TARGETS}\n"


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _gin_file(directory, name: str, body: str) -> str:
  path = os.path.join(str(directory), name)
  with open(path, "w") as f:
    f.write(HEADER + textwrap.dedent(body))
  return path


# --------------------------------------------------------------------- flags
def test_rewrite_gin_args():
  argv = ["train.py", "--gin.MODEL_DIR=\"'/x'\"", "--gin_file=a.gin",
          "--gin.train.steps=3", "--gin.f.arg='a=b'", "positional", "--gin.NOVALUE",
          "--gin_bindings=X = 1"]
  assert gin_utils.rewrite_gin_args(argv) == [
      "train.py", "--gin_bindings=MODEL_DIR = \"'/x'\"", "--gin_file=a.gin",
      "--gin_bindings=train.steps = 3", "--gin_bindings=f.arg = 'a=b'", "positional",
      "--gin.NOVALUE", "--gin_bindings=X = 1"]


def test_rewrite_of_the_quoted_shell_form():
  # What the shell passes for --gin.MODEL_DIR="'/x'": the double quotes are gone.
  assert gin_utils.rewrite_gin_args(["--gin.MODEL_DIR='/x'"]) == [
      "--gin_bindings=MODEL_DIR = '/x'"]


# --------------------------------------------------------------------- parse
def test_parse_files_then_bindings(tmp_path):
  path = _gin_file(tmp_path, "ok.gin", f"""
      MODEL_DIR = '/from/file'
      {_TARGETS}.train.model_dir = %MODEL_DIR
      {_TARGETS}.train.steps = 3
      """)
  gin_utils.parse_gin_flags([path], [f"{_TARGETS}.train.steps = 7"])
  assert gin_utils.configured(targets.train)() == ("/from/file", 7)
  assert gin_utils.query_macro("MODEL_DIR") == "/from/file"


def test_relative_file_through_search_paths(tmp_path):
  _gin_file(tmp_path, "rel.gin", f"{_TARGETS}.train.steps = 5\n")
  gin_utils.parse_gin_flags(["rel.gin"], [f"{_TARGETS}.train.model_dir = 'd'"],
                            gin_search_paths=[str(tmp_path)])
  assert gin_utils.configured(targets.train)() == ("d", 5)


def test_missing_file_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="no_such_run.gin"):
    gin_utils.parse_gin_flags(["no_such_run.gin"], [], gin_search_paths=[str(tmp_path)])


def test_no_gin_file():
  with pytest.raises(ValueError, match="no --gin_file"):
    gin_utils.parse_gin_flags([], [])


def test_unknown_parameter_in_file_names_binding_and_file(tmp_path):
  path = _gin_file(tmp_path, "typo.gin", f"{_TARGETS}.train.stepz = 3\n")
  with pytest.raises(ValueError) as info:
    gin_utils.parse_gin_flags([path], [])
  message = str(info.value)
  assert "\n" not in message
  assert "stepz" in message and f"{_TARGETS}.train" in message
  assert "typo.gin" in message and "line 3" in message


def test_misspelled_binding_names_it(tmp_path):
  path = _gin_file(tmp_path, "ok.gin", f"{_TARGETS}.train.steps = 3\n")
  with pytest.raises(ValueError) as info:
    gin_utils.parse_gin_flags([path], [f"{_TARGETS}.trian.steps = 4"])
  message = str(info.value)
  assert f"{_TARGETS}.trian.steps = 4" in message
  assert "bindings" in message  # gin's name for the --gin_bindings "file"


@pytest.mark.parametrize("value", ["runs/my_run", "/tmp/run", "gs://bucket/run", "abc", "my-run"])
def test_unquoted_string_binding_shows_the_quoted_form(tmp_path, value):
  path = _gin_file(tmp_path, "ok.gin", f"{_TARGETS}.train.steps = 3\n")
  with pytest.raises(ValueError) as info:
    gin_utils.parse_gin_flags([path], [f"MODEL_DIR = {value}"])
  message = str(info.value)
  assert f"MODEL_DIR = {value}" in message
  assert f"--gin.MODEL_DIR=\"'{value}'\"" in message
  assert "Unable to parse" not in message


def test_binding_value_that_is_not_a_word_names_the_binding(tmp_path):
  path = _gin_file(tmp_path, "ok.gin", f"{_TARGETS}.train.steps = 3\n")
  with pytest.raises(ValueError, match=r"binding STEPS = \[1, 2: the value does not parse"):
    gin_utils.parse_gin_flags([path], ["STEPS = [1, 2"])


@pytest.mark.parametrize("binding", ["X = 3", "X = 'runs/a'", "X = %Y", "X = None",
                                     "X = {'image': 32, 'text': 8}", "X = [1e-3, 2]",
                                     "X = @some.Configurable()", "include 'runs/base.gin'"])
def test_valid_binding_values_pass_the_check(binding):
  gin_utils.check_binding_value(binding)


def test_bad_syntax_is_a_value_error(tmp_path):
  path = _gin_file(tmp_path, "syntax.gin", f"{_TARGETS}.train.steps = = 3\n")
  with pytest.raises(ValueError, match="syntax.gin"):
    gin_utils.parse_gin_flags([path], [])


# ------------------------------------------------------------------ REQUIRED
def test_unset_required_macro_names_it(tmp_path):
  path = _gin_file(tmp_path, "base.gin", f"""
      MODEL_DIR = %gin.REQUIRED
      {_TARGETS}.train.model_dir = %MODEL_DIR
      """)
  # parse_gin_flags finalises the config, so the unset macro is caught there,
  # before configured() can run the function with gin's placeholder.
  with pytest.raises(ValueError, match=r"MODEL_DIR.*gin\.REQUIRED"):
    gin_utils.parse_gin_flags([path], [])
  gin.clear_config()
  gin_utils.parse_gin_flags([path], ["MODEL_DIR = '/set'"])
  assert gin_utils.configured(targets.train)() == ("/set", 1)


def test_configured_required_argument_names_it(tmp_path):
  path = _gin_file(tmp_path, "run.gin", f"{_TARGETS}.run.steps = 2\n")
  gin_utils.parse_gin_flags([path], [])
  run = gin_utils.configured(targets.run)
  # Marked REQUIRED by the caller but not bound (gin's RuntimeError).
  with pytest.raises(ValueError, match="model_dir") as info:
    run(model_dir=gin.REQUIRED)
  assert "gin configuration error" in str(info.value)
  # Not bound at all: a keyword-only parameter without default.
  with pytest.raises(ValueError, match="model_dir"):
    run()
  assert run(model_dir="/m") == ("/m", 2)


def test_configured_keeps_type_errors_from_inside(tmp_path):
  path = _gin_file(tmp_path, "broken.gin", f"{_TARGETS}.broken.steps = 3\n")
  gin_utils.parse_gin_flags([path], [])
  with pytest.raises(TypeError):
    gin_utils.configured(targets.broken)()


# -------------------------------------------------------------------- macros
def test_query_macro(tmp_path):
  path = _gin_file(tmp_path, "m.gin", f"""
      BASE = '/runs/a'
      MODEL_DIR = %BASE
      {_TARGETS}.train.model_dir = %MODEL_DIR
      """)
  gin_utils.parse_gin_flags([path], [])
  assert gin_utils.query_macro("BASE") == "/runs/a"
  assert gin_utils.query_macro("MODEL_DIR") == "/runs/a"  # references are resolved
  with pytest.raises(ValueError, match="gin macro UNDEFINED is not defined"):
    gin_utils.query_macro("UNDEFINED")


def test_query_macro_required_without_finalize():
  gin.parse_config("MODEL_DIR = %gin.REQUIRED")
  with pytest.raises(ValueError, match="MODEL_DIR is required"):
    gin_utils.query_macro("MODEL_DIR")


# -------------------------------------------------------------------- output
def test_write_config(tmp_path):
  path = _gin_file(tmp_path, "w.gin", f"""
      MODEL_DIR = '/w'
      {_TARGETS}.train.model_dir = %MODEL_DIR
      {_TARGETS}.train.steps = 11
      """)
  gin_utils.parse_gin_flags([path], [])
  out_dir = tmp_path / "model" / "dir"
  gin_utils.write_config(str(out_dir))
  assert sorted(os.listdir(out_dir)) == ["config.gin"]
  text = (out_dir / "config.gin").read_text()
  assert "MODEL_DIR = '/w'" in text
  assert "steps = 11" in text
  # The written file parses back to the same configuration.
  gin.clear_config()
  gin_utils.parse_gin_flags([str(out_dir / "config.gin")], [])
  assert gin_utils.configured(targets.train)() == ("/w", 11)


def test_default_search_paths_start_with_cwd():
  paths = gin_utils.default_search_paths()
  assert paths[0] == os.getcwd()
  assert all(os.path.isdir(p) for p in paths[1:])


def test_maybe_initialize_distributed_validates_flags():
  gin_utils.maybe_initialize_distributed(None, None, None)  # single host: no-op
  with pytest.raises(ValueError, match="together"):
    gin_utils.maybe_initialize_distributed("host:1234", None, 0)


def test_check_same_config_refuses_another_run_unless_allowed(tmp_path):
  gin.clear_config()
  gin.bind_parameter("%MODEL_DIR", "a")
  gin_utils.write_config(str(tmp_path))
  gin_utils.check_same_config(str(tmp_path))  # same config: resuming is fine
  gin.clear_config()
  gin.bind_parameter("%MODEL_DIR", "b")
  with pytest.raises(ValueError, match="different config.*--allow_config_change"):
    gin_utils.check_same_config(str(tmp_path))
  gin_utils.check_same_config(str(tmp_path), allow_change=True)
  assert (tmp_path / "config.previous.gin").exists()
  gin.clear_config()


def test_make_path_macros_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = _gin_file(tmp_path, "paths.gin", """\
      REL = 'runs/demo/finetune'
      ABS = '/data/run'
      REMOTE = 'gs://bucket/run'
      NONE = None
      ALIAS = %REL
      """)
  gin_utils.parse_gin_flags([path], [])
  gin_utils.make_path_macros_absolute("REL", "ABS", "REMOTE", "NONE", "UNDEFINED")
  assert gin_utils.query_macro("REL") == str(tmp_path / "runs/demo/finetune")
  assert gin_utils.query_macro("ALIAS") == str(tmp_path / "runs/demo/finetune")
  assert gin_utils.query_macro("ABS") == "/data/run"
  assert gin_utils.query_macro("REMOTE") == "gs://bucket/run"
  assert gin.query_parameter("%NONE") is None


# ------------------------------------------------- settings nothing reads (issue #29)
H14 = "gin/runs/clipav2_h14_84_224.gin"


def _parse_recipe(*bindings):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  gin_utils.parse_gin_flags([os.path.join(repo, H14)], ["MODEL_DIR = 'x'", *bindings])


def _check(*bindings):
  from clipa_t5x import runner  # pylint: disable=import-outside-toplevel
  gin_utils.check_unused_bindings(["MODEL_DIR = 'x'", *bindings], [runner.run], ["MODEL_DIR"])


@pytest.mark.parametrize("wrong, right", [
    ("FINETUNE_224_BATCH_SIZE", "FT224_BATCH_SIZE"),
    ("FINETUNE_224_STEPS", "FT224_STEPS"),
    ("FINETUNE_224_WARMUP_STEPS", "FT224_WARMUP_STEPS"),
    ("PRETRAIN_BATCH_SIZ", "PRETRAIN_BATCH_SIZE"),
])
def test_a_misspelt_macro_is_an_error_naming_the_closest(clean_gin, wrong, right):
  _parse_recipe(f"{wrong} = 16")
  with pytest.raises(ValueError) as info:
    _check(f"{wrong} = 16")
  message = str(info.value)
  assert "\n" not in message
  assert f"--gin.{wrong} is not read" in message and f"{wrong} -> {right}?" in message


def test_a_binding_in_an_unknown_scope_is_an_error(clean_gin):
  _parse_recipe("finetune_244/runner.Stage.batch_size = 16")
  with pytest.raises(ValueError, match=r"finetune_244/runner.Stage.batch_size -> "
                                       r"finetune_224/runner.Stage.batch_size\?"):
    _check("finetune_244/runner.Stage.batch_size = 16")


def test_settings_used_by_any_stage_pass(clean_gin):
  used = ["FT224_BATCH_SIZE = 16",  # read only by the last stage
          "PRETRAIN_STEPS = 3",
          "runner.Stage.num_microbatches = 2",  # unscoped: applies inside both stage scopes
          "finetune_224/optimizers.OptimizerConfig.warmup_steps = 0",
          "configs.get_config.name = 'Mu/8'",
          "DATACOMP1B_DATA = '/data/*.tar'"]
  _parse_recipe(*used)
  _check(*used)


def test_an_unscoped_binding_every_scope_overrides_is_unused(clean_gin):
  _parse_recipe("optimizers.OptimizerConfig.warmup_steps = 3")
  with pytest.raises(ValueError, match="warmup_steps is not read"):
    _check("optimizers.OptimizerConfig.warmup_steps = 3")


def test_file_macros_may_go_unused_but_command_line_ones_may_not(clean_gin):
  _parse_recipe("EVALUATORS = []")
  _check("EVALUATORS = []")  # the file's IMAGENET_DATA is now unread: allowed
  gin.clear_config()
  _parse_recipe("EVALUATORS = []", "IMAGENET_DATA = '/imagenet'")
  with pytest.raises(ValueError, match=r"IMAGENET_DATA is not read .*switched off"):
    _check("EVALUATORS = []", "IMAGENET_DATA = '/imagenet'")


def test_closest_prefers_shared_words_and_abbreviations():
  names = ["PRETRAIN_BATCH_SIZE", "FT224_BATCH_SIZE", "FT224_STEPS", "EVAL_PERIOD"]
  assert gin_utils.closest("FINETUNE_224_BATCH_SIZE", names) == "FT224_BATCH_SIZE"
  assert gin_utils.closest("COMPLETELY_DIFFERENT", ["A", "B"]) is None
