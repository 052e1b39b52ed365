"""clipa_t5x: CLIPA-v2 (inverse-scaling CLIP training) as a t5x-style JAX trainer.

A sample flows: tar shard -> SeqIO task (``clipa_t5x.data`` + ``clipa_t5x.tasks``)
-> feature converter -> partitioned train step (``partitioning``, ``trainer``)
-> metrics and Orbax checkpoints (``checkpoints``).
"""

__version__ = "0.1.0"
