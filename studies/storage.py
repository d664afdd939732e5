"""Filesystem facts about storage media: containment checks and measured usage."""

import os
from dataclasses import dataclass
from pathlib import Path


class StoragePathError(ValueError):
    """A path that would leave the directory it must stay in."""


def resolve_inside(root: Path | str, candidate: Path | str) -> Path:
    """`candidate` resolved (symlinks and `..` included), refused unless it lies inside `root`."""
    root_resolved = Path(root).resolve()
    resolved = Path(candidate).resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise StoragePathError(f"{candidate} is outside {root_resolved}")
    return resolved


@dataclass(frozen=True)
class MeasuredUsage:
    bytes: int
    files: int


def measure_usage(root: Path | str) -> MeasuredUsage:
    """Bytes and files under `root`, counted from the disk; symlinks are not followed."""
    total = files = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            try:
                stat = os.lstat(os.path.join(dirpath, filename))
            except FileNotFoundError:
                continue  # removed while we walked
            total += stat.st_size
            files += 1
    return MeasuredUsage(bytes=total, files=files)
