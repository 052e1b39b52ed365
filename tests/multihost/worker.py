"""One process of the multi-host test: trains Ti/8 for a few steps on a fixed global batch.

Usage: python worker.py OUT_JSON NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES
With NUM_PROCESSES = 1 it is the single-process reference.
"""

import json
import os
import sys

out, num_processes, process_id, port, local_devices = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

if num_processes > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                             num_processes=num_processes, process_id=process_id)


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import helpers  # noqa: E402  (tests/helpers.py)
from clipa_t5x import partitioning  # noqa: E402
from clipa_t5x import train_state  # noqa: E402
from clipa_t5x import trainer as trainer_lib  # noqa: E402

GLOBAL_BATCH, STEPS = 8, 4
partitioner = partitioning.PjitPartitioner(num_partitions=1)
layout = partitioner.get_data_layout(GLOBAL_BATCH)
model, tx, lr_fn, _, _, shardings = helpers.tiny_setup(partitioner, batch_size=GLOBAL_BATCH)
state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                       helpers.TEXT_LENGTH, partitioner, shardings)
trainer = trainer_lib.Trainer(model, tx, lr_fn, partitioner, shardings, GLOBAL_BATCH,
                              mask_ratio=0.25)
rows = GLOBAL_BATCH // layout.num_shards
losses = []
for step in range(STEPS):
  full = helpers.random_batch(GLOBAL_BATCH, seed=step)
  # This host's slice of the same global batch the reference sees whole.
  local = {k: v[layout.shard_id * rows:(layout.shard_id + 1) * rows] for k, v in full.items()}
  state, metrics = trainer.step(state, local, jax.random.key(1))
  losses.append(float(jax.device_get(metrics["loss"])))
# Every process writes its part of one checkpoint, then all read it back.
from clipa_t5x import checkpoints  # noqa: E402
ckpt_dir = os.path.join(os.path.dirname(out), f"ckpt_{num_processes}")
checkpoints.Checkpointer(ckpt_dir).save(state, STEPS, {"stage": "multihost"})
abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
restored, meta = checkpoints.Checkpointer(ckpt_dir).restore(abstract)
same = all(bool(jax.numpy.array_equal(a, b)) for a, b in
           zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params)))
with open(out, "w") as f:
  json.dump({"losses": losses, "checkpoint_step": meta["step"], "restored_equal": same, "num_shards": layout.num_shards, "shard_id": layout.shard_id,
             "devices": jax.device_count(), "processes": jax.process_count()}, f)
