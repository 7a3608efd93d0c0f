"""Files a run writes that must not be trusted blindly (checkpoint.pt, weights/*.safetensors): written atomically
with their SHA-256 beside them, verified before they are used.

    write_verified(path, lambda tmp: torch.save(state, tmp))   # tmp file, fsync, digest, rename, digest rename
    verify(path, "delete it to restart the run from epoch 0")  # raises CorruptFile naming the file and the fix
    remove_stale_temporaries(run_dir)                           # leftovers of writes a killed process never finished

The digest lives in `<path>.sha256` ("<hex digest>  <size in bytes>\\n"). Crash safety: the new file's digest is
written to `<path>.sha256.tmp` before the file is renamed into place, and renamed itself after; a crash between the
two renames leaves a file that matches the pending digest, which `verify` accepts (and puts in place). A file
without any digest (written before this existed) is accepted as it is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

DIGEST_SUFFIX = ".sha256"
# Temporary names of interrupted writes: tempfile's ".<name>.<random>.tmp" (checkpoints, result.json, weights) and
# pending digests.
STALE_PATTERNS = (".*.tmp", "weights/.*.tmp", "*.sha256.tmp", "weights/*.sha256.tmp")


class CorruptFile(ValueError):
    """A file of the run is damaged or unreadable: the message names it and says what to do."""


def sha256_of(path: Path, chunk: int = 1 << 22) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of a file, read in 4 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def write_verified(path: Path, write: Callable[[str], None]) -> None:
    """`write(tmp)` into a temporary file beside `path`, fsync, record its digest, rename both into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    pending = Path(str(_digest_path(path)) + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a run's files are meant to be read by others
        digest, size = sha256_of(Path(tmp))
        pending.write_text(f"{digest}  {size}\n")
        os.replace(tmp, path)
        os.replace(pending, _digest_path(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verify(path: Path, what_to_do: str) -> None:
    """Raise CorruptFile unless `path` exists and matches its recorded digest (a file without one passes)."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFile(f"{path} is missing; {what_to_do}")
    recorded = _digest_path(path)
    if not recorded.exists():
        return
    actual = sha256_of(path)
    if _read(recorded) == actual:
        return
    pending = Path(str(recorded) + ".tmp")  # a crash between the file's rename and its digest's
    if pending.exists() and _read(pending) == actual:
        try:
            os.replace(pending, recorded)
        except FileNotFoundError:  # another rank promoted it first
            pass
        return
    digest, size = _read(recorded)
    raise CorruptFile(f"{path} is damaged: {actual[1]} bytes with SHA-256 {actual[0][:16]}..., but it was written "
                      f"as {size} bytes with SHA-256 {digest[:16]}... ({recorded}); {what_to_do}")


def _read(digest_file: Path) -> tuple[str, int]:
    try:
        digest, size = digest_file.read_text().split()
        return digest, int(size)
    except (OSError, ValueError):
        return "", -1


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete what interrupted writes left in `run_dir` (call with the run's lock held: no writer is active); a
    pending digest that matches its file (a crash between the two renames) is put in place instead."""
    removed = []
    for pattern in STALE_PATTERNS:
        for path in Path(run_dir).glob(pattern):
            if not path.is_file():
                continue
            if path.name.endswith(DIGEST_SUFFIX + ".tmp"):
                target = path.with_name(path.name[: -len(DIGEST_SUFFIX + ".tmp")])
                if target.is_file() and _read(path) == sha256_of(target):
                    os.replace(path, _digest_path(target))
                    continue
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
