"""Zero-shot classification (and later retrieval) evaluators."""

from clipa_t5x.evaluation.metrics import class_embeddings, topk_accuracy
from clipa_t5x.evaluation.zeroshot import (
    ZeroShotClassifier,
    examples_from_tf_dataset,
    load_classnames,
    load_templates,
)
