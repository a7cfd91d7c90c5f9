"""Recording: the Recorder and its background writer; writes only through traj.store."""

from .options import RecordOptions
from .recorder import Capture, Recorder, RecorderStats, layout_of

__all__ = ["Capture", "RecordOptions", "Recorder", "RecorderStats", "layout_of"]
