"""Small shared builders for the trainer-level tests (tiny model, random batches)."""

import numpy as np

from clipa_t5x import optimizers
from clipa_t5x import partitioning
from clipa_t5x import train_state
from clipa_t5x.models import clip
from clipa_t5x.models import configs

IMAGE_SIZE = 16
TEXT_LENGTH = 8


def tiny_setup(partitioner: partitioning.PjitPartitioner, batch_size: int = 8,
               total_steps: int = 20, text_length: int = TEXT_LENGTH, loss: str = "softmax",
               optimizer: str = "adamw"):
  """A Ti/8 model (trained with ``loss``), its optimizer and the abstract state on ``partitioner``."""
  model = clip.ClipaModel(configs.get_config("Ti/8", loss=loss))
  tx, lr_fn = optimizers.make_optimizer(
      optimizers.OptimizerConfig(name=optimizer, base_learning_rate=2e-3, warmup_steps=2),
      batch_size, total_steps)
  abstract, specs, shardings = train_state.abstract_train_state(
      model, tx, IMAGE_SIZE, text_length, partitioner)
  return model, tx, lr_fn, abstract, specs, shardings


def random_batch(batch_size: int = 8, seed: int = 0, text_length: int = TEXT_LENGTH):
  rng = np.random.RandomState(seed)
  return {
      "image": rng.randint(0, 256, (batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8),
      "text": np.concatenate([np.full((batch_size, 1), 101),
                              rng.randint(1000, 30000, (batch_size, text_length - 1))],
                             axis=1).astype(np.int32),
  }


def shard_writers():
  """The tiny shard writers of tests/tasks/test_laion.py (``write_webdataset``, ``write_tfrecords``)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks", "test_laion.py")
  spec = importlib.util.spec_from_file_location("_laion_helpers", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
