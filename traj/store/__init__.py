"""The run store: format v2 (v1 still read and appended to): schema, reading (RunStore) and writing (StoreWriter)."""

from .lock import is_locked
from .run_store import RunStore, open_store
from .schema import FORMAT_NAME, FORMAT_VERSION, Layout, ParamEntry
from .writer import StoreWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Layout",
    "ParamEntry",
    "RunStore",
    "StoreWriter",
    "is_locked",
    "open_store",
]
