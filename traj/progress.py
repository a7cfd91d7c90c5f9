"""The progress callbacks of the library: one signature for work in units, one for named stages.

Long work takes ``progress`` (and, where it has stages, ``stage``) and calls it as it goes; the
library stays silent by default and the CLI binds both to a rich progress bar.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "Stage", "counter"]

#: ``progress(done, total)``: units of work done so far out of ``total`` (blocks, epochs, snapshots).
Progress = Callable[[int, int], None]
#: ``stage(name)``: a named stage begins (an analysis of ``traj report``, a run of a replay).
Stage = Callable[[str], None]


def counter(progress: Progress | None, total: int) -> Callable[[], None]:
    """``tick()``: one more of ``total`` units done, reported to ``progress`` (nothing without one).

    For work counted in calls rather than blocks (the recipe's model evaluations): the first report,
    ``progress(0, total)``, comes at once, so a bar shows the new total before the first unit ends.
    """
    if progress is None:
        return lambda: None
    done = 0
    progress(0, total)

    def tick() -> None:
        nonlocal done
        done += 1
        progress(done, total)

    return tick
