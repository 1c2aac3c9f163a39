"""Built-in model names and how a model reference is classified."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

TINY_RANDOM = "tiny-random"
DEMO = "demo"
BUILTIN_MODELS = (DEMO, TINY_RANDOM)
DEFAULT_MODEL = DEMO
DEMO_DIRECTORY = Path(__file__).resolve().parent / "demo"
"""The trained demo checkpoint shipped in the package (see docs/demo-model.md)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSource(str, Enum):
    BUILTIN = "builtin"
    DIRECTORY = "directory"
    HUB = "hub"


@dataclass(frozen=True)
class ModelRef:
    """A classified model reference: where it comes from and the canonical key it is shared under."""

    source: ModelSource
    location: str

    @property
    def key(self) -> str:
        return f"{self.source.value}:{self.location}"


def resolve_model_ref(model: str) -> ModelRef | None:
    """Classify ``model``; ``None`` means it is neither a built-in, an existing directory nor a hub id."""
    if model in BUILTIN_MODELS:
        return ModelRef(ModelSource.BUILTIN, model)
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        return ModelRef(ModelSource.DIRECTORY, os.path.realpath(expanded))
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return ModelRef(ModelSource.HUB, model)
    return None
