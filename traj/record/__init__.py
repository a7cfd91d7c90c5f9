"""Recording: the Recorder and its background writer; writes only through traj.store."""

from .recorder import Capture, Recorder, RecorderStats, layout_of

__all__ = ["Capture", "Recorder", "RecorderStats", "layout_of"]
