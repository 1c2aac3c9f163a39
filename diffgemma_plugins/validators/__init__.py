"""The built-in validators. Each is a small class; :mod:`.plugin` registers them through the same
``diffgemma_register_validators`` hook that third-party plugins use."""

from __future__ import annotations

from .brackets import BracketBalance
from .convergence import UnconvergedBlock
from .degenerate import DegenerateBlock
from .encoding import Utf8Integrity
from .eos import PrematureEos
from .json_output import JsonOutput
from .regex_match import RegexMatch
from .repetition import BoundaryDuplication, RepeatedNgram
from .special_tokens import SpecialTokenLeak
from .stutter import Stutter
from .tool_call import ToolCallOutput

BUILTIN_VALIDATORS = (
    SpecialTokenLeak,
    DegenerateBlock,
    PrematureEos,
    Stutter,
    RepeatedNgram,
    BoundaryDuplication,
    Utf8Integrity,
    UnconvergedBlock,
    BracketBalance,
    JsonOutput,
    RegexMatch,
    ToolCallOutput,
)

__all__ = [
    "BUILTIN_VALIDATORS",
    "BoundaryDuplication",
    "BracketBalance",
    "DegenerateBlock",
    "JsonOutput",
    "PrematureEos",
    "RegexMatch",
    "RepeatedNgram",
    "SpecialTokenLeak",
    "Stutter",
    "ToolCallOutput",
    "UnconvergedBlock",
    "Utf8Integrity",
]
