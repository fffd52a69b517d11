"""Every file liverseg writes (labelmaps, JSON, PNG, model files, worker results) goes through ``write_atomic``.

Why: a medical tool must never leave a partial result where the user expects a complete one, nor replace a good
file by a broken one. SimpleITK, for one, does not raise when the disk fills up during a write: it leaves a short
or empty file and reports success. So each output is written to a temporary file in the target folder, verified
(size, and a read-back by the caller's ``verify``), flushed to disk, given normal permissions (the umask's), and
only then renamed over the target. Any failure removes the temporary file and leaves an existing target untouched.

``check_output_path`` finds every path problem (exists, is a folder, lies under a file, unwritable, would replace
an input) before any work starts, so a user never waits for an inference whose result cannot be saved.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .checks import InputError

TEMP_PREFIX = ".liverseg-"


class OutputError(RuntimeError):
    """An output could not be written completely; nothing was left behind and no existing file was changed."""


def compound_suffix(path: Path) -> str:
    """``.nii.gz`` and ``.seg.nrrd`` count as one suffix."""
    name = path.name.lower()
    for s in (".seg.nrrd", ".nii.gz"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when two paths name the same file (also through links or different spellings)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_output_path(path: str | Path, overwrite: bool, *, suffixes: Iterable[str] | None = None,
                      inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse, with the reason, an output that cannot or must not be written; returns the path."""
    path = Path(path).expanduser()
    suffixes = tuple(suffixes or ())
    if suffixes and compound_suffix(path) not in suffixes:
        raise InputError(f"Output {path} must end in one of {', '.join(suffixes)}.")
    if path.is_dir():
        raise InputError(f"Output {path} is a folder; give a file name.")
    for inp in inputs:
        if Path(inp).expanduser().resolve() == path.resolve() or same_file(inp, path):
            raise InputError(f"Output {path} is the input {inp}; choose another output name (the input is never replaced).")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise InputError(f"{path} exists; pass --overwrite (overwrite=True) to replace it.")
        if not path.is_file():
            raise InputError(f"{path} exists and is not a regular file; it is never replaced.")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise InputError(f"Cannot create {path}: {parent} is a file, not a folder.")
    try:  # a real probe: os.access says yes to root on read-only mounts it may not write to
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"Cannot write into {parent} ({exc.strerror}); choose another output folder.") from exc
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], None], verify: Callable[[Path], None] | None = None, *,
                 overwrite: bool = False, inputs: Iterable[str | Path] = (), checked: bool = False) -> Path:
    """Write ``path`` completely or not at all.

    ``write(tmp)`` writes the content to ``tmp`` (same folder, same suffix); ``verify(tmp)`` raises if what is on
    disk is not what was meant (a read-back). ``checked=True`` skips ``check_output_path`` (already done).
    """
    path = Path(path).expanduser()
    if not checked:
        check_output_path(path, overwrite, inputs=inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=compound_suffix(path), dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(_reason(path, exc)) from exc
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if tmp.stat().st_size == 0:
            raise OutputError(f"Writing {path} produced an empty file (is the disk full?); nothing was written.")
        if verify is not None:
            try:
                verify(tmp)
            except OutputError:
                raise
            except Exception as exc:
                raise OutputError(f"{path} did not read back correctly after writing (is the disk full?); nothing "
                                  f"was written ({str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}).") from exc
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if not overwrite and path.exists():
            raise OutputError(f"{path} appeared while it was being written; nothing was replaced.")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(_reason(path, exc)) from exc
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return path


def _reason(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"No space left to write {path}; free some space or choose another folder. Nothing was written."
    return f"Could not write {path} ({exc.strerror or exc}); nothing was written."


def write_text(path: str | Path, text: str, *, overwrite: bool = False, checked: bool = False) -> Path:
    """A text file written atomically and read back."""

    def verify(tmp: Path) -> None:
        if tmp.read_text() != text:
            raise OutputError(f"{path}: the text on disk differs from what was written.")

    return write_atomic(path, lambda tmp: tmp.write_text(text), verify, overwrite=overwrite, checked=checked)


def write_json(path: str | Path, obj, *, overwrite: bool = False, checked: bool = False) -> Path:
    """JSON (strict: no NaN/inf) written atomically and read back."""
    return write_text(path, json.dumps(obj, indent=1, allow_nan=False), overwrite=overwrite, checked=checked)


def verify_png(tmp: Path) -> None:
    """A complete PNG starts with the signature and ends with the IEND chunk."""
    data = tmp.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[-12:-8] != b"\x00\x00\x00\x00" or data[-8:-4] != b"IEND":
        raise OutputError(f"{tmp.name} is not a complete PNG.")
