"""Zero-shot top-1 of one demo checkpoint on the held-out split at several image sizes.

Shows what a resolution change does to a model before any fine-tuning (the
image position embedding is a fixed sin-cos grid, so any multiple of the
patch works):

  .venv/bin/python experiments/demo_diagnosis/eval_at_sizes.py \
      --model runs/demo_cpu/pretrain --data ~/.cache/clipa_t5x/demo_shapes --sizes 32 48 64
"""

import argparse
import json
import os
import tarfile

import numpy as np

from clipa_t5x import inference
from clipa_t5x.tasks import demo


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", required=True)
  ap.add_argument("--data", required=True, help="demo data folder (eval-00000.tar)")
  ap.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
  ap.add_argument("--text_length", type=int, default=32)
  a = ap.parse_args()
  members = {}
  with tarfile.open(os.path.join(os.path.expanduser(a.data), "eval-00000.tar")) as tar:
    for m in tar:
      key, ext = m.name.rsplit(".", 1)
      members.setdefault(key, {})[ext] = tar.extractfile(m).read()
  keys = sorted(members)
  jpegs = [members[k]["jpg"] for k in keys]
  labels = np.array([int(members[k]["cls"]) for k in keys])
  n = len(demo.class_factors()["shape"]) // len(set(demo.class_factors()["colour"]))
  for size in a.sizes:
    model = inference.load(a.model, image_size=size, text_length=a.text_length, batch_size=200)
    pred = model.classify(jpegs, demo.class_names(), demo.templates(),
                          top_k=1).top_k_indices[:, 0]
    print(json.dumps({"model": a.model, "image_size": size, "text_length": a.text_length,
                      "top1": float(np.mean(pred == labels)),
                      "shape": float(np.mean(pred % n == labels % n))}), flush=True)


if __name__ == "__main__":
  main()
