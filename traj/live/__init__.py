"""See the dynamics while the run trains: a live Koopman monitor on sketched snapshots.

``Recorder(path, model, live=LiveOptions(window=50, every=10, sketch=512))`` (and the Hugging Face,
Lightning and distributed callbacks, which take the same ``live=``) fit DMD on the last window of
sketched snapshots every few snapshots, off the training thread, and write each fit's numbers into
the store as metrics ``live.*`` and to any tracker (:mod:`traj.live.trackers`).
"""

from .monitor import LiveFit, LiveOptions, Monitor, Tracker, spectral_distance
from .sketch import Sketch

__all__ = ["LiveFit", "LiveOptions", "Monitor", "Sketch", "Tracker", "spectral_distance"]
