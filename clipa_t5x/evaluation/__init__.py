"""Zero-shot classification and retrieval: one computation each, for training, eval and inference."""

from clipa_t5x.evaluation.metrics import class_embeddings, topk_accuracy
from clipa_t5x.evaluation.zeroshot import (
    ZeroShotClassifier,
    embed_classes,
    examples_from_tf_dataset,
    load_classnames,
    load_templates,
)
