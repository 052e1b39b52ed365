"""The command line's shared vocabulary and help (clipa_t5x.cli_help, cli.absl_help).

Every entry point's ``--help`` shows each option's default (or that it is
required) and ends with an example; renamed flags still parse, with one
warning line; every entry point has a console script.
"""

import argparse
import ast
import os
import re
import subprocess
import sys

import pytest

import entry_points
from clipa_t5x import cli_help
from clipa_t5x import convert
from clipa_t5x import eval as eval_cli
from clipa_t5x import infer
from clipa_t5x.data import make_shards

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"clipa-train": "clipa_t5x.train", "clipa-eval": "clipa_t5x.eval",
           "clipa-infer": "clipa_t5x.infer", "clipa-convert": "clipa_t5x.convert",
           "clipa-plan": "clipa_t5x.plan", "clipa-make-shards": "clipa_t5x.data.make_shards"}


def _subparsers(parser: argparse.ArgumentParser):
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      yield from action.choices.values()


def _argparse_helps():
  """``(name, help text)`` of every argparse parser and subcommand."""
  for name, parser in (("infer", infer.build_parser()), ("convert", convert._parser()),
                       ("make_shards", make_shards.build_parser())):
    yield name, parser.format_help()
    for sub in _subparsers(parser):
      yield sub.prog, sub.format_help()


def _option_entries(text: str):
  """Each option's entry (its lines joined) in an argparse or absl help text."""
  entries, current = [], None
  for line in text.split("example:")[0].splitlines():
    if re.match(r"^  (-\w, )?--", line):
      current = [line]
      entries.append(current)
    elif current is not None and line.startswith("      ") and line.strip():
      current.append(line)
    else:
      current = None
  return [" ".join(" ".join(e).split()) for e in entries]


def _assert_defaults_and_example(name: str, text: str) -> None:
  entries = _option_entries(text)
  assert entries, f"{name}: no options found in\n{text}"
  for entry in entries:
    if entry.startswith("-h, --help"):
      continue
    assert "default" in entry or "(required)" in entry, f"{name}: {entry!r} shows no default"
  tail = text.rstrip().split("\n\n")[-1]
  assert tail.startswith("example:\n  clipa-"), f"{name} does not end with an example:\n{text}"


@pytest.mark.parametrize("name,text", list(_argparse_helps()), ids=lambda x: x[:20])
def test_argparse_help_shows_defaults_and_ends_with_an_example(name, text):
  _assert_defaults_and_example(name, text)


@pytest.mark.parametrize("module", ["clipa_t5x.train", "clipa_t5x.eval", "clipa_t5x.plan"])
def test_gin_entry_point_help_shows_defaults_and_ends_with_an_example(module):
  proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  _assert_defaults_and_example(module, proc.stdout)
  assert "--gin_file" in proc.stdout and "--gin.KEY=VALUE" in proc.stdout


def test_help_marks_required_and_hides_deprecated_names():
  sub = {p.prog.split()[-1]: p for p in _subparsers(infer.build_parser())}
  help_text = sub["classify"].format_help()
  assert "--checkpoint CHECKPOINT" in help_text
  assert "--model " not in help_text and "--config " not in help_text
  assert re.search(r"--class_names CLASS_NAMES\s+.*\(required\)", help_text, re.S)


@pytest.mark.parametrize("argv,dest,value,old,new", [
    (["embed-texts", "--model", "run", "--input", "c.txt", "--out", "o.npy"],
     "checkpoint", "run", "--model", "--checkpoint"),
    (["embed-texts", "--checkpoint", "run", "--config=H/14", "--input", "c", "--out", "o"],
     "model_config", "H/14", "--config", "--model_config"),
    (["embed-texts", "--checkpoint", "run", "--reduction", "syntax", "--input", "c",
      "--out", "o"], "text_reduction", "syntax", "--reduction", "--text_reduction"),
])
def test_infer_old_names_parse_and_warn(capsys, argv, dest, value, old, new):
  args = infer.build_parser().parse_args(argv)
  assert getattr(args, dest) == value
  err = capsys.readouterr().err
  assert err.strip() == f"warning: {old} is deprecated; use {new}."


def test_convert_and_make_shards_old_names_parse_and_warn(capsys):
  args = convert._parser().parse_args(["to-open-clip", "--checkpoint", "c", "--out", "o",
                                       "--model", "H/14"])
  assert args.model_config == "H/14"
  assert "warning: --model is deprecated; use --model_config." in capsys.readouterr().err
  args = make_shards.build_parser().parse_args(["--input", "i", "--out", "o", "--quiet",
                                                "--workers", "3"])
  assert args.no_progress and args.num_workers == 3
  err = capsys.readouterr().err.splitlines()
  assert err == ["warning: --quiet is deprecated; use --no_progress.",
                 "warning: --workers is deprecated; use --num_workers."]


def test_new_names_do_not_warn_and_required_still_required(capsys):
  infer.build_parser().parse_args(["classify", "--checkpoint", "r", "--input", "i", "--out",
                                   "o.csv", "--class_names", "a,b"])
  assert capsys.readouterr().err == ""
  with pytest.raises(SystemExit):
    infer.build_parser().parse_args(["classify", "--input", "i", "--out", "o.csv",
                                     "--class_names", "a,b"])
  assert "--checkpoint" in capsys.readouterr().err


def test_one_vocabulary_across_the_argparse_tools():
  # The model to load is --checkpoint, an architecture --model_config, everywhere.
  helps = dict(_argparse_helps())
  for name, text in helps.items():
    assert not re.search(r"--model\b(?!_)", text), name
    assert not re.search(r"--config\b", text), name
  assert "--checkpoint" in helps["clipa-infer classify"]
  assert "--checkpoint" in helps["clipa-convert to-open-clip"]
  assert "--model_config" in helps["clipa-convert from-open-clip"]


def test_epilog_and_default_text():
  assert cli_help.example_epilog("a \\\n    b\n") == "example:\n  a \\\n      b"
  assert [cli_help.default_text(v) for v in (None, True, False, [], ["a", "b"], 3)] == [
      "none", "on", "off", "none", "a,b", "3"]


def _declared_scripts():
  tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == "entry_points":
      scripts = ast.literal_eval(node.value)["console_scripts"]
      return dict(s.replace(" ", "").split("=") for s in scripts)
  raise AssertionError("setup.py declares no entry_points")


def test_every_entry_point_has_a_console_script():
  declared = _declared_scripts()
  assert declared == {name: f"{module}:console_main" for name, module in SCRIPTS.items()}
  for module in SCRIPTS.values():  # read, not imported: train/eval/plan define the same flags
    path = os.path.join(REPO, *module.split(".")) + ".py"
    tree = ast.parse(open(path, encoding="utf-8").read())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "console_main" for n in tree.body), (
        module)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_installed_console_scripts_run(script):
  path = os.path.join(os.path.dirname(sys.executable), script)
  if not os.path.exists(path):
    pytest.skip(f"{script} is not installed (pip install -e . installs it)")
  proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "example:" in proc.stdout and script in proc.stdout


def test_eval_checkpoint_flag_is_the_checkpoint_path(tmp_path):
  # --checkpoint=PATH means --gin.CHECKPOINT_PATH="'PATH'": a missing one is named.
  line = entry_points.error_line(entry_points.run(
      eval_cli, "--gin_file=runs/eval_demo.gin", f"--checkpoint={tmp_path}/no_such_run"))
  assert line.startswith("error: CHECKPOINT_PATH: ") and "no_such_run" in line, line
