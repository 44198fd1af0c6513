"""Epoch checkpoint files of a fused group: where one lives (OUT/checkpoints/<key>.safetensors, the
key a hash of the members' run ids in order, so the same group planned again finds it on
whatever device it resumes), when one is due (at most every `every` seconds, and at every rung
of halving), writing it atomically (temporary file + rename) as safetensors + a JSON header (no
pickle), reading it back, and removing it once the group's runs are committed. What a
checkpoint holds is `fused.Fused.state` (the whole group at the end of an epoch).

A file that does not fit its group (unreadable, another group's, or one the caller's check
refuses: fused.misfit) is set aside as <key>.safetensors.bad with one warning line on the
`mlplab` logger, and the group starts from its first epoch. Nothing is allocated from what a
file declares before its header is checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from . import safefs
from .errors import UserError
from .safetext import printable

log = logging.getLogger("mlplab")


def path_for(folder: str | Path, run_ids: list[str]) -> Path:
    """The checkpoint file of the group with these members, in this order."""
    return Path(folder) / f"{hashlib.sha256(','.join(run_ids).encode()).hexdigest()[:16]}.safetensors"


@dataclass
class Checkpointer:
    """Where one group's checkpoint lives and how often it is written (seconds; 0: every epoch)."""

    path: Path
    every: float = 60.0
    last: float = field(default_factory=time.perf_counter)
    failed: bool = False  # a checkpoint that cannot be written never stops training
    root: Path | None = None  # no link below it is followed (default: the file's folder)

    @classmethod
    def for_group(cls, folder: str | Path, run_ids: list[str], every: float) -> Checkpointer:
        """OUT/checkpoints/<key>: a link planted at OUT/checkpoints is never written through."""
        return cls(path_for(folder, run_ids), every, root=Path(folder).parent)

    def due(self) -> bool:
        return not self.failed and time.perf_counter() - self.last >= self.every

    def save(self, tensors: dict[str, torch.Tensor], meta: dict, strict: bool = False) -> str | None:
        """Write atomically; None, or the reason it could not be written (training goes on).
        strict: raise instead (a group paused at a rung cannot go on without it)."""
        self.last = time.perf_counter()
        try:
            data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                        metadata={"mlplab": json.dumps(meta)})
            safefs.write_atomic(self.path, data, self.root)
        except (OSError, SafetensorError, UserError) as e:
            if strict:
                raise
            self.failed = True
            return str(e).splitlines()[0]
        return None

    def load(self, run_ids: list[str], misfit: Callable[[dict, dict], str | None]
             ) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The checkpoint of exactly these members, or None: absent, or one that does not fit
        (set aside with a warning line); then the group starts from its first epoch.
        misfit(shapes, meta): why the file does not fit (None: it does), from its header alone
        (shapes: name -> (shape, safetensors dtype)); the tensors are read only once it fits."""
        if not os.path.lexists(self.path):
            return None
        try:
            if os.path.islink(self.path):
                raise ValueError("a symbolic link")
            meta, shapes = _header(self.path)  # the tensors are read only once they fit
            why = None if meta.get("run_ids") == run_ids else "another group's checkpoint"
            why = why or misfit(shapes, meta)
            if why is None:
                return load_file(str(self.path)), meta
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError,
                RecursionError, SafetensorError) as e:  # whatever a hostile header makes of it
            why = f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        self.set_aside(why)
        return None

    def set_aside(self, why: str) -> None:
        """Rename the checkpoint to <name>.bad (kept for a look, never read again) and say so."""
        bad = self.path.with_name(self.path.name + ".bad")
        with contextlib.suppress(OSError, UserError):
            with safefs.folder(self.path.parent) as fd:
                os.replace(self.path.name, bad.name, src_dir_fd=fd, dst_dir_fd=fd)
        log.warning("%s", printable(f"checkpoint {self.path} does not fit its group ({why}); set "
                                    f"aside as {bad.name}; the group starts from its first epoch"))


def read_meta(path: Path) -> dict:
    """The JSON header `save` wrote (epoch, run ids, members' histories)."""
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["mlplab"])


def _header(path: Path) -> tuple[dict, dict[str, tuple[tuple[int, ...], str]]]:
    """(meta, name -> (shape, dtype)) from a checkpoint's header alone: nothing is allocated
    from what a file declares before it is known to fit."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["mlplab"])
        shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    if not isinstance(meta, dict):
        raise ValueError("its header is not a JSON object")
    return meta, shapes


def remove(folder: str | Path, run_ids: list[str]) -> None:
    """Delete a committed group's checkpoint (and the folder once empty), never through a link."""
    folder = Path(folder)
    with contextlib.suppress(OSError, UserError):  # absent, or a link (refused at the start)
        with safefs.folder(folder.parent) as parent:
            with safefs.folder(folder.parent, (folder.name,), create=False) as fd:
                safefs.remove(fd, path_for(folder, run_ids).name)
            os.rmdir(folder.name, dir_fd=parent)  # fails while other groups' checkpoints are there
