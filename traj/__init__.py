"""traj: record a neural network's weight trajectory and study its training dynamics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import TrajError
from .store import Layout, RunStore, StoreWriter, open_store

if TYPE_CHECKING:  # pragma: no cover
    from .record import Recorder

__all__ = ["KGA", "Engine", "Layout", "Recorder", "RunStore", "StoreWriter", "TrajError", "__version__", "apply_masks", "cmd",
           "conjugacy", "dmd", "load_cmd", "open_store", "overview", "prune"]


def __getattr__(name: str) -> Any:
    # Import on first use, so `import traj` stays light (the recorder needs torch).
    if name == "Recorder":
        from .record import Recorder

        return Recorder
    if name == "dmd":
        from .analysis.dmd import dmd

        return dmd
    if name == "cmd":
        from .analysis.cmd import cmd

        return cmd
    if name == "load_cmd":
        from .analysis.cmd import load

        return load
    if name == "overview":
        from .analysis.overview import overview

        return overview
    if name == "prune":
        from .analysis.prune import prune

        return prune
    if name == "apply_masks":
        from .analysis.masks import apply_masks

        return apply_masks
    if name == "conjugacy":
        from .analysis.conjugacy import conjugacy

        return conjugacy
    if name == "KGA":
        from .training import KGA

        return KGA
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module 'traj' has no attribute {name!r}")
