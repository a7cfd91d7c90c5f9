"""The progress callbacks of the library: one signature for work in units, one for named stages.

Long work takes ``progress`` (and, where it has stages, ``stage``) and calls it as it goes; the
library stays silent by default and the CLI binds both to a rich progress bar.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "Stage"]

#: ``progress(done, total)``: units of work done so far out of ``total`` (blocks, epochs, snapshots).
Progress = Callable[[int, int], None]
#: ``stage(name)``: a named stage begins (an analysis of ``traj report``, a run of a replay).
Stage = Callable[[str], None]
