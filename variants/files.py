"""Writing a file so that a reader sees the whole old file or the whole new one, never half of one.

The one atomic-write helper of the project (adapters, run records, generated data); plain Python, no
torch, so any layer may use it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

Content = Union[str, bytes, Callable[[str], None]]
UMASK = os.umask(0o022)
os.umask(UMASK)  # read back: the process's file-creation mask, which the files written here honour


def write_atomically(path, content: Content) -> Path:
    """Write ``content`` (text, bytes, or a function that writes a file at the path it is given) to a
    temporary file in ``path``'s folder, flush it to disk, then rename it over ``path``. On any error
    the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # the mode any new file gets (mkstemp's 0600 would hide it from colleagues)
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
