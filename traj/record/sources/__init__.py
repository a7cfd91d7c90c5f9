"""Checkpoint formats ``traj import`` reads, one module each, and the detection of a source's layout.

- :mod:`.torch_files`: ``torch.save`` files (.pt, .pth, .bin, .tar, Lightning .ckpt), ``weights_only``
- :mod:`.safetensors_files`: ``.safetensors`` files and sharded ``*.safetensors.index.json``
- :mod:`.dcp`: torch.distributed.checkpoint directories (FSDP, Lightning sharded ``.ckpt/``)
- :mod:`.huggingface`: Trainer output, checkpoint and saved-model folders
- :mod:`.lightning`: what a Lightning checkpoint records besides the weights
- :mod:`.files`: what every format checks before it reads (regular files only; JSON bounded in size and depth)
- :mod:`.detect`: :func:`scan_source`, which finds the layout and checks it before anything is written
"""

from .base import Snapshot, TensorSpec, WeightsReader
from .detect import BUFFER_SUFFIXES, CHECKPOINT_SUFFIXES, KINDS, SourceScan, scan_source

__all__ = ["BUFFER_SUFFIXES", "CHECKPOINT_SUFFIXES", "KINDS", "Snapshot", "SourceScan", "TensorSpec", "WeightsReader",
           "scan_source"]
