"""One rule for prunable parameters (traj.prunable): the Recorder, the callbacks and the importers agree."""

import pytest
import torch
from torch import nn

from traj.prunable import is_prunable, prunable_columns, prunable_mask, prunable_names
from traj.record import layout_of
from traj.record.importers import import_checkpoints
from traj.store import Layout


@pytest.mark.parametrize("name, shape, expected", [
    ("fc.weight", (4, 3), True), ("conv.weight", (8, 3, 3, 3), True), ("attn.in_proj_weight", (12, 4), True),
    ("h.0.attn.c_attn.weight", (4, 12), True), ("unembed.weight", (5, 4), True), ("lm_head.weight", (9, 4), True),
    ("fc.bias", (4,), False), ("norm.weight", (4,), False), ("rnn.weight_ih_l0", (8, 4), False),
    ("embed.weight", (9, 4), False), ("transformer.wte.weight", (9, 4), False), ("wpe.weight", (9, 4), False),
    ("model.embed_tokens.weight", (9, 4), False), ("bert.embeddings.word_embeddings.weight", (9, 4), False),
    ("tok_embeddings.weight", (9, 4), False), ("gpt_neox.embed_in.weight", (9, 4), False),
])
def test_the_rule(name, shape, expected):
    assert is_prunable(name, shape) is expected


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(9, 4)
        self.pos = nn.Embedding(3, 4)  # an embedding whose name does not say so
        self.attn = nn.MultiheadAttention(4, 2)
        self.norm = nn.LayerNorm(4)
        self.conv = nn.Conv1d(4, 4, 3)
        self.fc = nn.Linear(4, 2)


def test_recorder_and_importer_agree(tmp_path):
    model = Model()
    recorded, _ = layout_of(model)
    expected = ["attn.in_proj_weight", "attn.out_proj.weight", "conv.weight", "fc.weight"]
    assert [e.name for e in recorded.prunable_entries] == expected  # the model says pos is an embedding
    (tmp_path / "c").mkdir()
    for step in range(3):
        state = {k: v for k, v in model.state_dict().items() if k != "pos.weight"}
        torch.save({"state_dict": state, "global_step": step}, tmp_path / "c" / f"{step}.pt")
    imported = import_checkpoints(tmp_path / "c", tmp_path / "s.zarr")
    assert [e.name for e in imported.layout.prunable_entries] == expected


def test_columns_and_mask_come_from_the_layout():
    layout = Layout.from_shapes([("a.weight", (2, 3)), ("a.bias", (2,)), ("b.weight", (4, 1))],
                                prunable=prunable_names([("a.weight", (2, 3)), ("a.bias", (2,)), ("b.weight", (4, 1))]))
    assert prunable_columns(layout) == [slice(0, 6), slice(8, 12)]
    assert prunable_mask(layout).tolist() == [True] * 6 + [False] * 2 + [True] * 4
