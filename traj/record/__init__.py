"""Recording: the Recorder and its background writer; writes only through traj.store."""

from .recorder import PRUNABLE_MODULES, Capture, Recorder, RecorderStats, layout_of

__all__ = ["PRUNABLE_MODULES", "Capture", "Recorder", "RecorderStats", "layout_of"]
