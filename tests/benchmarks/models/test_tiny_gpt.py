"""GPT-2-style models: GPT-2 small's parameter count, and rejection of unknown sizes."""

from __future__ import annotations

import pytest

from benchmarks.models.tiny_gpt import build_gpt


@pytest.mark.slow
def test_gpt2_124m_with_gpt2_vocabulary_has_gpt2_smalls_parameter_count():
    model = build_gpt("gpt2-124m", vocab_size=50257, block_size=1024)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2 small, tied embeddings


def test_unknown_size_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="gpt-tiny, gpt-mini, gpt-small, gpt2-124m"):
        build_gpt("gpt-xl", 256, 64)
