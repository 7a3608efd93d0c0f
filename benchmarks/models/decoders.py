"""Causal language models from `transformers` configs, randomly initialised (nothing is downloaded), from a
CPU-sized GPT to GPT-2 XL and Llama-style decoders.

    model = build_decoder("gpt2-medium", vocab_size, block_size)     # GPT2LMHeadModel
    model = build_decoder("llama-1b", vocab_size, block_size)        # LlamaForCausalLM
    blocks(model)                   # its transformer layers (FSDP2 units, activation checkpointing)
    flops_per_token(model, block)   # training FLOPs per token: 6 N + 12 L d T (nanoGPT / PaLM appendix B)

GPT-2 sizes are GPT-2's shapes (tied input/output embeddings): "gpt2-124m" (small, 124M parameters with GPT-2's
50257-token vocabulary), "gpt2-medium" (355M), "gpt2-large" (774M), "gpt2-xl" (1.56B); fewer parameters with a
character or byte vocabulary. Llama sizes are Llama's shapes (RMSNorm, SwiGLU, rotary positions, grouped-query
attention, untied embeddings): "llama-1b" is Llama 3.2 1B's (16 layers, 2048 wide, 8 KV heads), "llama-7b" Llama
2 7B's (32 layers, 4096 wide, full multi-head attention), "llama-tiny" a CPU test size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn


@dataclass(frozen=True)
class Decoder:
    """The shape of one decoder size."""

    family: str  # gpt2 | llama
    layers: int
    heads: int
    width: int  # model dimension
    ffn: Optional[int] = None  # llama: SwiGLU hidden size (GPT-2: 4 x width)
    kv_heads: Optional[int] = None  # llama: key/value heads (grouped-query attention); None = heads


DECODERS: dict[str, Decoder] = {
    "gpt-tiny": Decoder("gpt2", 2, 4, 128),  # ~0.4M parameters: CPU smoke/quick runs
    "gpt-mini": Decoder("gpt2", 4, 4, 256),  # ~3M: a longer CPU run
    "gpt-small": Decoder("gpt2", 6, 6, 384),  # ~11M: nanoGPT's shakespeare-char shape
    "gpt2-124m": Decoder("gpt2", 12, 12, 768),  # GPT-2 small
    "gpt2-medium": Decoder("gpt2", 24, 16, 1024),  # 355M
    "gpt2-large": Decoder("gpt2", 36, 20, 1280),  # 774M
    "gpt2-xl": Decoder("gpt2", 48, 25, 1600),  # 1.56B
    "llama-tiny": Decoder("llama", 2, 4, 128, ffn=344, kv_heads=2),  # CPU tests
    "llama-1b": Decoder("llama", 16, 32, 2048, ffn=8192, kv_heads=8),  # Llama 3.2 1B's shape
    "llama-7b": Decoder("llama", 32, 32, 4096, ffn=11008, kv_heads=32),  # Llama 2 7B's shape
}


def build_decoder(size: str, vocab_size: int, block_size: int, dropout: float = 0.0) -> nn.Module:
    """A fresh causal LM of the named size (random initialisation)."""
    if size not in DECODERS:
        raise ValueError(f"unknown decoder size {size!r}; allowed: {', '.join(DECODERS)}")
    spec = DECODERS[size]
    if spec.family == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_layer=spec.layers, n_head=spec.heads,
                            n_embd=spec.width, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                            bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.width, intermediate_size=spec.ffn,
                             num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                             num_key_value_heads=spec.kv_heads or spec.heads, max_position_embeddings=block_size,
                             attention_dropout=dropout, bos_token_id=0, eos_token_id=0,
                             tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    # Next-token cross-entropy; naming it silences transformers' "loss_type=None ... unrecognized" warning.
    model.loss_type = "ForCausalLM"
    return model


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's transformer layers, in order."""
    layers = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    return list(layers)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each layer's activations in backward (transformers' gradient checkpointing, non-reentrant)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def flops_per_token(model: nn.Module, block_size: int) -> float:
    """Training FLOPs (forward + backward) per token: 6 N for the weight matrices (N: parameters without the
    position embeddings) plus 12 L d T for attention scores and values (L layers, d width, T context)."""
    config = model.config
    n = sum(p.numel() for p in model.parameters())
    if hasattr(model, "transformer"):  # GPT-2: learned positions are a lookup, not a matmul
        n -= model.transformer.wpe.weight.numel()
    return 6.0 * n + 12.0 * config.num_hidden_layers * config.hidden_size * block_size
