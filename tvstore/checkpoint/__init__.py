"""Read and write checkpoints lazily, one tensor at a time."""

from tvstore.checkpoint.reader import Checkpoint, TensorInfo, open_checkpoint
from tvstore.checkpoint.writer import plan_shards, write_checkpoint_dir, write_safetensors

__all__ = [
    "Checkpoint",
    "TensorInfo",
    "open_checkpoint",
    "plan_shards",
    "write_checkpoint_dir",
    "write_safetensors",
]
