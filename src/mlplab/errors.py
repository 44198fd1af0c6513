"""The one error type a user sees (the CLI prints its message on one line and exits with 2), and
the one-line wording of the machine's own failures (disk full, read-only, a corrupt store)."""


class UserError(Exception):
    """Bad input from the user (a suite, a flag, a data file). The message names what is wrong
    and what is allowed; nothing has been written when it is raised."""


def environment_error(e: Exception) -> str | None:
    """One line for a failure of the machine rather than of mlplab, or None."""
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
        return (f"the run store is unreadable ({e}); every finished run is also in OUT/runs/: move "
                "OUT/mlplab.db aside and run again to rebuild it from them")
    if isinstance(e, OSError):
        return f"{e.filename or 'file'}: {e.strerror or e}"
    return None
