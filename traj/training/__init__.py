"""Training-time tools: KGA (an optimizer that accelerates training), the prediction-based Koopman
jumps it is compared with, and the replay of a recipe with each.

Kept apart from :mod:`traj.analysis`, whose analyses read a recorded store offline. The names below are
loaded on first use (PEP 562), so that :mod:`traj.training.options` (what the CLI builds its options
from) is importable without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .jump import JumpLog, KoopmanJump, dmd_jump
    from .kga import KGA, KGALog
    from .options import JumpOptions, KGAOptions
    from .replays import JumpRecord, ReplayComparison, ReplayResult, ReplayRun, replay

_WHERE = {"JumpLog": "jump", "KoopmanJump": "jump", "dmd_jump": "jump", "KGA": "kga", "KGALog": "kga",
          "JumpOptions": "options", "KGAOptions": "options", "JumpRecord": "replays", "ReplayComparison": "replays",
          "ReplayResult": "replays", "ReplayRun": "replays", "replay": "replays"}

__all__ = ["KGA", "JumpLog", "JumpOptions", "JumpRecord", "KGALog", "KGAOptions", "KoopmanJump", "ReplayComparison",
           "ReplayResult", "ReplayRun", "dmd_jump", "replay"]  # the names of _WHERE (tests/test_public_apis.py)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "jump", "kga", "options", "replays"})
