"""Jane Austen's six novels, read from the Debian package `r-cran-janeaustenr` without installing R.

The package stores each novel as an R character vector (one element per printed line) in
`data/Rdata.rdb`; `data/Rdata.rdx` is the index (novel name -> byte offset and length in the .rdb).
Each .rdb record is a 4-byte big-endian uncompressed length followed by a zlib stream of R's XDR
serialisation format. The index is the same format, gzip-compressed. `_RReader` below reads the small
subset of that format these two files use (character vectors, integer vectors, lists, pairlists).

Get the package once per machine (about 1.6 MB, no root needed for the download itself)::

    python -m benchmarks.data.austen            # apt-get download + dpkg-deb -x into the cache
    # or by hand:
    apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb "$SEMA_AUSTEN_DIR"

The reader looks in `$SEMA_AUSTEN_DIR` first, then in `<cache_dir>/janeaustenr`, then in the system R
library (where `apt-get install r-cran-janeaustenr` would put it).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any, Optional

PACKAGE = "r-cran-janeaustenr"
ENV_VAR = "SEMA_AUSTEN_DIR"
# The novels in publication order; the corpus concatenates them in this order, so contiguous-block
# splits put the later novels (Emma, Persuasion) at the end.
NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
_RDATA_SUFFIX = Path("usr/lib/R/site-library/janeaustenr/data/Rdata.rdx")
_SYSTEM_RDATA = Path("/") / _RDATA_SUFFIX


def default_dir(cache_dir: Optional[Path] = None) -> Path:
    """Where the unpacked package lives: $SEMA_AUSTEN_DIR, else <cache_dir>/janeaustenr."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    if cache_dir is None:
        from benchmarks.runtime import cache_dir as default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "janeaustenr"


def find_rdx(cache_dir: Optional[Path] = None, root: Optional[Path] = None) -> Path:
    """Locate `Rdata.rdx` under `root` (default: `default_dir(cache_dir)`); say what to run when absent."""
    root = Path(root) if root is not None else default_dir(cache_dir)
    candidates = [root / _RDATA_SUFFIX, root / "data" / "Rdata.rdx", root / "Rdata.rdx", _SYSTEM_RDATA]
    for path in candidates:
        if path.is_file() and path.with_suffix(".rdb").is_file():
            return path
    raise FileNotFoundError(
        f"Jane Austen corpus not found (looked for Rdata.rdx/.rdb in: {', '.join(map(str, candidates))}).\n"
        f"Fetch the Debian package once (no R needed):\n"
        f"    python -m benchmarks.data.austen --dest {root}\n"
        f"or by hand:\n"
        f"    apt-get download {PACKAGE} && dpkg-deb -x {PACKAGE}_*.deb {root}\n"
        f"or point ${ENV_VAR} at a folder holding the unpacked package."
    )


class _RReader:
    """Reads R's XDR serialisation (format version 2 or 3) for the types the Rdata files use."""

    NILVALUE, REF = 254, 255
    SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC = 1, 2, 9, 10, 13, 14, 16, 19

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError(f"not an R XDR stream (header {data[:2]!r}, expected b'X\\n')")
        self.data, self.pos = data, 2
        version = self._int()
        self._int(), self._int()  # writer's R version, minimal reader version
        if version == 3:
            encoding_length = self._int()
            self.pos += encoding_length  # skip the native encoding name
        self.refs: list[Any] = []  # symbols seen so far; REFSXP points back into this table

    def _int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def _bytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def read(self) -> Any:
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == self.NILVALUE:
            return None
        if kind == self.REF:
            return self.refs[(flags >> 8) - 1]
        if kind == self.SYM:
            name = self.read()
            self.refs.append(name)
            return name
        if kind == self.CHAR:
            n = self._int()
            return None if n == -1 else self._bytes(n).decode("utf-8")
        if kind == self.LIST:  # pairlist: attributes, tag, value, rest
            if has_attr:
                self.read()  # pairlist attributes are not needed here
            tag = self.read() if has_tag else None
            head = [(tag, self.read())]
            return head + (self.read() or [])
        if kind in (self.LGL, self.INT):
            n = self._int()
            value = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == self.REAL:
            n = self._int()
            value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        elif kind in (self.STR, self.VEC):
            value = [self.read() for _ in range(self._int())]
        else:
            raise ValueError(f"R serialisation type {kind} is not supported by this small reader")
        if has_attr:
            attrs = dict(self.read())
            if "names" in attrs:
                return dict(zip(attrs["names"], value))
        return value


def read_rdata(rdx_path: Path) -> dict[str, list[str]]:
    """All objects of an R lazy-load database (`Rdata.rdx` + `Rdata.rdb`) as name -> list of strings."""
    index = _RReader(gzip.decompress(Path(rdx_path).read_bytes())).read()
    blob = Path(rdx_path).with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        record = blob[offset : offset + length]
        (size,) = struct.unpack_from(">i", record, 0)
        payload = zlib.decompress(record[4:])
        if len(payload) != size:
            raise ValueError(
                f"{rdx_path}: object {name!r} inflated to {len(payload)} bytes, index says {size}"
            )
        out[name] = [line if line is not None else "" for line in _RReader(payload).read()]
    return out


def load_novels(cache_dir: Optional[Path] = None, root: Optional[Path] = None) -> dict[str, str]:
    """The six novels as name -> text (lines joined by newlines), in publication order."""
    return load_novels_from(find_rdx(cache_dir, root))


def load_novels_from(rdx_path: Path) -> dict[str, str]:
    """The six novels read from one `Rdata.rdx` (+ `.rdb`) pair."""
    books = read_rdata(rdx_path)
    missing = [n for n in NOVELS if n not in books]
    if missing:
        raise ValueError(f"{rdx_path} lacks {missing}; found {sorted(books)}")
    return {name: "\n".join(books[name]) + "\n" for name in NOVELS}


def fetch(dest: Path) -> Path:
    """Download the Debian package with apt-get and unpack it into `dest` (no install, no R)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"{tool} not found: this fetch needs a Debian/Ubuntu machine; otherwise copy an "
                f"unpacked {PACKAGE} into {dest} or set ${ENV_VAR}"
            )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt-get downloads as the unprivileged `_apt` user when it can reach the folder
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True)
        (deb,) = Path(tmp).glob(f"{PACKAGE}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    rdx = dest / _RDATA_SUFFIX
    if not rdx.is_file():
        raise FileNotFoundError(f"unpacked {PACKAGE} into {dest} but {rdx} is missing")
    return rdx


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=f"Fetch and unpack {PACKAGE} (Jane Austen's novels) offline-ready"
    )
    parser.add_argument(
        "--dest", type=Path, default=None, help=f"target folder (default: ${ENV_VAR} or the cache)"
    )
    args = parser.parse_args(argv)
    rdx = fetch(args.dest or default_dir())
    novels = load_novels_from(rdx)
    print(f"{rdx}: {sum(len(t) for t in novels.values()):,} characters in {len(novels)} novels")


if __name__ == "__main__":
    main()
