"""Score your own Hugging Face causal language model with traj: the smallest recipe.

traj's analyses that evaluate weights (``traj cmd``, ``traj dmd --evaluate``, ``traj prune``,
``traj report``, ``traj landscape``) load a flat θ from the store into your model and ask it for a
loss. A recipe tells them how: which model (:meth:`build_model`), which data (:meth:`load_data`), and
how a loss and an accuracy are computed from the model's output (:meth:`loss_fn`, :meth:`metrics`).
Edit the two functions marked EDIT, then, from the directory holding this file::

    traj cmd run.zarr --recipe hf_causal_lm:recipe
    traj dmd run.zarr --evaluate --recipe hf_causal_lm:recipe
    traj prune run.zarr --recipe hf_causal_lm:recipe --refine-epochs 0

(``--recipe module:function``: traj imports this module and calls ``recipe()``; a store never makes traj
import code.) The model must be the one the store recorded: the same parameter names and shapes, which
traj checks before scoring anything. In Python, pass ``recipe=recipe()`` to ``traj.cmd``/``traj.prune``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from traj.recipes import Dataset, Recipe


def build_model() -> nn.Module:
    """EDIT: your model, built as it was trained (the weights come from the store, so no checkpoint is
    needed; ``AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(LOCAL_DIR))`` for a saved one)."""
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32))


def load_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """EDIT: token ids of a few training and validation sequences, each of shape (n, sequence length).

    Keep them few: every scored θ runs all validation sequences through the model, and commands score
    12 to 100 θ's (traj refuses a recipe whose one evaluation passes more than 2.5e9 samples × parameters).
    The training sequences are used only by ``traj prune --refine-epochs`` and gradient-based pruning.
    """
    tokens = torch.randint(0, 100, (24, 32), generator=torch.Generator().manual_seed(0))
    return tokens[:16], tokens[16:]


class CausalLM(Recipe):
    """Next-token prediction with a Hugging Face model: loss is the mean cross-entropy of each next token,
    as ``model(input_ids, labels=input_ids).loss`` computes it; accuracy is the share of next tokens
    predicted right."""

    name = "hf-causal-lm"
    summary = "a Hugging Face causal language model scored on next-token prediction"
    defaults = {"batch_size": 8, "lr": 1e-3, "optimizer": "adamw", "epochs": 1}

    def build_model(self) -> nn.Module:
        return build_model()

    def load_data(self) -> Dataset:
        train, val = load_tokens()
        return Dataset(x_train=train, y_train=train, x_val=val, y_val=val)  # the labels are the inputs, shifted

    def loss_fn(self, output, target: torch.Tensor) -> torch.Tensor:
        logits = output.logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1))

    @torch.no_grad()
    def metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        model.eval()
        output = model(x)
        model.train()
        correct = output.logits[:, :-1].argmax(dim=-1) == y[:, 1:]
        return {"loss": float(self.loss_fn(output, y)), "accuracy": float(correct.float().mean())}

    def evaluate(self, theta) -> dict[str, float]:
        """The validation metrics of the weights θ (the base recipe also scores the training data)."""
        model = self.load_theta(self.new_model(), theta)
        return self.metrics(model, self.data.x_val, self.data.y_val)

    def evaluation_samples(self) -> int:
        return int(len(self.data.x_val))


def recipe() -> CausalLM:
    """What ``--recipe hf_causal_lm:recipe`` calls."""
    return CausalLM()
