r"""Image folders or CSV/TSV lists -> webdataset tar shards, as img2dataset writes them.

Usage::

  clipa-make-shards --input photos/ --out shards/ [--max_side 160]
  clipa-make-shards --input captions.tsv --out shards/ \
      --image_column filepath --caption_column title

Inputs:

* a folder (searched recursively): each image (``.jpg .jpeg .png .webp .bmp
  .gif``) with its caption in a text file of the same stem (``cat.jpg`` +
  ``cat.txt``); with ``--labels_from_folders``, the first-level folder is also
  the image's class (written as ``KEY.cls``, names in ``OUT/classes.json``),
  which zero-shot evaluation reads;
* a CSV or TSV file with a header, one row per image: an image path
  (relative to the file's folder, or absolute) and its caption.

Output in ``--out``: ``00000.tar``, ``00001.tar``, ... of ``--samples_per_shard``
samples each, members ``KEY.jpg`` (or the source's ``.png``/``.webp``),
``KEY.txt`` (caption), ``KEY.json`` (key, caption, source path, sizes,
status) and ``KEY.cls``; keys are shard number + index in shard
(``000000012``), as img2dataset names them. Each shard is written under a
temporary name and renamed when complete.

``--max_side N`` re-encodes every image whose longer side exceeds N to a JPEG
with that longer side (aspect kept): low-resolution pre-training then decodes
small files. Without it, the original bytes are stored after a full decode
check.

Nothing stops the run but a bad setting: an image that cannot be read
(missing, truncated, not an image) or has no caption is skipped, counted,
named on the console and listed with its reason in ``OUT/skipped.txt``.
"""

import argparse
import concurrent.futures
import csv
import dataclasses
import io
import json
import os
import sys
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from PIL import Image

from clipa_t5x import cli_help
from clipa_t5x.data.image_files import has_image_extension
from clipa_t5x.data.shard_writer import ShardWriter

SKIPPED = "skipped.txt"
CLASSES = "classes.json"
_SHOWN_SKIPPED = 10  # skipped names printed; all are in OUT/skipped.txt
_FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_CHUNK = 256  # images in flight at once (bounded memory with threads)


@dataclasses.dataclass(frozen=True)
class Item:
  """One input: image path, caption (None: not found) and class id (or None)."""
  path: str
  caption: Optional[str]
  label: Optional[int] = None


@dataclasses.dataclass
class Sample:
  """An encoded sample ready to write, or the reason it is skipped."""
  item: Item
  data: bytes = b""
  ext: str = "jpg"
  size: Tuple[int, int] = (0, 0)
  original_size: Tuple[int, int] = (0, 0)
  error: Optional[str] = None


# ---------------------------------------------------------------- inputs ---
def _read_caption(path: str) -> Optional[str]:
  if not os.path.isfile(path):
    return None
  with open(path, "rb") as f:
    return f.read().decode("utf-8", "replace").strip()


def folder_items(root: str, labels_from_folders: bool = False
                 ) -> Tuple[List[Item], List[str]]:
  """Images under ``root`` (sorted, recursive) with their ``.txt`` captions.

  Returns:
    ``(items, class_names)``; class names (first-level folders, sorted, ``_``
    as space) only with ``labels_from_folders``.
  """
  classes: List[str] = []
  if labels_from_folders:
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
      raise ValueError(f"--labels_from_folders: {root!r} has no class folders; expected "
                       "ROOT/<class>/<image + .txt>.")
  items = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    label = None
    if labels_from_folders:
      rel = os.path.relpath(folder, root)
      if rel == ".":
        continue  # images directly under ROOT have no class
      label = classes.index(rel.split(os.sep)[0])
    for name in sorted(files):
      if name.startswith(".") or not has_image_extension(name):
        continue
      path = os.path.join(folder, name)
      caption = _read_caption(os.path.splitext(path)[0] + ".txt")
      items.append(Item(path, caption, label))
  return items, [c.replace("_", " ") for c in classes]


def table_items(path: str, image_column: str, caption_column: str,
                delimiter: Optional[str] = None) -> List[Item]:
  """Rows of a CSV/TSV file (header names the columns); paths relative to its folder."""
  if delimiter is None:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
  root = os.path.dirname(os.path.abspath(path))
  with open(path, newline="", encoding="utf-8", errors="replace") as f:
    reader = csv.DictReader(f, delimiter=delimiter)
    missing = [c for c in (image_column, caption_column) if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{path}: no column(s) {missing} in the header {reader.fieldnames}; set "
                       "--image_column / --caption_column.")
    items = []
    for row in reader:
      image = (row[image_column] or "").strip()
      if not image:
        continue
      items.append(Item(os.path.join(root, image), (row[caption_column] or "").strip()))
  return items


# ---------------------------------------------------------------- encode ---
def encode(item: Item, max_side: Optional[int] = None, quality: int = 95) -> Sample:
  """Reads and checks one image; re-encodes it when ``max_side`` asks. Never raises."""
  sample = Sample(item)
  if not item.caption:
    sample.error = "no caption" if item.caption is None else "empty caption"
    return sample
  try:
    with open(item.path, "rb") as f:
      raw = f.read()
    with Image.open(io.BytesIO(raw)) as img:
      fmt = img.format
      img.load()  # a full decode: truncated files fail here, not in training
      sample.original_size = sample.size = img.size
      shrink = bool(max_side) and max(img.size) > max_side
      if not shrink and fmt in _FORMAT_EXTENSIONS:
        sample.data, sample.ext = raw, _FORMAT_EXTENSIONS[fmt]
      else:  # shrunk, or BMP, GIF, ...: stored as JPEG, which every reader here takes
        img = img.convert("RGB")
        if shrink:
          scale = max_side / max(img.size)
          sample.size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
          img = img.resize(sample.size, Image.BICUBIC, reducing_gap=3.0)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        sample.data, sample.ext = buf.getvalue(), "jpg"
  except Exception as e:  # pylint: disable=broad-except  (one bad file never stops a run)
    sample.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
  return sample


def _encoded(items: Sequence[Item], max_side: Optional[int], quality: int,
             workers: int) -> Iterator[Sample]:
  """``encode`` over ``items`` in order, ``workers`` threads (PIL releases the GIL)."""
  if workers <= 1:
    yield from (encode(item, max_side, quality) for item in items)
    return
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for start in range(0, len(items), _CHUNK):
      yield from pool.map(lambda it: encode(it, max_side, quality), items[start:start + _CHUNK])


# ----------------------------------------------------------------- write ---
def _write(writer: ShardWriter, sample: Sample) -> str:
  """Writes one encoded sample (image, caption, metadata, class) through ``writer``."""
  key, item = writer.next_key, sample.item
  meta = {"key": key, "caption": item.caption, "url": item.path, "status": "success",
          "error_message": None, "width": sample.size[0], "height": sample.size[1],
          "original_width": sample.original_size[0],
          "original_height": sample.original_size[1]}
  members = {sample.ext: sample.data, "txt": item.caption.encode("utf-8"),
             "json": json.dumps(meta, ensure_ascii=False).encode()}
  if item.label is not None:
    members["cls"] = str(item.label).encode()
  return writer.write(members)


def _progress(iterable: Iterable, total: int, quiet: bool):
  if quiet:
    return iterable
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(iterable, total=total, unit="img", desc="make_shards", file=sys.stderr)


def make_shards(items: Sequence[Item], out_dir: str, samples_per_shard: int = 10000,
                max_side: Optional[int] = None, quality: int = 95, workers: int = 1,
                class_names: Optional[Sequence[str]] = None, quiet: bool = False) -> dict:
  """Writes ``items`` as shards into ``out_dir`` (which must hold no shards yet).

  Returns:
    ``{'samples', 'shards', 'skipped': [(path, reason)], 'out_dir'}``; the
    skipped inputs are also listed in ``out_dir/skipped.txt``.
  """
  if samples_per_shard < 1:
    raise ValueError(f"--samples_per_shard must be >= 1, got {samples_per_shard}.")
  if max_side is not None and max_side < 1:
    raise ValueError(f"--max_side must be >= 1, got {max_side}.")
  if not items:
    raise ValueError("no input images found; a folder needs images (with .txt captions) and a "
                     "CSV/TSV rows of image path + caption.")
  os.makedirs(out_dir, exist_ok=True)
  existing = sorted(f for f in os.listdir(out_dir) if f.endswith(".tar"))
  if existing:
    raise ValueError(f"{out_dir!r} already holds shards ({existing[0]}, ...); choose an empty "
                     "--out folder.")
  writer, skipped = ShardWriter(out_dir, samples_per_shard), []
  for sample in _progress(_encoded(list(items), max_side, quality, workers), len(items), quiet):
    if sample.error:
      skipped.append((sample.item.path, sample.error))
    else:
      _write(writer, sample)
  writer.close()
  skipped_path = os.path.join(out_dir, SKIPPED)
  if skipped:
    with open(skipped_path, "w", encoding="utf-8") as f:
      f.writelines(f"{path}\t{reason}\n" for path, reason in skipped)
  elif os.path.exists(skipped_path):
    os.remove(skipped_path)
  if class_names is not None:
    with open(os.path.join(out_dir, CLASSES), "w", encoding="utf-8") as f:
      json.dump(list(class_names), f, indent=1)
  return {"samples": writer.written, "shards": writer.shards, "skipped": skipped,
          "out_dir": out_dir}


def _report(result: dict) -> None:
  shards = result["shards"]
  print(f"wrote {result['samples']} samples in {len(shards)} shard(s) to {result['out_dir']}"
        + (f" ({os.path.basename(shards[0])} .. {os.path.basename(shards[-1])})"
           if len(shards) > 1 else ""))
  skipped = result["skipped"]
  if skipped:
    print(f"skipped {len(skipped)} input(s) that could not be used; all are listed in "
          f"{os.path.join(result['out_dir'], SKIPPED)}:")
    for path, reason in skipped[:_SHOWN_SKIPPED]:
      print(f"  {path}: {reason}")
    if len(skipped) > _SHOWN_SKIPPED:
      print(f"  ... and {len(skipped) - _SHOWN_SKIPPED} more")


EXAMPLE = """\
clipa-make-shards --input photos/ --out my_shards/ --max_side 160
clipa-make-shards --input list.tsv --out my_shards/ --image_column filepath --caption_column title
"""


def build_parser() -> argparse.ArgumentParser:
  p = cli_help.ArgumentParser(
      prog="clipa-make-shards",
      description="Image folder (img.jpg + img.txt) or CSV/TSV of image path + caption -> "
                  "webdataset tar shards as img2dataset writes them.",
      example=EXAMPLE)
  p.add_argument("--input", required=True, help="a folder, or a .csv / .tsv file")
  p.add_argument("--out", required=True, help="output folder for 00000.tar, 00001.tar, ...")
  p.add_argument("--samples_per_shard", type=int, default=10000, help="samples per .tar")
  p.add_argument("--max_side", type=int, default=None,
                 help="re-encode images whose longer side exceeds this (JPEG, aspect kept; "
                      "none: store the original bytes)")
  p.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images")
  p.add_argument("--image_column", default="filepath", help="CSV/TSV: image path column")
  p.add_argument("--caption_column", default="title", help="CSV/TSV: caption column")
  p.add_argument("--labels_from_folders", action="store_true",
                 help="folder input: first-level folders are classes (KEY.cls, classes.json)")
  p.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1),
                 deprecated=("--workers",), help="threads reading and encoding images")
  p.add_argument("--no_progress", action="store_true", deprecated=("--quiet",),
                 help="no progress bar")
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if os.path.isdir(args.input):
      items, classes = folder_items(args.input, args.labels_from_folders)
    elif os.path.isfile(args.input):
      if args.labels_from_folders:
        raise ValueError("--labels_from_folders needs a folder --input.")
      items, classes = table_items(args.input, args.image_column, args.caption_column), None
    else:
      raise ValueError(f"--input {args.input!r} is neither a folder nor a file.")
    result = make_shards(items, args.out, args.samples_per_shard, args.max_side, args.quality,
                         args.num_workers, classes if args.labels_from_folders else None,
                         args.no_progress)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  _report(result)
  if not result["samples"]:
    print(f"error: none of the {len(items)} inputs could be used; see the list above.",
          file=sys.stderr)
    return 2
  return 0


def console_main() -> None:
  """Entry point of the ``clipa-make-shards`` console script."""
  sys.exit(main())


if __name__ == "__main__":
  console_main()
