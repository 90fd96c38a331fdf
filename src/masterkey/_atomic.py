"""Atomic saves of a bank folder: a killed save leaves the previous bank or the new one, never a broken folder.

The files are written into a staging folder inside the bank folder, which becomes the pending folder once complete;
the bank files then move from it into the bank folder. Moves never cross a filesystem because both live inside the
bank folder. A save interrupted after the pending folder was complete is finished by the next save or load.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from .constants import CARD_NAME, CONFIG_NAME, FILTERS_NAME
from .errors import BankFormatError

if os.name == "posix":  # flock serializes saves of one folder by several processes (the lock dies with its process)
    import fcntl
else:  # pragma: no cover - Windows: saves of one folder must not overlap
    fcntl = None

__all__: list[str] = []


# Atomic saves (FilterBank.save_pretrained) write into a staging folder inside the bank folder, which becomes the
# pending folder once complete; the bank files then move from it into the bank folder. Moves never cross a filesystem
# because both live inside the bank folder.
_STAGING_PREFIX = ".masterkey-save-"


_PENDING_NAME = ".masterkey-pending"


# config.json identifies a bank: it moves last (with the pending folder the order does not matter for readers)
_SWAP_ORDER = (FILTERS_NAME, CARD_NAME, CONFIG_NAME)


def _fsync_dir(folder: Path) -> None:
    # makes renames inside the folder durable; directories cannot be opened on Windows (renames are durable there)
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not fsync directories; the renames are still atomic
        pass
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on a bank folder for one save; released when the save ends or its process dies."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _finish_interrupted_save(folder: Path) -> None:
    """Complete a save that died after its commit point (move the rest of ``.masterkey-pending`` in) and remove the
    staging folders of saves that died before it. Called under the folder lock, so no other save is running."""
    pending = folder / _PENDING_NAME
    if os.path.lexists(pending):
        if stat.S_ISDIR(os.lstat(pending).st_mode):
            for name in _SWAP_ORDER:
                if os.path.lexists(pending / name):
                    os.replace(pending / name, folder / name)
            _fsync_dir(folder)
            shutil.rmtree(pending)
        else:  # not ours: nothing a reader would use
            os.unlink(pending)
        _fsync_dir(folder)
    for stale in folder.glob(_STAGING_PREFIX + "*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _write_bank_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into ``folder`` atomically (see :meth:`FilterBank.save_pretrained`)."""
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        for name in files:  # before anything moves: a directory cannot be replaced by a file
            target = folder / name
            if os.path.isdir(target) and not os.path.islink(target):
                raise BankFormatError(
                    f"Cannot save a bank into {folder}: its {name} is a directory. Remove or rename it, or save to "
                    "another folder."
                )
        _finish_interrupted_save(folder)
        staging = folder / f"{_STAGING_PREFIX}{secrets.token_hex(8)}"
        staging.mkdir()
        try:
            for name, data in files.items():
                _write_durably(staging / name, data)
            _fsync_dir(staging)
            os.rename(staging, folder / _PENDING_NAME)  # the commit point: from here on, readers see the new bank
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(folder)
        _finish_interrupted_save(folder)
