"""``traj prune``: Koopman pruning beside magnitude, gradient and random baselines (docs/methods.md §3; Redman et al. 2022).

For an epoch, exact DMD of its iteration-level snapshots (§1) gives λ1, the eigenvalue closest
to 1, and the real, positive, decaying modes. Scores (one number per weight):

- KMP  |Re(b1 φ1)ᵢ|                     Koopman magnitude
- KGP  Σ_j |Re(bj φj)ᵢ| over the KGP modes  Koopman gradient: real positive λj < 1 whose
                                        scaled mode ‖bj φj‖ is at least ``kgp_fraction`` of the
                                        largest such mode (Redman et al. 2022 fig. 4 keeps norms > 0.85)
- GMP  |θᵢ| at the end of the epoch
- JGP  |ḡᵢ|, GGP |ḡᵢ θᵢ|                ḡ: gradient averaged over a batch set (recorded
                                        ``grads`` of the epoch, else the recipe's fixed batches)
- LSP  GMP's per-layer counts, random within each layer (several seeds)

KMP and KGP need the modes only as scores, so they come from ONE second pass (D·C with the
b-scaled columns of C), never materialising the N×r modes. ‖bj φj‖ comes from CᴴGC.

:class:`PruneParams` declares and checks the options once (``params.py``); :func:`fit_prune` scores
(``scores.py``), masks (``masking.py``) and evaluates with the recipe it is given (``fit.py``); the frozen
:class:`PruneResult` (``result.py``) holds every mask and number by method, indexed like its
``compressions`` array (``to_dict()`` is the JSON view, keyed by compression there).
"""

from __future__ import annotations

from ..masks import read_masks, write_masks
from .fit import fit_prune, prune
from .masking import lsp_mask, mask_from_scores, mask_overlap, prunable_columns
from .params import DEFAULT_COMPRESSIONS, DEFAULT_RANK, MAX_SEEDS, METHODS, SCOPES, PruneMethod, PruneParams, Scope
from .result import EpochOverlap, KGPMode, MetricStats, PruneResult, compression_key
from .scores import EpochScores, WindowScores, compute_scores, epoch_rows, score_window

__all__ = ["DEFAULT_COMPRESSIONS", "DEFAULT_RANK", "EpochOverlap", "EpochScores", "KGPMode", "MAX_SEEDS", "METHODS",
           "MetricStats", "PruneMethod", "PruneParams", "PruneResult", "SCOPES", "Scope", "WindowScores",
           "compression_key", "compute_scores", "epoch_rows", "fit_prune", "lsp_mask", "mask_from_scores",
           "mask_overlap", "prunable_columns", "prune", "read_masks", "score_window", "write_masks"]
