r"""Command-line inference: embeddings to .npy and zero-shot classification to .csv.

Usage (``python -m clipa_t5x.infer`` or the ``clipa-infer`` console script)::

  # image embeddings of a folder (recursive), a webdataset .tar or a list of paths
  clipa-infer embed-images --checkpoint RUN_DIR --input photos/ --out photos.npy
  # -> photos.npy (float32 [N, D], L2-normalised) + photos.keys.txt (one key per row)

  # text embeddings of a caption file (one caption per line)
  clipa-infer embed-texts --checkpoint RUN_DIR --input captions.txt --out caps.npy
  # -> caps.npy + caps.keys.txt (the 1-based line number of each row)

  # zero-shot classification
  clipa-infer classify --checkpoint RUN_DIR --input photos/ \
      --class_names "cat,dog,car" --out predictions.csv
  # --class_names also takes a file (one name per line) or 'imagenet1k';
  # --templates a file (one per line), a set name ('imagenet1k') or one template.

``--checkpoint`` is any model reference (``clipa_t5x.model_refs``): a
MODEL_DIR (its last stage with a checkpoint), a stage folder, a
``checkpoint_<step>`` folder, an open_clip folder or weights file, or an
official CLIPA JAX ``.npz``. A source that records no model needs
``--model_config H/14`` (the architecture) and usually ``--image_size``.

Images that cannot be read (corrupt, truncated, missing, not an image) are
skipped: they get no row; their count and names are printed at the end and
listed with the reason in ``OUT.skipped.txt``. Empty caption lines are skipped
the same way (their line numbers are printed; keys keep the original line
numbers). Outputs are written through a temporary file and renamed, so an
interrupted run never leaves a half-written file. Configuration mistakes end
with one ``error:`` line and exit code 2.
"""

import argparse
import collections
import csv
import io
import os
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

# Before TensorFlow is imported: its C++ log would repeat, per corrupt image, what the
# skipped-images report says.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from clipa_t5x import cli  # noqa: E402
from clipa_t5x import paths  # noqa: E402
from clipa_t5x import xla_flags  # noqa: E402

_SHOWN_SKIPPED = 20  # skipped names printed; the rest are in the .skipped.txt file


class CliError(ValueError):
  """A mistake in the command line or the inputs: printed as one ``error:`` line."""


# -------------------------------------------------------------------- outputs
def _stem(path: str, suffix: str) -> str:
  return path[:-len(suffix)] if path.lower().endswith(suffix) else path


def _check_writable(path: str) -> None:
  """Fails now (before the model loads) if ``path`` cannot be written."""
  if os.path.isdir(path):
    raise CliError(f"output {path!r} is a folder; give a file name such as {path}/out.npy.")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".clipa_write_test"):
      pass
  except OSError as e:
    raise CliError(f"cannot write to {folder!r} ({e.strerror or e}); choose a writable --out "
                   "location.") from None


def _npy_output(out: str) -> Tuple[str, str]:
  """``(OUT.npy, OUT)`` of ``--out`` (``.npy`` added when missing), checked writable."""
  if os.path.isdir(out):
    raise CliError(f"output {out!r} is a folder; give a file name such as {out}/out.npy.")
  out = out if out.lower().endswith(".npy") else out + ".npy"
  _check_writable(out)
  return out, _stem(out, ".npy")


def _write_lines(path: str, lines: Sequence[str]) -> None:
  paths.write_text_atomic(path, "".join(f"{line}\n" for line in lines))


def _write_npy(path: str, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array)
  paths.write_bytes_atomic(path, buffer.getvalue())


def _report_skipped(skipped: Sequence[Tuple[str, str]], what: str, path: str) -> None:
  """Prints the count and names of skipped inputs; lists all of them in ``path``."""
  if not skipped:
    return
  _write_lines(path, [f"{key}\t{reason}" for key, reason in skipped])
  print(f"skipped {len(skipped)} {what} that could not be read (no row written for them):",
        file=sys.stderr)
  for key, reason in skipped[:_SHOWN_SKIPPED]:
    print(f"  {key}: {reason}", file=sys.stderr)
  more = len(skipped) - _SHOWN_SKIPPED
  print(f"  {'... and %d more; ' % more if more > 0 else ''}all are listed in {path}",
        file=sys.stderr)


# ------------------------------------------------------------------- commands
def _load_model(args: argparse.Namespace):
  from clipa_t5x import inference  # pylint: disable=import-outside-toplevel
  predictor = inference.load(
      args.checkpoint, config=args.model_config, image_size=getattr(args, "image_size", None),
      text_length=args.text_length, batch_size=args.batch_size, dtype=args.dtype,
      text_reduction=args.text_reduction, num_workers=getattr(args, "num_workers", None))
  print(predictor.describe(), file=sys.stderr)
  return predictor


def _image_source(path: str):
  from clipa_t5x.data import image_files  # pylint: disable=import-outside-toplevel
  source = image_files.open_image_source(path)
  if len(source) == 0:
    listed = "".join(f"; {k}: {r}" for k, r in source.skipped[:3])
    raise CliError(f"no images found in {path!r} (extensions "
                   f"{', '.join(image_files.IMAGE_EXTENSIONS)}){listed}; check the path.")
  return source


def _embed_images(predictor, source, out_stem: str, progress: bool):
  result = predictor.embed_images(source, progress=progress)
  skipped = list(source.skipped) + result.skipped
  _report_skipped(skipped, "image(s)", f"{out_stem}.skipped.txt")
  if not result.keys:
    raise CliError(f"none of the {len(source)} images in {source.path!r} could be read; see "
                   f"{out_stem}.skipped.txt.")
  return result


def cmd_embed_images(args: argparse.Namespace) -> None:
  out, stem = _npy_output(args.out)
  source = _image_source(args.input)
  predictor = _load_model(args)
  result = _embed_images(predictor, source, stem, not args.no_progress)
  _write_npy(out, result.features)
  _write_lines(f"{stem}.keys.txt", result.keys)
  print(f"wrote {result.features.shape[0]} image embeddings {list(result.features.shape)} to "
        f"{out}, keys to {stem}.keys.txt"
        + (f"; {len(result.skipped) + len(source.skipped)} skipped" if result.skipped
           or source.skipped else ""))


def _read_lines(path: str, what: str) -> List[str]:
  if not os.path.exists(path):
    raise CliError(f"{what} file {path!r} does not exist; check the path.")
  if os.path.isdir(path):
    raise CliError(f"{what} {path!r} is a folder; pass a text file with one entry per line.")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise CliError(f"{what} file {path!r} is not UTF-8 text ({e.reason} at byte {e.start}); "
                   "convert it to UTF-8.") from None
  except OSError as e:
    raise CliError(f"cannot read {path!r} ({e.strerror or e}).") from None
  # Only \n (and \r\n) end a line: other Unicode separators may be part of a caption.
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def cmd_embed_texts(args: argparse.Namespace) -> None:
  out, stem = _npy_output(args.out)
  lines = _read_lines(args.input, "caption")
  keep = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
  empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
  if not keep:
    raise CliError(f"caption file {args.input!r} has no non-empty lines; write one caption per "
                   "line.")
  if empty:
    shown = ", ".join(map(str, empty[:_SHOWN_SKIPPED])) + (" ..." if len(empty) > 20 else "")
    print(f"skipped {len(empty)} empty line(s) (no row written; keys are line numbers): {shown}",
          file=sys.stderr)
  predictor = _load_model(args)
  features = predictor.encode_texts([t for _, t in keep], progress=not args.no_progress)
  _write_npy(out, features)
  _write_lines(f"{stem}.keys.txt", [str(n) for n, _ in keep])
  print(f"wrote {features.shape[0]} text embeddings {list(features.shape)} to {out}, keys "
        f"(line numbers) to {stem}.keys.txt")


def cmd_classify(args: argparse.Namespace) -> None:
  stem = _stem(args.out, ".csv")
  _check_writable(args.out)
  from clipa_t5x.evaluation import zeroshot  # pylint: disable=import-outside-toplevel
  names = zeroshot.parse_class_names(args.class_names, "--class_names")
  templates = zeroshot.parse_templates(args.templates, "--templates")
  if args.top_k < 1:
    raise CliError(f"--top_k must be >= 1, got {args.top_k}.")
  source = _image_source(args.input)
  predictor = _load_model(args)
  weights = predictor.class_embeddings(names, templates)
  result = _embed_images(predictor, source, stem, not args.no_progress)
  preds = predictor.classify_features(result.features, names, top_k=args.top_k,
                                      class_embeddings=weights)
  k = preds.top_k_indices.shape[1]
  table = io.StringIO()
  writer = csv.writer(table)
  writer.writerow(["key"] + [f"top{j}{s}" for j in range(1, k + 1) for s in ("", "_prob")])
  for key, row_names, row_probs in zip(result.keys, preds.top_k_names,
                                       preds.top_k_probabilities):
    writer.writerow([key] + [v for name, p in zip(row_names, row_probs)
                             for v in (name, f"{p:.6f}")])
  paths.write_text_atomic(args.out, table.getvalue())
  counts = collections.Counter(preds.labels).most_common(10)
  print(f"classified {len(result.keys)} images into {len(names)} classes; predictions in "
        f"{args.out}")
  print("most frequent top-1 classes: " + ", ".join(f"{n} ({c})" for n, c in counts))


# --------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser, images: bool) -> None:
  p.add_argument("--checkpoint", required=True, deprecated=("--model",),
                 help="the model: MODEL_DIR, stage or checkpoint_<step> folder, open_clip folder "
                      "or weights file, or official CLIPA JAX .npz.")
  p.add_argument("--input", required=True, help=(
      "folder of images (recursive), .tar (webdataset) or text file of image paths"
      if images else "text file with one caption per line (UTF-8)"))
  p.add_argument("--out", required=True, help="output file.")
  p.add_argument("--batch_size", type=int, default=32, help="rows per encoder call.")
  p.add_argument("--model_config", default=None, deprecated=("--config",),
                 help="architecture (e.g. H/14) when the checkpoint has no model_config.json.")
  p.add_argument("--text_length", type=int, default=None,
                 help="token length (default: the checkpoint's).")
  p.add_argument("--text_reduction", default="truncate", choices=("truncate", "syntax"),
                 deprecated=("--reduction",),
                 help="how texts longer than text_length are cut.")
  p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                 help="compute dtype (default: the checkpoint's).")
  p.add_argument("--no_progress", action="store_true", help="no progress bar.")
  if images:
    p.add_argument("--image_size", type=int, default=None,
                   help="resolution (default: the checkpoint's; a multiple of the patch).")
    p.add_argument("--num_workers", type=int, default=None,
                   help="image decoding threads (none: as many as the machine has).")


EXAMPLES = {
    "embed-images": "clipa-infer embed-images --checkpoint runs/demo_cpu --input photos/ "
                    "--out img.npy",
    "embed-texts": "clipa-infer embed-texts --checkpoint runs/demo_cpu --input captions.txt "
                   "--out txt.npy",
    "classify": "clipa-infer classify --checkpoint runs/demo_cpu --input photos/ \\\n"
                "    --class_names cat,dog --out predictions.csv",
}


def build_parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog="clipa-infer", description="CLIPA inference: embeddings and zero-shot labels.",
      example="\n".join(EXAMPLES.values()))
  sub = parser.add_subparsers(dest="command", required=True)
  parsers = {}
  for name, fn, what in (
      ("embed-images", cmd_embed_images, "image embeddings -> OUT.npy + OUT.keys.txt"),
      ("embed-texts", cmd_embed_texts, "caption embeddings -> OUT.npy + OUT.keys.txt"),
      ("classify", cmd_classify, "zero-shot classification -> predictions.csv")):
    parsers[name] = sub.add_parser(name, help=what, example=EXAMPLES[name])
    _add_common(parsers[name], images=name != "embed-texts")
    parsers[name].set_defaults(fn=fn)
  p = parsers["classify"]  # its own options
  p.add_argument("--class_names", required=True,
                 help="'cat,dog', a file with one name per line, or a set name (imagenet1k).")
  p.add_argument("--templates", default=None,
                 help="a file with one template per line, a set name (imagenet1k) or one "
                      "template with {c} (default: a few generic photo prompts).")
  p.add_argument("--top_k", type=int, default=5, help="best classes per image in the CSV.")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs one subcommand; returns the exit code (2 after a one-line error)."""
  cli.quiet_startup()
  xla_flags.apply_default_flags()  # before any JAX backend starts
  args = build_parser().parse_args(argv)
  return cli.exit_code(lambda: args.fn(args))


def console_main() -> None:
  """Entry point of the ``clipa-infer`` console script."""
  sys.exit(main())


if __name__ == "__main__":
  console_main()
