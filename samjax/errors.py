"""The errors samjax raises for checkpoints and data that cannot be used."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asked to import or call something other than tensors and plain containers."""


class DataError(ValueError):
    """A data file or folder cannot be turned into training examples; the message names the file."""


class ConfigError(ValueError):
    """A config value cannot be used; the message names the field, the value and the fix, in one line."""
