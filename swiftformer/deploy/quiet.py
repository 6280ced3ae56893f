"""The runtimes' lines that tell the user nothing, left out where we call the library; warnings of their own stay.

Each library's own switch first (the LiteRT module sets litert-torch's and TensorFlow's); where none exists, a
logger's level for the call, and for C++ code that writes to the process's stderr (file descriptor 2) a filter
that catches those lines during the call and writes every other line back. ``--verbose`` (the root logger at
DEBUG) keeps everything.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# torchao registers an Enum with torch's pytree on import, which torch 2.12+ calls deprecated: a note to torchao's
# authors, logged on every ExecuTorch and LiteRT export and every ExecuTorch eval.
PYTREE_LOGGER = "torch.utils._pytree"


def verbose() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def quiet(loggers: tuple[str, ...] = (), lines: re.Pattern | None = None) -> Iterator[None]:
    """``loggers`` at ERROR and the stderr ``lines`` left out for the block, unless :func:`verbose`."""
    if verbose():
        yield
        return
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with filtered_stderr(lines) if lines is not None else contextlib.nullcontext():
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern) -> Iterator[None]:
    """File descriptor 2 caught for the block and written back after it, less the lines ``noise`` matches."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
