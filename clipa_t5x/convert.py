r"""Converts between clipa_t5x checkpoints and open_clip: ``python -m clipa_t5x.convert``.

Export a stage (its latest checkpoint) or one ``checkpoint_<step>`` to an
open_clip folder::

  clipa-convert to-open-clip --checkpoint /tmp/run/finetune \
      [--image_size 224] [--text_length 32] --out /tmp/clipa_open_clip
  # then, in PyTorch: open_clip.create_model('local-dir:/tmp/clipa_open_clip')

The model, resolution and text length come from the stage's
``model_config.json``; without one, name the architecture with ``--model_config H/14``
and give ``--image_size``.

Import open_clip CLIPA weights (an open_clip folder, or a weights file plus
``--model_config``, an open_clip model name such as ``ViT-H-14-CLIPA`` or a
model-config JSON) as a parameters-only checkpoint::

  clipa-convert from-open-clip \
      --weights open_clip_pytorch_model.bin --model_config ViT-H-14-CLIPA --out /tmp/h14

``/tmp/h14`` then serves as a stage's ``init_from`` or as ``CHECKPOINT_PATH``
of ``python -m clipa_t5x.eval``. Errors are one ``error:`` line, exit code 2.
"""

import argparse
import json
import os
import sys
import tempfile
from typing import List, Optional

from clipa_t5x import cli  # absl, gin and jax only: TF and torch stay unimported here
from clipa_t5x import model_dir  # os and re only
from clipa_t5x import paths  # TensorFlow (tf.io.gfile) only for gs://... paths


def to_open_clip(checkpoint: str, out: str, image_size: Optional[int] = None,
                 text_length: Optional[int] = None, model: Optional[str] = None,
                 overwrite: bool = False) -> str:
  """Exports a clipa_t5x checkpoint as an open_clip folder; returns the folder.

  Args:
    checkpoint: a stage directory (latest checkpoint) or ``.../checkpoint_<step>``.
    out: the open_clip folder to create.
    image_size: export resolution; default: the stage's ``image_size``.
    text_length: context length; default: the stage's ``text_length`` (the
      saved ``txt/pos_embedding`` length when ``model`` is given).
    model: a variant name ('H/14') for checkpoints without model_config.json.
    overwrite: replace a non-empty ``out``.
  """
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x.interop import open_clip  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import config_io  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  # Relative paths made absolute here: Orbax refuses them. gs://... is read as training
  # writes it; a remote --out is written locally first, then copied.
  checkpoint, out = paths.absolute(checkpoint), paths.absolute(out)
  if not paths.isdir(checkpoint):
    raise ValueError(f"no checkpoint directory {checkpoint!r}.")
  if model is not None:
    config = configs.get_config(model)
    if image_size is None:
      raise ValueError(f"--model_config {model} needs --image_size (the resolution to export "
                       "at).")
  else:
    stage = model_dir.stage_dir_of(checkpoint)
    record = config_io.read_model_config(stage)
    if record is None:
      raise ValueError(
          f"{stage} has no {model_dir.MODEL_CONFIG}; pass --model_config VARIANT (e.g. "
          "--model_config H/14) and --image_size.")
    config = record["model"]
    image_size = record["image_size"] if image_size is None else image_size
    text_length = record["text_length"] if text_length is None else text_length
  params, _, _ = checkpoints.load_params(checkpoint)
  if not paths.is_remote(out):
    return open_clip.export_open_clip(params, config, out, image_size, text_length,
                                      overwrite=overwrite)
  if paths.isdir(out) and paths.listdir(out) and not overwrite:
    raise ValueError(f"{out} is not empty; pass --overwrite to replace it.")
  with tempfile.TemporaryDirectory(prefix="clipa_export_") as tmp:
    local = open_clip.export_open_clip(params, config, os.path.join(tmp, "export"), image_size,
                                       text_length)
    paths.upload_tree(local, out)
  return out


def from_open_clip(weights: str, out: str, model_config: Optional[str] = None) -> str:
  """Imports open_clip CLIPA weights as a checkpoint; returns its path."""
  from clipa_t5x.interop import open_clip  # pylint: disable=import-outside-toplevel
  weights, out = paths.absolute(weights), paths.absolute(out)
  if model_config is not None and paths.is_remote(model_config):
    model_config = json.loads(paths.read_text(model_config))  # the importer takes a dict too
  with paths.LocalCopy(weights) as local:  # the weight readers take local files
    if not paths.is_remote(out):
      return open_clip.import_to_checkpoint(local, out, model_config)
    if paths.isdir(out) and paths.listdir(out):
      raise ValueError(f"{out} is not empty; choose a new directory for the imported weights.")
    with tempfile.TemporaryDirectory(prefix="clipa_import_") as tmp:
      checkpoint = open_clip.import_to_checkpoint(local, os.path.join(tmp, "import"),
                                                  model_config)
      paths.upload_tree(os.path.join(tmp, "import"), out)
  return paths.join(out, os.path.basename(checkpoint))


EXAMPLES = {
    "to-open-clip": "clipa-convert to-open-clip --checkpoint runs/demo_cpu/finetune "
                    "--out exported/",
    "from-open-clip": "clipa-convert from-open-clip --weights open_clip_pytorch_model.bin \\\n"
                      "    --model_config ViT-H-14-CLIPA --out imported/h14",
}


def _parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog="clipa-convert",
      description="Convert between clipa_t5x checkpoints and open_clip models.",
      example="\n".join(EXAMPLES.values()))
  sub = parser.add_subparsers(dest="command", required=True)
  to = sub.add_parser("to-open-clip", help="export a checkpoint to an open_clip folder",
                      example=EXAMPLES["to-open-clip"])
  to.add_argument("--checkpoint", required=True,
                  help="stage directory (latest checkpoint) or .../checkpoint_<step>")
  to.add_argument("--out", required=True, help="open_clip folder to create")
  to.add_argument("--image_size", type=int, default=None,
                  help="export resolution (default: the stage's)")
  to.add_argument("--text_length", type=int, default=None,
                  help="context length (default: the stage's)")
  to.add_argument("--model_config", default=None, deprecated=("--model",),
                  help="architecture (e.g. H/14) for checkpoints without model_config.json")
  to.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
  frm = sub.add_parser("from-open-clip", help="import open_clip CLIPA weights as a checkpoint",
                       example=EXAMPLES["from-open-clip"])
  frm.add_argument("--weights", required=True,
                   help="open_clip folder, or a .safetensors/.bin/.pt/.pth/.npz file")
  frm.add_argument("--model_config", default=None,
                   help="architecture: open_clip model name (e.g. ViT-H-14-CLIPA) or "
                      "model-config JSON (none: the folder's open_clip_config.json)")
  frm.add_argument("--out", required=True, help="new directory for the checkpoint")
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  """Runs the CLI; returns the exit code (2 and one ``error:`` line on bad input)."""
  cli.quiet_startup()
  args = _parser().parse_args(argv)

  def command() -> None:
    if args.command == "to-open-clip":
      done = to_open_clip(args.checkpoint, args.out, args.image_size, args.text_length,
                          args.model_config, args.overwrite)
      print(f"wrote open_clip model to {done} (load with open_clip.create_model("
            f"'local-dir:{done}'))")
    else:
      done = from_open_clip(args.weights, args.out, args.model_config)
      print(f"wrote clipa_t5x checkpoint {done}")

  return cli.exit_code(command)


def console_main() -> None:
  """Entry point of the ``clipa-convert`` console script."""
  sys.exit(main())


if __name__ == "__main__":
  console_main()
