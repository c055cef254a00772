"""Folders the plugin keeps files in (upload-job archives): private to Orthanc's user, or not used at all.

A folder is used only if it is a real directory (not a symbolic link), owned by the user Orthanc runs as,
and closed to group and others (mode 0700 or stricter). One that is missing is created with mode 0700.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafeDirectory(Exception):
    """A folder the plugin refuses to keep files in; the message says which one, why, and the fix."""


def private_directory(path: Path) -> Path:
    """``path``, created with mode 0700 when missing (missing parents too); ``UnsafeDirectory`` otherwise."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling link in the way: check_private says which
    except OSError as exc:
        raise UnsafeDirectory(f"{path} cannot be created ({exc.strerror})") from None
    check_private(path)
    return path


def check_private(path: Path) -> None:
    """Refuse ``path`` unless it is a directory (never a link) of this process's user with mode 0700 or less."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise UnsafeDirectory(f"{path} cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectory(f"{path} is a symbolic link: configure the real folder")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeDirectory(f"{path} belongs to uid {info.st_uid}, not to Orthanc's user (uid {os.geteuid()})")
    if info.st_mode & 0o077:
        raise UnsafeDirectory(f"{path} is open to group or others (mode {stat.S_IMODE(info.st_mode):04o}):"
                              " chmod 700 it")
