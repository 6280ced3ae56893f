"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class SwiftFormerError(Exception):
    """Base class of every error caused by bad input (names, paths, files, shapes)."""


class UnknownModelError(SwiftFormerError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class CheckpointError(SwiftFormerError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the model."""


class DataError(SwiftFormerError):
    """A dataset folder or image that cannot be used."""


class OutputError(SwiftFormerError):
    """A file or folder that cannot be written (read-only, full disk, a folder where a file is wanted)."""
