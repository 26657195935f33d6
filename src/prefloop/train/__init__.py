"""Training the model from feedback: SFT, a reward model with a scalar head, the DPO family,
KTO and RRHF, each with one typed config; trained models load back as arms."""

from prefloop.train.models import (
    DEFAULT_BASE,
    TrainedManifest,
    load_base,
    load_trained,
    read_manifest,
    resolve_base,
)

__all__ = [
    "DEFAULT_BASE",
    "TrainedManifest",
    "load_base",
    "load_trained",
    "read_manifest",
    "resolve_base",
]
