"""Writes that stay inside a results folder, whatever was planted in it.

Every folder below the root (OUT, or the folder a file is written into) is opened with
O_NOFOLLOW and used through its descriptor (`openat`, `renameat`, `unlinkat`), so a symbolic
link found inside OUT is never followed by a write: it is refused with one line naming it. The
root itself is the user's: it may be a link they made (it is opened as given). A file is written
to a fresh temporary name (O_EXCL | O_NOFOLLOW) and renamed over its destination in one step,
so a reader never sees half of it, and a destination that is a link or not a regular file (a
FIFO, a device, a folder) is refused instead of replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from . import layout
from .errors import UserError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP = re.compile(r"^\..+\.tmp(\d+)")  # what `write_atomic` and the store name temporaries


def link_error(path: Path | str) -> UserError:
    return UserError(f"{path} is a symbolic link: mlplab never writes through a link inside a "
                     "results folder; remove it (or put a real folder or file there) and run again")


def _with_name(e: OSError, path: Path | str) -> OSError:
    """The same error with the full path as its file name (the CLI's one line names it)."""
    return OSError(e.errno, e.strerror, str(path))


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir(root: Path | str, rel: tuple[str, ...] = (), create: bool = True) -> int:
    """A descriptor of root/rel[0]/rel[1]/…: every part below the root is opened without
    following links (a link is a UserError naming it) and created when missing (unless not
    `create`: then FileNotFoundError). The caller closes it."""
    path = Path(root)
    try:
        fd = os.open(path, _DIR)
    except OSError as e:
        raise _with_name(e, path) from None
    try:
        for part in rel:
            path = path / part
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise _with_name(e, path) from None
            try:
                nfd = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                st = _lstat(fd, part)
                if st is not None and stat.S_ISLNK(st.st_mode):
                    raise link_error(path) from None
                if e.errno == errno.ENOTDIR:
                    raise UserError(f"{path}: exists and is not a folder") from None
                raise _with_name(e, path) from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder(root: Path | str, rel: tuple[str, ...] = (), create: bool = True) -> Iterator[int]:
    """`open_dir` as a context: the descriptor is closed at the end."""
    fd = open_dir(root, rel, create)
    try:
        yield fd
    finally:
        os.close(fd)


def check_target(dir_fd: int, name: str, path: Path | str) -> None:
    """A UserError when `name` exists in the folder and is a link or not a regular file."""
    st = _lstat(dir_fd, name)
    if st is None or stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISLNK(st.st_mode):
        raise link_error(path)
    raise UserError(f"{path}: exists and is not a regular file; mlplab replaces only files")


def write_new(dir_fd: int, name: str, data: bytes, path: Path | str = "") -> None:
    """Create `name` in the folder (it must not exist; never through a link) holding `data`."""
    try:
        fd = os.open(name, _NEW, 0o666, dir_fd=dir_fd)
    except OSError as e:
        raise _with_name(e, path or name) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise _with_name(e, path or name) from None
    finally:
        os.close(fd)


def write_atomic(path: Path | str, data: bytes, root: Path | str | None = None) -> None:
    """Write `data` to `path` through a temporary file and a rename. The folders from `root`
    (default: the file's own folder) down to the file are opened without following links and
    created when missing (the root as well, as the user named it); the file itself must not be a
    link or a non-regular file."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a link to a folder, or not a folder: open_dir says which
    except OSError as e:
        raise _with_name(e, root) from None
    with folder(root, path.parent.relative_to(root).parts) as fd:
        check_target(fd, path.name, path)
        tmp = f".{path.name}.tmp{os.getpid()}.{secrets.token_hex(3)}"
        try:
            write_new(fd, tmp, data, path)
            os.replace(tmp, path.name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:  # disk full, Ctrl-C: no temporary file is left behind
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise


def remove(dir_fd: int, name: str) -> None:
    """Delete `name` from the folder: a file or link itself, or a whole folder (never following
    a link inside it); nothing if absent."""
    st = _lstat(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temporaries(dir_fd: int, any_pid: bool = False) -> list[str]:
    """Delete the temporary files and folders a killed writer left in the folder (names
    `.<name>.tmp<pid>…`); those of a live process on this host are kept unless `any_pid` (the
    caller owns the folder). The names removed."""
    gone = []
    for name in os.listdir(dir_fd):
        m = _TMP.match(name)
        if m and (any_pid or int(m[1]) == os.getpid() or not _alive(int(m[1]))):
            remove(dir_fd, name)
            gone.append(name)
    return gone


FOLDERS = (*layout.OUT_FOLDERS, *layout.REPORT_FOLDERS)  # the rest of what mlplab writes: files


def refuse_links(root: Path | str, names: tuple[str, ...], inside: tuple[str, ...] = ()) -> None:
    """A UserError naming the first of root/<names> that is a link or not what mlplab writes there
    (a FIFO, a device, a folder where a file goes), or the first link directly inside
    root/<inside>: checked before a run trains or a report draws."""
    root = Path(root)
    with folder(root, create=False) as fd:
        for name in (*names, *inside):
            st = _lstat(fd, name)
            if st is None:
                continue
            if stat.S_ISLNK(st.st_mode):
                raise link_error(root / name)
            want = "folder" if name in inside or name in FOLDERS else "regular file"
            if not (stat.S_ISDIR if want == "folder" else stat.S_ISREG)(st.st_mode):
                raise UserError(f"{root / name}: exists and is not a {want}; mlplab writes there: "
                                "move it aside and run again")
        for sub in inside:
            if _lstat(fd, sub) is None:
                continue
            with folder(root, (sub,), create=False) as sfd:
                for name in sorted(os.listdir(sfd)):
                    st = _lstat(sfd, name)
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        raise link_error(root / sub / name)
