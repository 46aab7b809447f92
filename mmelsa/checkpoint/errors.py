"""The errors of checkpoint reading: each message is one line that names the file."""
import pickle

__all__ = ['CheckpointError', 'UnsafeCheckpointError', 'CorruptCheckpointError',
           'CheckpointMismatchError', 'UntrustedConfigError', 'CheckpointTooLargeError']


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file holds something other than plain data (or needs code to be rebuilt), and
    nobody said it is trusted."""


class CorruptCheckpointError(CheckpointError):
    """The file is empty, truncated or not a PyTorch checkpoint at all."""


class CheckpointTooLargeError(UnsafeCheckpointError):
    """The file declares more data than it holds (or more objects than any checkpoint has)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model they are loaded into."""


class UntrustedConfigError(CheckpointError, ValueError):
    """Building from the config inside a checkpoint was asked of a file that is not trusted."""
