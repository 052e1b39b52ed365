"""One process of the sigmoid-loss ring test: value and gradients on a fixed global batch.

Usage: python sigmoid_worker.py OUT_JSON NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES
Writes the loss, the in-batch accuracies and the gradients (image and text
features, log-temperature, bias) of the whole batch, as every process sees them.
Importing it only defines the batch (``features``), for the test's reference.
"""

import json
import os
import sys

import numpy as np

BATCH, DIM, LOG_T, BIAS = 16, 12, 1.7, -2.0


def features():
  """The fixed global batch: image and text rows, partly aligned, unit norm."""
  rng = np.random.RandomState(0)
  img = rng.randn(BATCH, DIM)
  txt = img + rng.randn(BATCH, DIM)
  unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  return unit(img), unit(txt)


def main(out, num_processes, process_id, port, local_devices):
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
  import jax  # pylint: disable=import-outside-toplevel  (after XLA_FLAGS)
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                               num_processes=num_processes, process_id=process_id)
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from clipa_t5x import losses  # pylint: disable=import-outside-toplevel
  from clipa_t5x import partitioning  # pylint: disable=import-outside-toplevel

  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  img, txt = features()
  shard = lambda x: jax.make_array_from_callback(x.shape, partitioner.data_sharding,
                                                 lambda index: x[index])
  replicated = NamedSharding(partitioner.mesh, P())
  fn = jax.value_and_grad(losses.sigmoid_contrastive_loss, argnums=(0, 1, 2, 3), has_aux=True)
  with partitioner.context():
    (loss, metrics), grads = jax.jit(fn, out_shardings=replicated)(
        shard(img), shard(txt), np.float32(LOG_T), np.float32(BIAS))
  local = lambda x: np.asarray(x.addressable_data(0)).tolist()
  with open(out, "w") as f:
    json.dump({"loss": local(loss), "i2t_accuracy": local(metrics["i2t_accuracy"]),
               "t2i_accuracy": local(metrics["t2i_accuracy"]),
               "d_img": local(grads[0]), "d_txt": local(grads[1]), "d_log_t": local(grads[2]),
               "d_bias": local(grads[3]), "devices": jax.device_count(),
               "processes": jax.process_count(),
               "data_axis": int(partitioner.data_parallel_size)}, f)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
