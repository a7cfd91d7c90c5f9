"""Which parameters may be pruned: one rule, used wherever a store's layout is made.

A parameter is **prunable** when it is the weight of a linear or conv layer (docs/methods.md §3.3; the
classifier too), told by name and shape alone so that every way into a store agrees:

- its ``state_dict`` name ends in ``weight`` (``fc.weight``, ``attn.in_proj_weight``),
- it has rank >= 2 (biases and normalisation scales have rank 1), and
- it is not an embedding table: the weight of an ``nn.Embedding``/``nn.EmbeddingBag`` where the
  model is at hand (:func:`embedding_names`), and a name whose module part names an embedding
  (``embed``, ``embed_tokens``, ``word_embeddings``, GPT-2's ``wte``/``wpe``) in any case.

The Recorder and the framework callbacks (:func:`traj.record.layout_of`) and the checkpoint
importers (:mod:`traj.record.sources.detect`) call :func:`prunable_names`; the store records
the result in its layout, and ``traj prune`` and the masks read it back from there
(:func:`prunable_columns`, :func:`prunable_mask`): no analysis decides it again. One case has
nothing to apply the rule to: a bare (T, N) array (``traj import`` of a ``.npy``) is one flat
tensor without names or shapes, and all of it is prunable.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .store import Layout

__all__ = ["embedding_names", "is_embedding_name", "is_prunable", "prunable_columns", "prunable_mask",
           "prunable_names"]

#: A module name that holds an embedding table (the name's component before ``.weight``): ``embed``,
#: ``tok_embeddings``, ``word_embeddings``, ``embed_tokens``, ``embed_in``, ``embed_positions``, ``wte``, ``wpe``.
_EMBEDDING_MODULE = re.compile(r"^(\w+_)?(embed|embeds|embedding|embeddings)$|^embed_(tokens|in|positions)$|^(wte|wpe)$",
                               re.IGNORECASE)


def is_embedding_name(name: str) -> bool:
    """True when the parameter's module, the name's last component before ``weight``, names an embedding."""
    module = name.rsplit(".", 1)[0] if "." in name else ""
    last = module.rsplit(".", 1)[-1]
    return _EMBEDDING_MODULE.match(last) is not None


def is_prunable(name: str, shape: Sequence[int], *, embeddings: Collection[str] = ()) -> bool:
    """The rule of this module for one parameter (``embeddings``: names known to be embedding tables)."""
    return (name.endswith("weight") and len(shape) >= 2 and name not in embeddings
            and not is_embedding_name(name))


def prunable_names(tensors: Iterable[tuple[str, Sequence[int]]], *, embeddings: Collection[str] = ()) -> list[str]:
    """The names among ``(name, shape)`` pairs that are prunable, in order."""
    return [name for name, shape in tensors if is_prunable(name, shape, embeddings=embeddings)]


def embedding_names(model: Any) -> set[str]:
    """``state_dict`` names of the embedding tables of a torch model (``nn.Embedding``, ``nn.EmbeddingBag``)."""
    from torch import nn

    return {f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, nn.Embedding | nn.EmbeddingBag)}


def prunable_columns(layout: Layout) -> list[slice]:
    """The θ columns of the layout's prunable tensors (as its store recorded them), one slice per tensor."""
    return [e.columns for e in layout.prunable_entries if e.size]


def prunable_mask(layout: Layout) -> np.ndarray:
    """(N,) bool: True on the columns of the layout's prunable tensors."""
    mask = np.zeros(layout.n_params, dtype=bool)
    for columns in prunable_columns(layout):
        mask[columns] = True
    return mask
