"""Operating-system failures a user can fix (full disk, read-only folder) turned into one line naming the file.

Anything else stays a traceback: it is a bug, not the user's input.
"""

from __future__ import annotations

import errno
from pathlib import Path

from culturespa.errors import CultureSPAError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_error_line(err: OSError, where: str | Path | None = None) -> str | None:
    """``file: problem; fix`` for a full disk or an unwritable place, else None."""
    place = where or err.filename or "a file"
    if err.errno in NO_SPACE:
        return (
            f"{place}: no space left on the device ({err.strerror or 'ENOSPC'}); free space there or move the output "
            f"elsewhere (paths.work_dir=..., paths.log_dir=..., CULTURESPA_CACHE=...), then rerun the same command: "
            f"what was already written is kept and the run resumes"
        )
    if err.errno in NOT_WRITABLE:
        return (
            f"{place}: cannot write there ({err.strerror or 'read-only'}); make the folder writable or point the "
            f"output elsewhere (paths.work_dir=..., paths.log_dir=..., hydra.run.dir=...)"
        )
    return None


def user_os_error(err: OSError, where: str | Path | None = None) -> OSError | CultureSPAError:
    """The one-line error for ``err`` when the user can fix it, else ``err`` itself (re-raise it unchanged)."""
    line = os_error_line(err, where)
    return CultureSPAError(line) if line else err
