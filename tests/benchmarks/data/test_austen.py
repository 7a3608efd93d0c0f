"""The janeaustenr reader on R lazy-load files that the test writes in R's own serialisation format."""

from __future__ import annotations

import pytest

from benchmarks.data import austen
from fixture_writers import write_rdata

NOVEL_LINES = {
    name: [f"{name.upper()}", "", f"Chapter 1 of {name}, with \u00e9 and \u2014.", None]
    for name in austen.NOVELS
}


def test_reader_round_trips_the_written_objects(tmp_path):
    write_rdata(tmp_path / "data", NOVEL_LINES)
    books = austen.read_rdata(tmp_path / "data" / "Rdata.rdx")
    assert books == {name: [*lines[:3], ""] for name, lines in NOVEL_LINES.items()}  # NA lines become ""


def test_novels_are_joined_by_lines_in_publication_order(tmp_path, monkeypatch):
    write_rdata(tmp_path / "data", dict(reversed(list(NOVEL_LINES.items()))))
    monkeypatch.setenv(austen.ENV_VAR, str(tmp_path))
    novels = austen.load_novels()
    assert list(novels) == list(austen.NOVELS)
    assert novels["emma"] == "EMMA\n\nChapter 1 of emma, with \u00e9 and \u2014.\n\n"


def test_missing_package_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv(austen.ENV_VAR, str(tmp_path / "empty"))
    monkeypatch.setattr(austen, "_SYSTEM_RDATA", tmp_path / "no-system-R" / "Rdata.rdx")
    with pytest.raises(FileNotFoundError, match="python -m benchmarks.data.austen") as err:
        austen.find_rdx()
    assert "apt-get download r-cran-janeaustenr" in str(err.value) and "dpkg-deb -x" in str(err.value)


def test_a_novel_missing_from_the_data_is_named(tmp_path):
    write_rdata(tmp_path, {"emma": ["x"]})
    with pytest.raises(ValueError, match="persuasion"):
        austen.load_novels_from(tmp_path / "Rdata.rdx")


def test_real_debian_package_when_fetched():
    try:
        rdx = austen.find_rdx()
    except FileNotFoundError:
        pytest.skip("r-cran-janeaustenr not fetched: run `python -m benchmarks.data.austen`")
    books = austen.read_rdata(rdx)
    # line counts of the six character vectors in janeaustenr 1.0.0
    assert {k: len(v) for k, v in books.items()} == {
        "emma": 16235,
        "mansfieldpark": 15349,
        "northangerabbey": 7856,
        "persuasion": 8328,
        "prideprejudice": 13030,
        "sensesensibility": 12624,
    }
    text = "".join(austen.load_novels_from(rdx).values())
    assert text.startswith("SENSE AND SENSIBILITY\n") and len(text) == 4_025_028 and len(set(text)) == 81
