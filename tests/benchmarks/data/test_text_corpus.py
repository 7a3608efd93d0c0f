"""Vocabularies, contiguous splits, windows and local corpora read through `datasets` (offline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.data.text_corpus import (
    TokenWindows,
    Vocab,
    bits_per_character,
    load_local_corpus,
    split_contiguous,
)


def test_char_vocab_is_sorted_with_unknown_zero_and_round_trips():
    vocab = Vocab.build("char", "banana!")
    assert vocab.chars == ["<unk>", "!", "a", "b", "n"] and vocab.size == 5
    ids = vocab.encode("ban?a\u00e9")
    assert ids.tolist() == [3, 2, 4, 0, 2, 0]  # '?' and 'e-acute' were not in the training text
    assert vocab.decode(vocab.encode("nab!")) == "nab!"


def test_byte_vocab_encodes_utf8():
    vocab = Vocab.build("byte", "")
    assert vocab.size == 256 and vocab.encode("a\u00e9").tolist() == [97, 0xC3, 0xA9]
    assert vocab.decode([97, 0xC3, 0xA9]) == "a\u00e9"
    with pytest.raises(ValueError, match="char, byte"):
        Vocab.build("bpe", "")


def test_split_is_three_contiguous_blocks():
    text = "".join(chr(65 + i % 26) for i in range(100))
    s = split_contiguous(text, 0.1, 0.2)
    assert (s.train, s.val, s.test) == (text[:70], text[70:80], text[80:])
    with pytest.raises(ValueError, match="sum < 1"):
        split_contiguous(text, 0.5, 0.5)


def test_windows_are_non_overlapping_blocks():
    windows = TokenWindows(np.arange(10), block_size=3)
    assert len(windows) == 3 and windows[2].tolist() == [6, 7, 8]
    assert len(TokenWindows(np.arange(10), 3, max_windows=2)) == 2
    with pytest.raises(IndexError):
        windows[3]
    with pytest.raises(ValueError, match="fewer than one block"):
        TokenWindows(np.arange(2), 3)


def test_bits_per_character_converts_nats_per_token():
    assert bits_per_character(math.log(2), 10, 10) == pytest.approx(1.0)
    # byte level: 12 bytes encoding 8 characters at 1 bit per byte = 1.5 bits per character
    assert bits_per_character(math.log(2), 12, 8) == pytest.approx(1.5)


def test_text_file_is_split_contiguously(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    s = load_local_corpus(str(path), "text", 0.1, 0.1, tmp_path / "hf")
    whole = "\n".join(f"line {i}" for i in range(100))
    assert s.train + s.val + s.test == whole


def test_wikitext_style_folder_keeps_its_splits(tmp_path):
    folder = tmp_path / "wikitext-103-raw"
    folder.mkdir()
    for name, body in (
        ("wiki.train.raw", "alpha\nbeta\n"),
        ("wiki.valid.raw", "gamma\n"),
        ("wiki.test.raw", "delta\n"),
    ):
        (folder / name).write_text(body)
    s = load_local_corpus(str(folder), "text", 0.1, 0.1, tmp_path / "hf")
    assert (s.train, s.val, s.test) == ("alpha\nbeta", "gamma", "delta")


def test_jsonl_uses_the_text_field_and_names_missing_columns(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(20)))
    s = load_local_corpus(str(path), "body", 0.1, 0.1, tmp_path / "hf")
    assert s.train.startswith("doc 0\ndoc 1") and s.test.endswith("doc 19")
    with pytest.raises(ValueError, match=r"no column 'text'.*body"):
        load_local_corpus(str(path), "text", 0.1, 0.1, tmp_path / "hf")


def test_missing_corpus_says_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.data_root"):
        load_local_corpus(str(tmp_path / "nothing"), "text", 0.1, 0.1, tmp_path / "hf")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(FileNotFoundError, match=".parquet"):
        load_local_corpus(str(tmp_path), "text", 0.1, 0.1, tmp_path / "hf")


def test_parquet_corpus_is_read_through_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "corpus" / "part-0.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(10)], "id": list(range(10))}), path)
    s = load_local_corpus(str(path.parent), "text", 0.2, 0.2, tmp_path / "hf")
    assert s.train + s.val + s.test == "\n".join(f"row {i}" for i in range(10))
