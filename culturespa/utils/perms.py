"""File modes that honour the umask: ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask, so a file
or folder written through them and renamed into place would be unreadable to a shared cluster group."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask. Linux reports it in /proc/self/status; elsewhere it is read by setting and restoring it,
    which for an instant applies 0o022 to files other threads (W&B, data loaders) create."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def fix_file(path: str | Path) -> None:
    """Give a file made by ``mkstemp`` the mode a plain ``open(path, "w")`` would have."""
    os.chmod(path, file_mode())


def fix_tree(root: str | Path) -> None:
    """Give a folder made by ``mkdtemp`` (and everything in it) the modes the umask asks for."""
    root = Path(root)
    mask = current_umask()
    fmode, dmode = 0o666 & ~mask, 0o777 & ~mask
    os.chmod(root, dmode)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), dmode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, fmode)
