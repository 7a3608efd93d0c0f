"""Text corpora as token-id arrays: character- or byte-level vocabularies, contiguous splits, fixed windows.

Two sources feed the same code path:

* `austen`: Jane Austen's six novels (see `benchmarks.data.austen`), one text;
* `text`: any local corpus read through the `datasets` library offline (HF_DATASETS_OFFLINE=1):
  a `.txt`/`.raw` file (one line per record), `.json`/`.jsonl` or `.parquet` (the `text_field` column), or a
  folder. A folder with WikiText-style split files (`wiki.{train,valid,test}.raw`, or `train.*`/`valid*.*`/
  `test.*`) keeps its own splits; anything else is one text split by contiguous blocks.

Contiguous blocks (not random lines) keep the evaluation text unseen as running prose: the last
`val_fraction + test_fraction` of the corpus is held out, validation first, then test.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

TOKENIZERS = ("char", "byte")
_SUFFIX_TO_BUILDER = {
    ".txt": "text",
    ".raw": "text",
    ".tokens": "text",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
}


@dataclass
class Vocab:
    """A character-level (codepoints seen in the training text, plus <unk> = 0) or byte-level vocabulary."""

    kind: str  # char | byte
    chars: list[str]  # char: id -> character (id 0 is <unk>); byte: empty

    @classmethod
    def build(cls, kind: str, train_text: str) -> "Vocab":
        if kind not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {kind!r}; allowed: {', '.join(TOKENIZERS)}")
        if kind == "byte":
            return cls("byte", [])
        return cls("char", ["<unk>"] + sorted(set(train_text)))

    @property
    def size(self) -> int:
        return 256 if self.kind == "byte" else len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        known = np.array([ord(c) for c in self.chars[1:]], dtype=np.uint32)  # sorted, since chars are sorted
        pos = np.searchsorted(known, codepoints)
        hit = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == codepoints)
        return np.where(hit, pos + 1, 0).astype(np.int64)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.chars[i] if i > 0 else "?" for i in ids)


@dataclass
class SplitText:
    """A corpus cut into train / validation / test texts."""

    train: str
    val: str
    test: str


def split_contiguous(text: str, val_fraction: float, test_fraction: float) -> SplitText:
    """Train = the leading part, then validation, then test, each one contiguous block of the text."""
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 < val_fraction, 0 < test_fraction and their sum < 1; "
            f"got {val_fraction} and {test_fraction}"
        )
    n = len(text)
    train_end = int(round(n * (1 - val_fraction - test_fraction)))
    val_end = int(round(n * (1 - test_fraction)))
    return SplitText(text[:train_end], text[train_end:val_end], text[val_end:])


def load_local_corpus(
    root: str, text_field: str, val_fraction: float, test_fraction: float, cache_dir: Optional[Path] = None
) -> SplitText:
    """Read a local text/JSON/parquet corpus (file or folder) with `datasets`, offline.

    `cache_dir` holds the Arrow files `datasets` makes (default: its own, ~/.cache/huggingface/datasets).
    """
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"text corpus {path} does not exist. Set task.data_root to a .txt/.raw/.json/.jsonl/.parquet "
            f"file or a "
            f"folder of them (e.g. wikitext-103-raw with wiki.train.raw, wiki.valid.raw, wiki.test.raw)"
        )
    files = sorted(
        p for p in (path.rglob("*") if path.is_dir() else [path]) if p.suffix in _SUFFIX_TO_BUILDER
    )
    if not files:
        raise FileNotFoundError(
            f"no corpus files under {path}; allowed suffixes: {', '.join(_SUFFIX_TO_BUILDER)}"
        )
    builders = {_SUFFIX_TO_BUILDER[p.suffix] for p in files}
    if len(builders) > 1:
        raise ValueError(f"{path} mixes corpus formats {sorted(builders)}; point task.data_root at one kind")
    builder = builders.pop()
    by_split = _named_splits(files)
    import datasets  # heavy; only the `text` dataset needs it

    def read(paths: list[Path]) -> str:
        ds = datasets.load_dataset(
            builder,
            data_files=[str(p) for p in paths],
            split="train",
            cache_dir=str(cache_dir) if cache_dir else None,
        )
        if text_field not in ds.column_names:
            raise ValueError(
                f"{paths[0]} has no column {text_field!r}; columns: {ds.column_names} (set task.text_field)"
            )
        return "\n".join(ds[text_field])

    if by_split is None:
        return split_contiguous(read(files), val_fraction, test_fraction)
    return SplitText(*(read(by_split[name]) for name in ("train", "val", "test")))


def _named_splits(files: list[Path]) -> Optional[dict[str, list[Path]]]:
    """Group files by split name (train / valid|validation|val / test) when every file names one."""
    groups: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for p in files:
        words = p.name.lower().replace("-", ".").replace("_", ".").split(".")
        split = (
            "train"
            if "train" in words
            else "val"
            if {"valid", "validation", "val"} & set(words)
            else "test"
            if "test" in words
            else None
        )
        if split is None:
            return None
        groups[split].append(p)
    return groups if all(groups.values()) else None


class TokenWindows(Dataset):
    """Non-overlapping windows of `block_size` tokens; item i is tokens[i*block_size : (i+1)*block_size]."""

    def __init__(self, ids: np.ndarray, block_size: int, max_windows: Optional[int] = None):
        if len(ids) < block_size:
            raise ValueError(f"text has {len(ids)} tokens, fewer than one block of {block_size}")
        # int32 storage halves the memory of big corpora (WikiText-103: 0.5G tokens); items are int64.
        self.ids = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int32))
        self.block_size = block_size
        count = len(ids) // block_size
        self.count = count if max_windows is None else min(count, max_windows)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self.ids[i * self.block_size : (i + 1) * self.block_size].long()


def bits_per_character(mean_nll_nats: float, num_tokens: int, num_chars: int) -> float:
    """Bits per character from a mean per-token loss: total bits over the tokens / characters they encode."""
    return mean_nll_nats * num_tokens / (math.log(2) * num_chars)
