"""Reading and writing model weights: memory-mapped safetensors in, streamed shards out."""

from modularevo.io.hf_files import copy_model_files, model_card, read_config, vocab_size
from modularevo.io.reader import ModelReader, TensorInfo, open_model, read_header, resolve_files
from modularevo.io.writer import ShardedWriter, TensorSpec, assign_shards, shard_name

__all__ = [
    "ModelReader",
    "ShardedWriter",
    "TensorInfo",
    "TensorSpec",
    "assign_shards",
    "copy_model_files",
    "model_card",
    "open_model",
    "read_config",
    "read_header",
    "resolve_files",
    "shard_name",
    "vocab_size",
]
