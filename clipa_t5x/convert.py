r"""Converts between clipa_t5x, open_clip and the official CLIPA JAX weights.

``python -m clipa_t5x.convert``. Export any model reference (a run, a stage,
one ``checkpoint_<step>``, an official CLIPA JAX ``.npz``) to an open_clip
folder::

  clipa-convert to-open-clip --checkpoint /tmp/run/finetune \
      [--image_size 224] [--text_length 32] --out /tmp/clipa_open_clip
  # then, in PyTorch: open_clip.create_model('local-dir:/tmp/clipa_open_clip')

The model, resolution and text length come from the source's record
(``model_config.json``; the shapes of an ``.npz``); without one, name the
architecture with ``--model_config H/14`` and give ``--image_size``.

Import open_clip CLIPA weights (an open_clip folder, or a weights file plus
``--model_config``, an open_clip model name such as ``ViT-H-14-CLIPA`` or a
model-config JSON) as a parameters-only checkpoint::

  clipa-convert from-open-clip \
      --weights open_clip_pytorch_model.bin --model_config ViT-H-14-CLIPA --out /tmp/h14

or an official CLIPA JAX checkpoint::

  python -m clipa_t5x.convert from-clipa-jax --weights clipa_h14_224.npz --out /tmp/h14

``/tmp/h14`` then serves as a stage's ``init_from`` or as ``CHECKPOINT_PATH``
of ``python -m clipa_t5x.eval`` (both also take the sources directly).
Errors are one ``error:`` line, exit code 2.
"""

import json
import os
import sys
import tempfile
from typing import Callable, List, Optional

from clipa_t5x import cli  # absl, gin and jax only: TF and torch stay unimported here
from clipa_t5x import paths  # TensorFlow (tf.io.gfile) only for gs://... paths


def to_open_clip(checkpoint: str, out: str, image_size: Optional[int] = None,
                 text_length: Optional[int] = None, model: Optional[str] = None,
                 overwrite: bool = False) -> str:
  """Exports any model reference as an open_clip folder; returns the folder.

  Args:
    checkpoint: any reference of ``model_refs`` (a run, stage or
      ``checkpoint_<step>`` directory, an open_clip folder, an official
      CLIPA JAX ``.npz``).
    out: the open_clip folder to create.
    image_size: export resolution; default: the source's recorded one.
    text_length: context length; default: the source's text position length.
    model: a variant name ('H/14') for sources that record no model.
    overwrite: replace a non-empty ``out``.
  """
  from clipa_t5x import model_refs  # pylint: disable=import-outside-toplevel
  from clipa_t5x.interop import open_clip  # pylint: disable=import-outside-toplevel
  # A remote --out is written locally first, then copied.
  out = paths.absolute(out)
  ref = model_refs.describe(checkpoint, model)
  image_size = image_size or ref.image_size
  if image_size is None:
    raise ValueError(f"{ref.path} records no resolution; pass --image_size (the resolution "
                     "to export at).")
  if paths.isdir(out) and paths.listdir(out) and not overwrite:
    raise ValueError(f"{out} is not empty; pass --overwrite to replace it.")
  params, ref = model_refs.load(ref.path, ref.config)
  text_length = text_length or ref.text_length
  return _write_to(out, lambda folder: open_clip.export_open_clip(
      params, ref.config, folder, image_size, text_length, overwrite=overwrite))


def _write_to(out: str, write: Callable[[str], str]) -> str:
  """``write(out)``, the path it returns; a remote ``out`` is written locally, then copied."""
  if not paths.is_remote(out):
    return write(out)
  with tempfile.TemporaryDirectory(prefix="clipa_convert_") as tmp:
    local = os.path.join(tmp, "out")
    written = os.path.relpath(write(local), local)
    paths.upload_tree(local, out)
  return out if written == "." else paths.join(out, written)


def to_checkpoint(source: str, out: str, model: Optional[str] = None,
                  image_size: Optional[int] = None) -> str:
  """Writes any model reference as a parameters-only clipa_t5x checkpoint; returns its path.

  ``out/checkpoint_0`` plus ``out/model_config.json``: ``out`` then serves as a
  stage's ``init_from`` or as ``CHECKPOINT_PATH`` of ``python -m clipa_t5x.eval``.

  Args:
    source: an open_clip folder or weights file, an official CLIPA JAX
      ``.npz``, or any other reference of ``model_refs``.
    out: a new (or empty) directory.
    model: the model of a source that records none: an open_clip model name
      (``ViT-H-14-CLIPA``), a model-config JSON, or a variant (``H/14``).
    image_size: the resolution to record; default: the source's, else 224.
  """
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x import model_refs  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import config_io  # pylint: disable=import-outside-toplevel
  out = paths.absolute(out)
  if model is not None and paths.is_remote(model):
    model = json.loads(paths.read_text(model))  # the open_clip importer takes a dict too
  if paths.isdir(out) and paths.listdir(out):
    raise ValueError(f"{out} is not empty; choose a new directory for the converted weights.")
  params, ref = model_refs.load(source, model)
  meta = {"format": ref.kind, "path": ref.path}
  if isinstance(model, str):
    meta["model_config"] = model

  def write(directory: str) -> str:
    ckpt = checkpoints.save_params(directory, params, 0, meta={"source": meta})
    config_io.write_model_config(directory, ref.config, image_size or ref.image_size or 224,
                                 ref.text_length, source=meta)
    return ckpt

  return _write_to(out, write)


EXAMPLES = {
    "to-open-clip": "clipa-convert to-open-clip --checkpoint runs/demo_cpu/finetune "
                    "--out exported/",
    "from-open-clip": "clipa-convert from-open-clip --weights open_clip_pytorch_model.bin \\\n"
                      "    --model_config ViT-H-14-CLIPA --out imported/h14",
    "from-clipa-jax": "clipa-convert from-clipa-jax --weights clipa_h14_224.npz --out imported/h14",
}


def _parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog="clipa-convert",
      description="Convert between clipa_t5x checkpoints, open_clip models and the official "
                  "CLIPA JAX weights.",
      example="\n".join(EXAMPLES.values()))
  sub = parser.add_subparsers(dest="command", required=True)
  to = sub.add_parser("to-open-clip", help="export a checkpoint to an open_clip folder",
                      example=EXAMPLES["to-open-clip"])
  to.add_argument("--checkpoint", required=True,
                  help="run, stage or checkpoint_<step> directory, open_clip folder, or "
                       "official CLIPA JAX .npz")
  to.add_argument("--out", required=True, help="open_clip folder to create")
  to.add_argument("--image_size", type=int, default=None,
                  help="export resolution (default: the stage's)")
  to.add_argument("--text_length", type=int, default=None,
                  help="context length (default: the stage's)")
  to.add_argument("--model_config", default=None, deprecated=("--model",),
                  help="architecture (e.g. H/14) for sources that record no model")
  to.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
  frm = sub.add_parser("from-open-clip", help="import open_clip CLIPA weights as a checkpoint",
                       example=EXAMPLES["from-open-clip"])
  frm.add_argument("--weights", required=True,
                   help="open_clip folder, or a .safetensors/.bin/.pt/.pth/.npz file")
  frm.add_argument("--model_config", default=None,
                   help="architecture: open_clip model name (e.g. ViT-H-14-CLIPA) or "
                        "model-config JSON (none: the folder's open_clip_config.json)")
  frm.add_argument("--out", required=True, help="new directory for the checkpoint")
  jx = sub.add_parser("from-clipa-jax",
                      help="import an official CLIPA JAX .npz (big_vision) as a checkpoint",
                      example=EXAMPLES["from-clipa-jax"])
  jx.add_argument("--weights", required=True, help="the official .npz")
  jx.add_argument("--image_size", type=int, default=None,
                  help="resolution to record (default 224)")
  jx.add_argument("--out", required=True, help="new directory for the checkpoint")
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
      done = to_checkpoint(args.weights, args.out, getattr(args, "model_config", None),
                           getattr(args, "image_size", None))
      print(f"wrote clipa_t5x checkpoint {done}")

  return cli.exit_code(command)


def console_main() -> None:
  """Entry point of the ``clipa-convert`` console script."""
  sys.exit(main())


if __name__ == "__main__":
  console_main()
