"""Checkpoint readers, per-family name maps and writers. Imports no model, task or generation code."""
from bert4k.checkpoints.readers import CorruptCheckpoint, read_tensors, resolve_checkpoint
from bert4k.checkpoints.specs import CheckpointMismatch, LoadReport, WeightSpec
from bert4k.checkpoints.writers import save_safetensors, save_tf_checkpoint

__all__ = ["CheckpointMismatch", "CorruptCheckpoint", "LoadReport", "WeightSpec", "read_tensors", "resolve_checkpoint",
           "save_safetensors", "save_tf_checkpoint"]
