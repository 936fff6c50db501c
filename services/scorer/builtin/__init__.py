"""Built-in scorers. Each module holds module-level ``ScorerDef`` objects made by ``@register``."""

BUILTIN_MODULES: tuple[str, ...] = (
    "services.scorer.builtin.classification",
    "services.scorer.builtin.regression",
    "services.scorer.builtin.detection",
    "services.scorer.builtin.probabilities",
    "services.scorer.builtin.topk",
    "services.scorer.builtin.ordinal",
    "services.scorer.builtin.multilabel",
    "services.scorer.builtin.ranking",
    "services.scorer.builtin.segmentation",
    "services.scorer.builtin.instance_segmentation",
)
