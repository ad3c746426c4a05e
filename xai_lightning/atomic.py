"""Writing result files so that a crash or a full disk never leaves a half-written one in place of a finished one.

Every table a run or an evaluation writes goes to a temporary file in the same folder and is renamed
over the old one only once complete; an error names the file and what ran out.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from xai_lightning.errors import XaiLightningError


#: The process's umask, read once: ``mkstemp`` creates its file readable by the owner only, and a result file
#: gets the mode a plain ``open(path, "w")`` would have given it.
_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(XaiLightningError, OSError):
    """A result file could not be written; the previous version of it, if any, is untouched."""


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path`` (same folder, so atomic).

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_atomically(folder / "t.txt", lambda p: p.write_text("done")).read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)
        write(Path(temporary))
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        what = "the disk is full" if error.errno == errno.ENOSPC else f"{type(error).__name__}: {error}"
        raise WriteError(
            f"Could not write '{path}' ({what}); the previous '{path.name}', if any, is unchanged. "
            f"Free space on the file system of '{path.parent}' and run again."
        ) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
