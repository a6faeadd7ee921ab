"""Read and write checkpoints lazily, one tensor at a time."""

from tvstore.checkpoint.reader import Checkpoint, TensorInfo, open_checkpoint
from tvstore.checkpoint.writer import parse_size, plan_shards, write_checkpoint_dir, write_safetensors

__all__ = [
    "Checkpoint",
    "TensorInfo",
    "open_checkpoint",
    "parse_size",
    "plan_shards",
    "write_checkpoint_dir",
    "write_safetensors",
]
