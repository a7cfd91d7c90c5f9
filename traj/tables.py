"""Results as tables: ``to_dataframe()`` of the results whose data is a table, for notebooks.

pandas is optional (``pip install 'traj[pandas]'``): without it ``to_dataframe()`` raises an
ImportError that says so, and ``to_dict()`` gives the same numbers as plain Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dataframe"]


def dataframe(columns: Mapping[str, Sequence[Any] | Any], *, index: str | Sequence[str] | None = None) -> Any:
    """A ``pandas.DataFrame`` of equal-length ``columns`` (name → values), indexed by the column(s) ``index``."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe() needs pandas, which is not installed: pip install pandas (or "
                          "pip install 'traj[pandas]'); to_dict() gives the same numbers without it") from None
    frame = pd.DataFrame(dict(columns))
    return frame.set_index(list(index) if not isinstance(index, str) else index) if index is not None else frame
