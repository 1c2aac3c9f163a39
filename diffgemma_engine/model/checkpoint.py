"""What the engine reads of a checkpoint before loading weights, written once for the loader and the planner.

:func:`read_config` reads a checkpoint directory's ``config.json``, :func:`check_architecture` refuses
anything that is not DiffusionGemma (naming what it is), and :func:`load_plan_config` turns any config
source (a directory, a file, a dict, a built-in or hub name) into a ``DiffusionGemmaConfig`` without
weights. :func:`drop_vision` is the text-only view the engine places (it never runs the vision tower).
transformers is imported only inside the functions that build a config object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from diffgemma_engine.api.errors import InvalidRequestError, ModelLoadError
from diffgemma_engine.model.registry import DEMO, DEMO_DIRECTORY, TINY_RANDOM

ARCHITECTURE = "DiffusionGemmaForBlockDiffusion"
MODEL_TYPE = "diffusion_gemma"

REAL_CHECKPOINT = "google/diffusiongemma-26B-A4B-it"

REAL_CHECKPOINT_CONFIG: dict[str, Any] = {
    "architectures": ["DiffusionGemmaForBlockDiffusion"],
    "model_type": "diffusion_gemma",
    "canvas_length": 256,
    "tie_word_embeddings": True,
    "boi_token_id": 255999,
    "eoi_token_id": 258882,
    "image_token_id": 258880,
    "text_config": {
        "model_type": "diffusion_gemma_text",
        "vocab_size": 262144,
        "hidden_size": 2816,
        "intermediate_size": 2112,
        "num_hidden_layers": 30,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "num_global_key_value_heads": 2,
        "head_dim": 256,
        "global_head_dim": 512,
        "attention_k_eq_v": True,
        "enable_moe_block": True,
        "num_experts": 128,
        "top_k_experts": 8,
        "moe_intermediate_size": 704,
        "sliding_window": 1024,
        "max_position_embeddings": 262144,
        "final_logit_softcapping": 30.0,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "model_type": "gemma4_vision",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "head_dim": 72,
        "standardize": True,
    },
}
"""The published checkpoint's dimensions, for planning without downloading anything. Collected from
third-party copies of its ``config.json`` (see ``docs/consumer-gpus.md``); the parameter count they
give (25,823,778,864) times 2 bytes is within 0.001% of the published bf16 checkpoint size
(51,647,701,024 bytes)."""

VISION_MODULES = ("vision_tower", "embed_vision")
"""The encoder's image modules: never placed by this text-only engine."""


def drop_vision(model: Any) -> Any:
    """Remove the vision tower and its projection from a DiffusionGemma model (text-only use never calls
    them); returns ``model``. The encoder keeps both attributes, set to ``None``."""
    encoder = model.model.encoder
    for name in VISION_MODULES:
        if getattr(encoder, name, None) is not None:
            setattr(encoder, name, None)
    return model


def read_config(directory: str) -> dict[str, Any]:
    """The ``config.json`` of checkpoint ``directory`` (a :class:`ModelLoadError` when there is none)."""
    path = os.path.join(os.path.expanduser(directory), "config.json")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{directory!r} has no config.json; it is not a Hugging Face checkpoint")
    return read_json(path)


def check_architecture(config: dict[str, Any], where: str) -> None:
    """Raise :class:`ModelLoadError` naming what was found unless ``config`` is a DiffusionGemma config."""
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type == MODEL_TYPE or ARCHITECTURE in architectures:
        return
    found = ", ".join(architectures) or f"model_type={model_type!r}"
    raise ModelLoadError(f"{where!r} holds a {found} checkpoint, not a {ARCHITECTURE} ({MODEL_TYPE}) one")


def load_plan_config(source: Any) -> tuple[Any, str]:
    """Resolve ``source`` to a ``DiffusionGemmaConfig`` without loading weights; returns ``(config, label)``.

    ``source``: a ``DiffusionGemmaConfig``, a ``config.json`` dict, a path to a ``config.json``, a
    checkpoint directory, the built-in ``tiny-random``, the published checkpoint's hub id (its
    dimensions ship with this module) or another hub id (only its ``config.json`` is fetched).
    Raises ``ModelLoadError`` for anything that is not a DiffusionGemma config, naming what it is.
    """
    from transformers import DiffusionGemmaConfig

    if isinstance(source, DiffusionGemmaConfig):
        return source, "config"
    if isinstance(source, Mapping):
        return _config_from_dict(dict(source), "config dict"), "config dict"
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequestError("model", f"must be a config, a dict, a path or a model name, got {source!r}")
    if source == TINY_RANDOM:
        from diffgemma_engine.model import tiny_random

        return tiny_random.build_config(), source
    if source == DEMO:
        return _config_from_dict(read_config(str(DEMO_DIRECTORY)), source), source
    if source == REAL_CHECKPOINT:
        return _config_from_dict(json.loads(json.dumps(REAL_CHECKPOINT_CONFIG)), source), source
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return _config_from_dict(read_config(source), source), source
    if os.path.isfile(path):
        return _config_from_dict(read_json(path), source), source
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return _config_from_dict(read_json(_hub_config(source)), source), source
    raise ModelLoadError(f"{source!r} is neither a config.json, a checkpoint directory nor a hub id")


def read_json(path: str) -> dict[str, Any]:
    """The JSON object in ``path``; anything else is a :class:`ModelLoadError` naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path!r} is not readable JSON: {error}") from error
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path!r} does not hold a JSON object")
    return data


def _hub_config(repo_id: str) -> str:
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id, "config.json")
    except Exception as error:  # noqa: BLE001 - every hub failure becomes one typed error
        raise ModelLoadError(f"could not fetch config.json of {repo_id!r}: {error}") from error


def _config_from_dict(data: dict[str, Any], where: str) -> Any:
    from transformers import DiffusionGemmaConfig

    check_architecture(data, where)
    if not isinstance(data.get("text_config"), Mapping):
        raise ModelLoadError(f"{where!r}: a DiffusionGemma config needs a text_config object")
    data = {key: value for key, value in data.items() if key not in ("transformers_version",)}
    try:
        return DiffusionGemmaConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{where!r}: not a valid DiffusionGemma config: {error}") from error
