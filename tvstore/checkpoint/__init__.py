"""Read and write checkpoints lazily, one tensor at a time."""

from tvstore.checkpoint.reader import Checkpoint, TensorInfo, open_checkpoint
from tvstore.checkpoint.writer import ShardedWriter, parse_size, write_checkpoint_dir

__all__ = ["Checkpoint", "ShardedWriter", "TensorInfo", "open_checkpoint", "parse_size", "write_checkpoint_dir"]
