"""GPT-2-style causal language models from `transformers`, randomly initialised, from tiny (CPU) to 124M.

The sizes are GPT-2's shape family; "gpt2-124m" is GPT-2 small (12 layers, 12 heads, 768 wide), which has
124M parameters with GPT-2's 50257-token vocabulary (fewer with a character or byte vocabulary).
"""

from __future__ import annotations

from torch import nn

# name -> (n_layer, n_head, n_embd)
GPT_SIZES: dict[str, tuple[int, int, int]] = {
    "gpt-tiny": (2, 4, 128),  # ~0.4M parameters: CPU smoke/quick runs
    "gpt-mini": (4, 4, 256),  # ~3M: a longer CPU run
    "gpt-small": (6, 6, 384),  # ~11M: nanoGPT's shakespeare-char shape
    "gpt2-124m": (12, 12, 768),  # GPT-2 small
}


def build_gpt(size: str, vocab_size: int, block_size: int, dropout: float = 0.0) -> nn.Module:
    """A fresh `GPT2LMHeadModel` of the named size (tied input/output embeddings, as GPT-2)."""
    if size not in GPT_SIZES:
        raise ValueError(f"unknown GPT size {size!r}; allowed: {', '.join(GPT_SIZES)}")
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, n_head, n_embd = GPT_SIZES[size]
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    # Next-token cross-entropy; naming it silences transformers' "loss_type=None ... unrecognized" warning.
    model.loss_type = "ForCausalLM"
    return model
