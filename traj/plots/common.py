"""Shared plotting helpers (Agg backend: traj never opens a window)."""

from __future__ import annotations

import io
from typing import Any


def new_figure(*args: Any, **kwargs: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, drawn without LaTeX whatever the user's matplotlibrc says.

    Store text in a figure is data (see :mod:`traj.display`): with ``text.usetex`` on it would
    be handed to LaTeX. A glyph missing from the font (a layer name in an unusual script) is
    drawn as a box without a warning.
    """
    import warnings

    import matplotlib
    from matplotlib.text import Text

    buf = io.BytesIO()
    with matplotlib.rc_context({"text.usetex": False}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        for text in fig.findobj(Text):
            text.set_usetex(False)
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
