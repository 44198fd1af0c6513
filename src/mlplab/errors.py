"""The one error type a user sees (the CLI prints its message on one line and exits with 2), and
the one-line wording of the machine's own failures (disk full, read-only, a locked or corrupt
store)."""

from .safetext import printable


class UserError(Exception):
    """Bad input from the user (a suite, a flag, a data file). The message names what is wrong
    and what is allowed; nothing has been written when it is raised. It is made printable (no
    control characters: it often quotes a name from someone else's folder)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(printable(message))


CORRUPT_ADVICE = ("every finished run is also in OUT/runs/: move OUT/mlplab.db aside and run again "
                  "to rebuild it from them")


def sqlite_kind(e: Exception) -> str:
    """What an SQLite error means: full, locked, readonly, corrupt, cantopen or other."""
    name = getattr(e, "sqlite_errorname", "") or ""
    text = str(e).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "is locked" in text:
        return "locked"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return "readonly"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text \
            or "not a database" in text:
        return "corrupt"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "cantopen"
    return "other"


def sqlite_message(e: Exception, path: object = "OUT/mlplab.db") -> str:
    """One line for an SQLite failure on the store at `path` (corrupt only when it is)."""
    kind = sqlite_kind(e)
    if kind == "locked":
        return (f"{path} is locked by another process ({e}); try again when it has finished "
                "(nothing is wrong with the store)")
    if kind == "readonly":
        return (f"{path} is read-only ({e}): a run needs a writable OUT; `mlplab runs`, "
                "`mlplab report OUT --to DIR` and `mlplab.load` still read it")
    if kind == "cantopen":
        return (f"cannot open {path} ({e}): check that the file and its folder can be read (and "
                "written, for a run)")
    if kind == "corrupt":
        return f"{path} is not a readable mlplab store ({e}); {CORRUPT_ADVICE}"
    return f"the run store {path} failed ({e})"


def environment_error(e: Exception) -> str | None:
    """One line for a failure of the machine rather than of mlplab, or None."""
    line = _environment_line(e)
    return None if line is None else printable(line)


def _environment_line(e: Exception) -> str | None:
    import errno
    import sqlite3

    text = str(e)
    disk_full = "No space left on device" in text or "database or disk is full" in text
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or disk_full:  # safetensors, SQLite too
        where = getattr(e, "filename", None) or "results"
        return (f"disk full while writing {where}: every run finished before is saved and nothing "
                "half-written is left; free space and run the same command to resume")
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {e.filename or 'there'}: {e.strerror}"
    if isinstance(e, sqlite3.DatabaseError):
        return sqlite_message(e)
    if isinstance(e, OSError):
        return f"{e.filename or 'file'}: {e.strerror or e}"
    return None
