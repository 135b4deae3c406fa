"""The errors samjax raises for checkpoints that cannot be used."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asked to import or call something other than tensors and plain containers."""
