"""Training-time tools: KGA (an optimizer that accelerates training) and the KGA replay of a recipe.

Kept apart from :mod:`traj.analysis`, whose analyses read a recorded store offline.
"""

from .kga import KGA, KGALog, KGAOptions
from .replay import ReplayComparison, ReplayResult, ReplayRun, replay

__all__ = ["KGA", "KGALog", "KGAOptions", "ReplayComparison", "ReplayResult", "ReplayRun", "replay"]
