"""Training-time tools: KGA (an optimizer that accelerates training), the prediction-based Koopman
jumps it is compared with, and the replay of a recipe with each.

Kept apart from :mod:`traj.analysis`, whose analyses read a recorded store offline.
"""

from .jump import JumpLog, JumpOptions, KoopmanJump, dmd_jump
from .kga import KGA, KGALog, KGAOptions
from .replay import JumpRecord, ReplayComparison, ReplayResult, ReplayRun, replay

__all__ = ["KGA", "JumpLog", "JumpOptions", "JumpRecord", "KGALog", "KGAOptions", "KoopmanJump", "ReplayComparison",
           "ReplayResult", "ReplayRun", "dmd_jump", "replay"]
