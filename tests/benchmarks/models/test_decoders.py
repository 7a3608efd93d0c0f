"""Decoder sizes (benchmarks/models/decoders.py): GPT-2 small's parameter count, the GPT-2 and Llama shapes of the
larger sizes (counted on meta tensors: nothing allocated), their blocks and FLOPs per token, unknown sizes refused."""

from __future__ import annotations

import pytest
import torch

from benchmarks.models.decoders import DECODERS, blocks, build_decoder, flops_per_token


@pytest.mark.slow
def test_gpt2_124m_with_gpt2_vocabulary_has_gpt2_smalls_parameter_count():
    model = build_decoder("gpt2-124m", vocab_size=50257, block_size=1024)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2 small, tied embeddings


@pytest.mark.parametrize("size, vocab, params", [
    ("gpt2-medium", 50257, 354_823_168),  # GPT-2 medium (tied embeddings, 1024 positions)
    ("gpt2-large", 50257, 774_030_080),
    ("gpt2-xl", 50257, 1_557_611_200),
    ("llama-1b", 128256, 1_498_482_688),  # Llama 3.2 1B's shape with untied embeddings
    ("llama-7b", 32000, 6_738_415_616),  # Llama 2 7B
])
def test_the_large_sizes_have_the_published_parameter_counts(size, vocab, params):
    with torch.device("meta"):
        model = build_decoder(size, vocab_size=vocab, block_size=1024)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(blocks(model)) == DECODERS[size].layers


def test_flops_per_token_is_six_n_plus_attention():
    model = build_decoder("gpt-tiny", vocab_size=81, block_size=64)
    n = sum(p.numel() for p in model.parameters()) - 64 * 128  # without the position embeddings
    assert flops_per_token(model, 64) == 6 * n + 12 * 2 * 128 * 64


def test_unknown_size_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="gpt-tiny, gpt-mini, gpt-small, gpt2-124m, gpt2-medium"):
        build_decoder("gpt-xxl", 256, 64)
