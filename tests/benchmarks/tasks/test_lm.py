"""Language modelling: smoke runs through the engine, and the metrics against a direct computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks import engine
from benchmarks.data import austen
from benchmarks.data.text_corpus import TokenWindows, Vocab
from benchmarks.models.decoders import build_decoder
from benchmarks.recipes import compose_run
from benchmarks.tasks import lm
from benchmarks.tasks.protocol import RunContext

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def _prose(n_sentences: int) -> str:
    rng = np.random.default_rng(0)
    words = [
        "the",
        "lady",
        "said",
        "that",
        "she",
        "would",
        "walk",
        "to",
        "town",
        "with",
        "her",
        "sister",
        "and",
    ]
    return "".join(" ".join(rng.choice(words, size=8)).capitalize() + ".\n" for _ in range(n_sentences))


@pytest.mark.slow
def test_smoke_run_on_a_local_text_file_writes_a_valid_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(_prose(1500))  # ~70k characters: 5% validation holds 16 windows of 32
    cfg, run_dir = compose_run(
        "smoke/lm",
        "sema",
        0,
        str(tmp_path / "runs"),
        [*FAST, "task.dataset=text", f"task.data_root={corpus}"],
    )
    engine.run(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert (
        result["status"] == "completed"
        and result["headline"] == "ppl"
        and result["higher_is_better"] is False
    )
    final = result["final"]
    assert final["ppl"] == pytest.approx(math.exp(final["loss"]))
    assert final["bpc"] == pytest.approx(
        final["loss"] / math.log(2)
    )  # character level: one token per character
    assert {"test_loss", "test_ppl", "test_bpc"} <= set(final)
    assert [h["epoch"] for h in result["history"]] == [1, 2] and result["history"][-1]["step"] == 8
    assert result["dataset"].startswith("text:") and "char-level" in result["dataset"]


@pytest.mark.slow
def test_smoke_run_on_the_austen_novels(tmp_path):
    try:
        austen.find_rdx()
    except FileNotFoundError:
        pytest.skip("r-cran-janeaustenr not fetched: run `python -m benchmarks.data.austen`")
    cfg, run_dir = compose_run("smoke/lm", "ema", 0, str(tmp_path), FAST)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "austen-6-novels (char-level)"
    assert result["final"]["ppl"] < 82  # below the uniform guess over the 82-symbol vocabulary


def test_evaluator_is_the_token_weighted_cross_entropy():
    torch.manual_seed(0)
    vocab = Vocab.build("char", "abcdefgh")
    windows = TokenWindows(vocab.encode("abcdefgh" * 10), block_size=8, max_windows=5)
    model = build_decoder("gpt-tiny", vocab.size, 8).eval()
    with torch.no_grad():
        metrics = lm.make_evaluator(windows, vocab, batch_size=2, device=torch.device("cpu"))(model)
        batch = torch.stack([windows[i] for i in range(5)])
        logits = model(input_ids=batch).logits
        expected = F.cross_entropy(logits[:, :-1].reshape(-1, vocab.size), batch[:, 1:].reshape(-1))
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(float(expected)), rel=1e-5)
    assert metrics["bpc"] == pytest.approx(float(expected) / math.log(2), rel=1e-5)


def test_byte_level_bits_per_character_counts_characters_not_bytes():
    vocab = Vocab.build("byte", "")
    windows = TokenWindows(vocab.encode("\u00e9" * 8), block_size=4)  # 16 bytes, 8 characters
    model = build_decoder("gpt-tiny", vocab.size, 4).eval()
    with torch.no_grad():
        metrics = lm.make_evaluator(windows, vocab, 4, torch.device("cpu"))(model)
    assert metrics["bpc"] == pytest.approx(2 * metrics["loss"] / math.log(2), rel=1e-6)


def test_bad_choices_and_missing_corpus_are_actionable(tmp_path, monkeypatch):
    monkeypatch.setattr(austen, "_SYSTEM_RDATA", tmp_path / "no-system-R" / "Rdata.rdx")
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="allowed: austen, text"):
        lm.setup(lm.Config(dataset="wiki"), ctx)
    with pytest.raises(ValueError, match="task.data_root"):
        lm.setup(lm.Config(dataset="text"), ctx)
    with pytest.raises(ValueError, match="gpt2-124m"):
        lm.setup(lm.Config(model="gpt-huge"), ctx)
    with pytest.raises(FileNotFoundError, match="python -m benchmarks.data.austen"):
        lm.setup(lm.Config(data_root=str(tmp_path / "no-austen")), ctx)
