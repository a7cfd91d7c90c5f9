"""Snapshot windows and their checks, shared by every analysis.

A window ``a:b`` holds the snapshots θa … θb, both included (docs/methods.md, Notation). A window
the user gave that does not fit the run is a bad parameter (:class:`ParameterError` naming
``window``); a run too short for a method when no window was given is not applicable to it
(:class:`WindowTooShortError`), which ``traj report`` shows as a skipped section.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..checks import check_int
from ..errors import NonFiniteDataError, ParameterError, UnevenSpacingError, WindowTooShortError
from ..store import RunStore
from ..store.info import base_spacing, gaps_in

__all__ = ["Window", "check_even_spacing", "check_gram_finite", "default_last", "hankel_gram", "parse_window", "raise_nonfinite",
           "resolve_window", "stacked_hankel_gram"]

#: A window as callers give it: "a:b" (either end may be omitted or negative), a pair, or None (the whole run).
Window = str | Sequence[int] | None


def check_window(name: str, window: Window) -> Window:
    """The form of a window, checked before any work (``"a:b"``, either end optional, or a pair of integers);
    its ends are checked against a store by :func:`resolve_window`. Returned as given."""
    if window is None:
        return None
    if isinstance(window, str):
        lo, sep, hi = window.partition(":")
        if not sep:
            raise ParameterError(name, f"must look like a:b (snapshot indices, both included), got {window!r}")
        try:
            for end in (lo, hi):
                if end.strip():
                    int(end)
        except ValueError:
            raise ParameterError(name, f"must look like a:b with integers, got {window!r}") from None
        return window
    try:
        if len(window) != 2:
            raise TypeError
        for end in window:
            check_int(name, end)
    except (TypeError, ValueError, ParameterError):
        raise ParameterError(name, f"must be 'a:b' or a pair of integers, got {window!r}") from None
    return window


def parse_window(text: Window, n_snapshots: int, *, minimum: int = 3, method: str = "DMD") -> tuple[int, int]:
    """A window ``"a:b"`` of snapshot indices, both ends included (docs/methods.md, Notation: θa … θb).

    Either end may be omitted (``"10:"``, ``":50"``) or negative (counted from the end).
    The window must hold at least ``minimum`` snapshots.
    """
    if text is None:
        return 0, n_snapshots - 1
    if isinstance(text, str):
        lo_text, sep, hi_text = text.partition(":")
        if not sep:
            raise ParameterError("window", f"must look like a:b (snapshot indices, both included), got {text!r}")
        try:
            lo = int(lo_text) if lo_text.strip() else 0
            hi = int(hi_text) if hi_text.strip() else n_snapshots - 1
        except ValueError:
            raise ParameterError("window", f"must look like a:b with integers, got {text!r}") from None
    else:
        try:
            lo, hi = (check_int("window", x) for x in text)
        except (TypeError, ValueError):
            raise ParameterError("window", f"must be 'a:b' or a pair of integers, got {text!r}") from None
    given = (lo, hi)
    lo = lo + n_snapshots if lo < 0 else lo
    hi = hi + n_snapshots if hi < 0 else hi
    if not (0 <= lo < n_snapshots and 0 <= hi < n_snapshots):
        raise ParameterError("window", f"{given[0]}:{given[1]} lies outside the run's snapshots 0:{n_snapshots - 1}")
    if hi < lo:
        ends = f" (snapshots {lo}:{hi} of 0:{n_snapshots - 1}; a negative end counts from the last)" if given != (lo, hi) else ""
        raise ParameterError("window", f"{given[0]}:{given[1]} ends before it starts{ends}")
    if hi - lo + 1 < minimum:
        raise ParameterError("window", f"{given[0]}:{given[1]} holds {hi - lo + 1} snapshot(s); "
                                       f"{method} needs at least {minimum}")
    return lo, hi


def default_last(store: RunStore) -> int:
    """The last snapshot of a default window for a method that needs evenly spaced snapshots: the last one,
    except a last snapshot off the recording grid after one on it (a callback's end-of-training snapshot,
    step 25 of a store recorded every 10 steps), which is left out."""
    n = store.n_snapshots
    every = store.spacing.get("every") if isinstance(store.spacing, dict) else None
    if n >= 2 and store.spacing.get("unit") == "step" and isinstance(every, int) and every > 1:
        last, before = int(store.steps[-1]), int(store.steps[-2])
        if last % every and not before % every and last - before < every:
            return n - 2
    return n - 1


def resolve_window(store: RunStore, window: Window, *, minimum: int = 3, method: str = "DMD",
                   spaced: bool = False) -> tuple[int, int]:
    """The window of ``store`` to analyse: the one given (checked), or the whole run when it is long enough
    (``spaced``: without a last snapshot off the recording grid, :func:`default_last`)."""
    if window is None and store.n_snapshots < minimum:
        raise WindowTooShortError(f"{store.path}: {store.n_snapshots} snapshot(s); {method} needs at least {minimum}")
    if window is None and spaced:
        last = default_last(store)
        if last + 1 >= minimum:
            return 0, last
    return parse_window(window, store.n_snapshots, minimum=minimum, method=method)


def check_gram_finite(gram: np.ndarray, store: RunStore, offset: int) -> None:
    """A NaN/Inf anywhere in snapshot k makes G[k, k] non-finite: found without another pass.

    ``offset`` is the window's first snapshot; the error names the first bad snapshot and its step.
    """
    raise_nonfinite(store, np.flatnonzero(~np.isfinite(np.diag(gram))) + offset)


def raise_nonfinite(store: RunStore, bad: np.ndarray) -> None:
    """Refuse a window whose snapshots ``bad`` (store indices) hold NaN or Inf; nothing when there are none."""
    if bad.size:
        k = int(bad[0])
        raise NonFiniteDataError(
            f"{store.path.name}: snapshot {k} (step {int(store.steps[k])}) holds NaN or Inf; "
            f"{bad.size} snapshot(s) in the window are not finite"
        )


def check_even_spacing(store: RunStore, lo: int, hi: int, *, minimum: int = 3, method: str = "DMD") -> int:
    """The step spacing of snapshots ``lo..hi``; :class:`UnevenSpacingError` when they are not evenly spaced.

    DMD fits one operator per snapshot spacing (docs/methods.md §1.6: λ per Δt), so snapshots at steps
    0, 5, 10, 100 are no DMD window. The error names the spacings found and the longest evenly spaced
    window inside (at least ``minimum`` snapshots), if any, to analyse instead.
    """
    steps = np.asarray(store.steps[lo : hi + 1], dtype=np.int64)
    spacings = np.diff(steps)
    if spacings.size == 0 or (spacings == spacings[0]).all():
        return int(spacings[0]) if spacings.size else 1
    values, counts = np.unique(spacings, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shown = ", ".join(f"{int(values[i])} ({int(counts[i])}×)" for i in order[:4])
    if values.size > 4:
        shown += f" and {values.size - 4} other spacing(s)"
    change = int(np.flatnonzero(spacings != spacings[0])[0])  # spacings[change] is the first that differs
    # the longest run of equal consecutive spacings: runs[i] = length of the run ending at spacing i
    best_end, best_len, run = 0, 1, 1
    for i in range(1, spacings.size):
        run = run + 1 if spacings[i] == spacings[i - 1] else 1
        if run > best_len:
            best_end, best_len = i, run
    suggestion = None
    whole = " (the whole run)" if lo == 0 and hi == store.n_snapshots - 1 else ""
    if lo == 0 and hi == default_last(store) < store.n_snapshots - 1:
        whole = " (the whole run but its last snapshot, off the recording grid)"
    problem = (f"{lo}:{hi}{whole} holds snapshots at unevenly spaced steps: spacings {shown} steps (the first "
               f"change after snapshot {lo + change}, step {int(steps[change])} → {int(steps[change + 1])}); "
               f"{method} assumes evenly spaced snapshots")
    gaps = gaps_in(steps)
    sides = []
    if gaps:  # a resume past the store's end: name the gap, and the windows on either side of it
        g = lo + gaps[0]
        for a, b, where in ((lo, g, "before"), (g + 1, hi, "after")):
            side = np.diff(np.asarray(store.steps[a : b + 1], dtype=np.int64))
            if b - a + 1 >= minimum and (side == side[0]).all():
                sides.append(f"{a}:{b} ({b - a + 1} snapshots {where} it)")
        more = f"; {len(gaps) - 1} more gap(s) later" if len(gaps) > 1 else ""
        problem += (f": a gap, no snapshot between steps {int(steps[gaps[0]])} and {int(steps[gaps[0] + 1])} "
                    f"(snapshots {g} and {g + 1}; {base_spacing(steps)} steps apart elsewhere{more})")
    if sides:
        problem += "; give a window on one side of it: " + " or ".join(sides)
        problem += (f", or the steps on one side (--steps :{int(steps[gaps[0]])} or --steps {int(steps[gaps[0] + 1])}:)")
        if best_len + 1 >= minimum:
            a = lo + best_end - best_len + 1
            suggestion = (a, a + best_len)
    elif best_len + 1 >= minimum:
        a = lo + best_end - best_len + 1
        suggestion = (a, a + best_len)
        problem += (f": give an evenly spaced window, e.g. {a}:{a + best_len} ({best_len + 1} snapshots, "
                    f"{int(spacings[best_end])} steps apart)")
    else:
        problem += f": no {minimum} consecutive snapshots in it are evenly spaced"
    raise UnevenSpacingError("window", problem, spacings=tuple(int(v) for v in values), suggestion=suggestion)


def hankel_gram(gram: np.ndarray, delays: int) -> np.ndarray:
    """Gram of the delay-embedded snapshots: H[j, k] = Σ_s G[j+s, k+s] (shifted diagonal sub-blocks).

    The d-delay (Hankel) snapshot h_k = [θ_k; θ_{k+1}; …; θ_{k+d}] has h_jᵀh_k = Σ_s θ_{j+s}ᵀθ_{k+s}, so the
    embedded window's Gram costs no pass over the data (docs/methods.md §4.1; ``traj dmd --delays``, ``traj conjugacy``).
    """
    m = gram.shape[0] - delays
    return sum(gram[s : s + m, s : s + m] for s in range(delays + 1))


def stacked_hankel_gram(gram: np.ndarray, n_traj: int, delays: int) -> tuple[np.ndarray, np.ndarray]:
    """Gram of the delay-embedded snapshots of ``n_traj`` stacked trajectories, and which of its rows are snapshots.

    ``gram`` is the pooled Gram of the trajectories' snapshots, trajectory-major: entry (a·T + s, b·T + t)
    is x_a(s)ᵀ x_b(t) for trajectories a, b of T snapshots each. The d-delay snapshots of trajectory a have
    h_a(j)ᵀ h_b(k) = Σ_s x_a(j+s)ᵀ x_b(k+s) (:func:`hankel_gram` per pair of trajectories). Each
    trajectory's m = T − d embedded snapshots are followed by a separator (a zero row and column, marked
    False in ``valid``), so the pairs (h_k, h_k+1) of DMD never cross from one trajectory to the next
    (``ReducedOperator.from_gram(..., valid=valid)``): the pairs are those of :func:`stacked_hankel`.

    Returns
    -------
    gram : ndarray of shape (n_traj·(m + 1) − 1, n_traj·(m + 1) − 1)
    valid : ndarray of bool of the same length
    """
    t = gram.shape[0] // n_traj
    m = t - delays
    blocks = np.asarray(gram, dtype=np.float64).reshape(n_traj, t, n_traj, t)
    embedded = sum(blocks[:, s : s + m, :, s : s + m] for s in range(delays + 1))
    out = np.zeros((n_traj, m + 1, n_traj, m + 1))
    out[:, :m, :, :m] = embedded
    size = n_traj * (m + 1) - 1
    valid = np.ones(n_traj * (m + 1), dtype=bool)
    valid[m :: m + 1] = False
    return out.reshape(n_traj * (m + 1), n_traj * (m + 1))[:size, :size], valid[:size]
