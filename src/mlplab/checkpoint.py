"""Epoch checkpoints of a fused group: everything the training loop needs to go on exactly where it
stopped (weights, optimizer state, BatchNorm buffers, every member's data-order generator and the
dropout generator, histories and early-stopping state), written at the end of an epoch at most
every `every` seconds, atomically (temporary file + rename), as safetensors + a JSON header (no
pickle). A rerun after Ctrl-C, kill -9, a full disk or a lost Dask worker resumes the group from
it; the driver deletes it once the group's runs are committed.

One file per group: OUT/checkpoints/<key>.safetensors, the key being a hash of the members' run
ids in order (the same group planned again finds it) and the device type.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


def group_key(run_ids: list[str], device: str) -> str:
    return hashlib.sha256(f"{device}:{','.join(run_ids)}".encode()).hexdigest()[:16]


@dataclass
class Checkpointer:
    """Where one group's checkpoint lives and how often it is written (seconds; 0: every epoch)."""

    path: Path
    every: float = 60.0
    last: float = field(default_factory=time.perf_counter)
    failed: bool = False  # a checkpoint that cannot be written never stops training

    @classmethod
    def for_group(cls, folder: str | Path, run_ids: list[str], device: torch.device,
                  every: float) -> Checkpointer:
        return cls(Path(folder) / f"{group_key(run_ids, device.type)}.safetensors", every)

    def due(self) -> bool:
        return not self.failed and time.perf_counter() - self.last >= self.every

    def save(self, tensors: dict[str, torch.Tensor], meta: dict) -> str | None:
        """Write atomically; None, or the reason it could not be written (training goes on)."""
        self.last = time.perf_counter()
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                      metadata={"mlplab": json.dumps(meta)})
            tmp.replace(self.path)
        except (OSError, SafetensorError) as e:
            tmp.unlink(missing_ok=True)
            self.failed = True
            return str(e).splitlines()[0]
        return None

    def load(self, run_ids: list[str]) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The checkpoint of exactly these members, or None (absent, unreadable or another
        group's: then the group starts from its first epoch)."""
        if not self.path.is_file():
            return None
        try:
            tensors = load_file(str(self.path))
            with open(self.path, "rb") as f:  # the header: 8 bytes of length, then JSON
                n = int.from_bytes(f.read(8), "little")
                meta = json.loads(json.loads(f.read(n))["__metadata__"]["mlplab"])
        except (OSError, ValueError, KeyError, SafetensorError):
            return None
        return (tensors, meta) if meta.get("run_ids") == run_ids else None


def remove(folder: str | Path, run_ids: list[str], device: str) -> None:
    """Delete a committed group's checkpoint (and the folder once empty)."""
    folder = Path(folder)
    (folder / f"{group_key(run_ids, device)}.safetensors").unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # other groups' checkpoints are still there, or it never existed
