"""The argparse side of the command line: help that shows defaults and an example, and
one vocabulary of flag names with the old names still accepted.

Standard library only, so every layer's command-line tool (``infer``,
``convert``, ``data/make_shards``) builds its parser here; ``cli`` re-exports
``ArgumentParser`` and renders the absl (gin) entry points' help the same way.
"""

import argparse
import copy
import sys
from typing import Any, Optional, Sequence

# ----------------------------------------------------------- help and names
# One vocabulary across the tools (README "Command-line tools"):
#   --checkpoint     a model to load: MODEL_DIR, stage folder, checkpoint_<step>, export
#   --model_config   an architecture: a variant ('H/14') or an open_clip model name / JSON
#   --input / --out  what is read / what is written
#   --image_size, --text_length, --batch_size, --num_workers, --no_progress
# Old names keep working for a while, with a one-line warning (``deprecated=``).


def default_text(value: Any) -> str:
  """How a default reads in help: none, on/off, a,b or the value."""
  if value is None:
    return "none"
  if isinstance(value, bool):
    return "on" if value else "off"
  if isinstance(value, (list, tuple)):
    return ",".join(map(str, value)) or "none"
  return str(value)


def example_epilog(example: str) -> str:
  """The text every ``--help`` ends with: ``example:`` and the indented command(s)."""
  body = "\n".join("  " + line if line else "" for line in example.strip("\n").splitlines())
  return f"example:\n{body}"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """Every option's help shows its default (or that it is required); line breaks of the
  description and the example are kept; deprecated names are not listed."""

  def _get_help_string(self, action: argparse.Action) -> str:
    text = action.help or ""
    if not action.option_strings or "default" in text or action.default is argparse.SUPPRESS:
      return text
    if action.required or getattr(action, "clipa_required", False):
      return f"{text} (required)"
    default = default_text(action.default).replace("%", "%%")  # argparse %-formats help
    return f"{text} (default: {default})"

  def _format_action_invocation(self, action: argparse.Action) -> str:
    return super()._format_action_invocation(_shown(action))

  def _format_usage(self, usage, actions, groups, prefix):
    return super()._format_usage(usage, [_shown(a) for a in actions], groups, prefix)


def _shown(action: argparse.Action) -> argparse.Action:
  """``action`` as help shows it: without its deprecated names."""
  hidden = getattr(action, "clipa_deprecated", None)
  if not hidden:
    return action
  action = copy.copy(action)
  action.option_strings = [s for s in action.option_strings if s not in hidden]
  return action


class ArgumentParser(argparse.ArgumentParser):
  """argparse with the project's help (defaults, an example) and deprecated names.

  ``add_argument(..., deprecated=("--old",))`` accepts ``--old`` as well, printing
  ``warning: --old is deprecated; use --new.`` once per use. Subcommand parsers made by
  ``add_subparsers().add_parser`` are of this class too.
  """

  def __init__(self, *args, example: Optional[str] = None, **kwargs):
    kwargs.setdefault("formatter_class", HelpFormatter)
    if example is not None:
      kwargs["epilog"] = example_epilog(example)
    super().__init__(*args, **kwargs)
    self._renamed = {}  # old option string -> new

  def add_argument(self, *names, deprecated: Sequence[str] = (), **kwargs):
    action = super().add_argument(*names, *deprecated, **kwargs)
    if deprecated:
      action.clipa_deprecated = set(deprecated)
      for old in deprecated:
        self._renamed[old] = names[0]
    return action

  def parse_known_args(self, args=None, namespace=None):
    for token in (sys.argv[1:] if args is None else args):
      if not isinstance(token, str):
        continue
      if token == "--":
        break
      old = token.split("=", 1)[0]
      if old in self._renamed:
        print(f"warning: {old} is deprecated; use {self._renamed[old]}.", file=sys.stderr)
    return super().parse_known_args(args, namespace)
