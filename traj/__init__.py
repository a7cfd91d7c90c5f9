"""traj: record a neural network's weight trajectory and study its training dynamics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import TrajError
from .store import Layout, RunStore, StoreWriter, open_store

if TYPE_CHECKING:  # pragma: no cover
    from .record import Recorder

__all__ = ["Layout", "Recorder", "RunStore", "StoreWriter", "TrajError", "__version__", "open_store"]


def __getattr__(name: str) -> Any:
    # The recorder needs torch; import it only when asked, so `import traj` stays light.
    if name == "Recorder":
        from .record import Recorder

        return Recorder
    raise AttributeError(f"module 'traj' has no attribute {name!r}")
