"""clipa_t5x: CLIPA-v2 as a t5x-style JAX trainer with SeqIO data and gin configs."""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
  with open(os.path.join(HERE, "clipa_t5x", "__init__.py")) as f:
    for line in f:
      if line.startswith("__version__"):
        return line.split("=")[1].strip().strip('"')
  raise RuntimeError("no __version__ in clipa_t5x/__init__.py")


# Ranges that admit the tested set in constraints-py3*.txt. tensorflow is pinned
# to the exact release tensorflow-text 2.21 is built against (a mismatch fails at
# import with undefined symbols); tensorboard is needed by clu's metric writers.
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "clu==0.0.12",
    "gin-config>=0.5.0",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.*",
    "tensorflow-datasets>=4.9",
    "tensorboard>=2.21,<2.22",
    "numpy",
    "pillow",
    "absl-py",
    "safetensors>=0.4",  # open_clip export/import without torch
    "tqdm",              # progress bars of the inference CLI
]

setup(
    name="clipa_t5x",
    version=_version(),
    description="CLIPA-v2 (inverse scaling CLIP training) as a t5x-style JAX trainer",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=["clipa_t5x", "clipa_t5x.data", "clipa_t5x.models", "clipa_t5x.evaluation",
              "clipa_t5x.interop",
              "clipa_t5x.tasks", "clipa_t5x.gin"],
    # The design card's top-level folders ship inside the package.
    package_dir={"clipa_t5x.tasks": "tasks", "clipa_t5x.gin": "gin"},
    package_data={
        "clipa_t5x.data": ["assets/*"],
        "clipa_t5x.evaluation": ["assets/*"],
        "clipa_t5x.gin": ["*.gin", "*/*.gin"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # lemminflect: the test that rebuilds the shipped syntax table runs too.
        # pytest-xdist: scripts/test.sh runs the files on every core.
        "test": ["pytest", "pytest-xdist", "tokenizers", "lemminflect==0.2.3", "webdataset==1.0.2",
                 "matplotlib"],
        # scripts/demo.sh: the demo's figures (MODEL_DIR/*.png). No torch: the demo, training,
        # eval, inference and the open_clip export run without it.
        "demo": ["matplotlib"],
        # open_clip interop checks and bench/vs_open_clip.py (torch CPU is enough).
        "torch": ["torch>=2.1", "torchvision", "open-clip-torch>=3.0"],
        # experiments/*: plots.
        "experiments": ["matplotlib"],
        # bench/data_throughput.py's reference pipeline (as open_clip reads data).
        "bench": ["webdataset==1.0.2"],
        # Only tools/build_syntax_priority.py needs it (the table ships built).
        "tools": ["lemminflect==0.2.3"],
    },
    # One console script per entry point (also runnable as python -m clipa_t5x.<name>).
    entry_points={"console_scripts": [
        "clipa-train=clipa_t5x.train:console_main",
        "clipa-eval=clipa_t5x.eval:console_main",
        "clipa-infer=clipa_t5x.infer:console_main",
        "clipa-convert=clipa_t5x.convert:console_main",
        "clipa-plan=clipa_t5x.plan:console_main",
        "clipa-make-shards=clipa_t5x.data.make_shards:console_main",
    ]},
)
