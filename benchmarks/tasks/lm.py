"""Language modelling (recipes `*/lm`, `paper/lm_*`): a GPT-2 or Llama-style decoder trained from scratch on a
character/byte corpus (benchmarks/models/decoders.py; up to gpt2-xl and llama-7b, the larger ones with
trainer.strategy=fsdp2, trainer.activation_checkpointing and trainer.grad_accum_steps).

Embedded default: Jane Austen's six novels (about 4.0M characters, 81 distinct) from the Debian package
`r-cran-janeaustenr`, fetched once with `python -m benchmarks.data.austen`. Any local text/JSON/parquet
corpus (e.g. WikiText-103 raw) goes through `dataset=text task.data_root=PATH`.

Metrics (validation split each epoch; the test split once at the end, keys prefixed `test_`):
`loss` (mean next-token cross-entropy, nats), `ppl` = exp(loss) (the headline, lower is better; per character
or per byte, so not comparable with word-level perplexities) and `bpc` (bits per character).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from benchmarks.data.text_corpus import (
    TOKENIZERS,
    SplitText,
    TokenWindows,
    Vocab,
    bits_per_character,
    load_local_corpus,
    split_contiguous,
)
from benchmarks.evaluation import ShardedEvaluation, evaluate_sharded
from benchmarks.models.decoders import DECODERS
from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

DATASETS = ("austen", "text")


@dataclass
class Config(TaskConfig):
    name: str = "lm"
    dataset: str = "austen"  # austen (Debian r-cran-janeaustenr) | text (local file/folder via `datasets`)
    data_root: Optional[str] = None  # austen: the unpacked package folder (None = $SEMA_AUSTEN_DIR or the
    #                                  cache); text: a corpus file or folder (required)
    model: str = "gpt-tiny"  # one of benchmarks.models.decoders.DECODERS (GPT-2 up to gpt2-xl, llama-1b/7b)
    tokenizer: str = "char"  # char (codepoints of the training text) | byte (UTF-8 bytes, 256 ids)
    block_size: int = 128  # tokens per training/evaluation window (the model's context length)
    dropout: float = 0.0  # GPT-2 residual/embedding/attention dropout
    val_fraction: float = 0.05  # share of the corpus (a contiguous block after train) held out for validation
    test_fraction: float = 0.05  # share of the corpus (the final contiguous block) held out for the test
    text_field: str = "text"  # column holding the text in JSON/parquet corpora
    batch_size: int = 32
    eval_batch_size: int = 64
    max_eval_samples: Optional[int] = None  # cap on validation/test windows per evaluation; None = all


def load_splits(cfg: Config, ctx: RunContext) -> tuple[SplitText, str]:
    """The corpus split into train/val/test texts, and the dataset name for results."""
    if cfg.dataset == "austen":
        from benchmarks.data import austen

        root = cfg.data_root if cfg.data_root else None
        text = "".join(austen.load_novels(ctx.cache_dir, root).values())
        return split_contiguous(text, cfg.val_fraction, cfg.test_fraction), "austen-6-novels"
    if cfg.dataset == "text":
        if not cfg.data_root:
            raise ValueError(
                "dataset=text needs task.data_root=<corpus file or folder> "
                "(.txt/.raw/.json/.jsonl/.parquet; e.g. wikitext-103-raw)"
            )
        splits = load_local_corpus(
            cfg.data_root, cfg.text_field, cfg.val_fraction, cfg.test_fraction, ctx.cache_dir / "hf_datasets"
        )
        return splits, f"text:{cfg.data_root}"
    raise ValueError(f"unknown lm dataset {cfg.dataset!r}; allowed: {', '.join(DATASETS)}")


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over a batch of windows (the model shifts labels internally)."""
    return model(input_ids=batch, labels=batch).loss


def make_evaluator(
    windows: TokenWindows, vocab: Vocab, batch_size: int, device: torch.device, prefix: str = ""
):
    """`evaluate(model)` over all windows in one process (see `sharded_evaluation`)."""
    spec = sharded_evaluation(windows, vocab, batch_size, prefix)
    return lambda model: evaluate_sharded(spec, model, device)


def sharded_evaluation(windows: TokenWindows, vocab: Vocab, batch_size: int, prefix: str = "") -> ShardedEvaluation:
    """Token-weighted mean loss, perplexity and bits per character of a model on fixed windows, as sums."""
    span = windows.ids[: len(windows) * windows.block_size]
    chars_per_token = len(vocab.decode(span.tolist())) / len(span) if vocab.kind == "byte" else 1.0

    def batch_sums(model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        predicted = batch.shape[0] * (batch.shape[1] - 1)  # the first token of a window is not predicted
        return {"loss": lm_loss(model, batch).double() * predicted, "tokens": torch.tensor(predicted)}

    def finish(t: dict[str, torch.Tensor]) -> dict[str, float]:
        tokens = int(t["tokens"])
        loss = float(t["loss"]) / tokens
        return {
            f"{prefix}loss": loss,
            f"{prefix}ppl": math.exp(loss),
            f"{prefix}bpc": bits_per_character(loss, tokens, round(tokens * chars_per_token)),
        }

    return ShardedEvaluation(windows, batch_size, batch_sums, finish)


def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    if cfg.tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {cfg.tokenizer!r}; allowed: {', '.join(TOKENIZERS)}")
    if cfg.model not in DECODERS:
        raise ValueError(f"unknown lm model {cfg.model!r}; allowed: {', '.join(DECODERS)}")
    from benchmarks.models import decoders

    splits, dataset_name = load_splits(cfg, ctx)
    vocab = Vocab.build(cfg.tokenizer, splits.train)
    train_set = TokenWindows(vocab.encode(splits.train), cfg.block_size, cfg.max_train_samples)
    val_set = TokenWindows(vocab.encode(splits.val), cfg.block_size, cfg.max_eval_samples)
    test_set = TokenWindows(vocab.encode(splits.test), cfg.block_size, cfg.max_eval_samples)
    model = decoders.build_decoder(cfg.model, vocab.size, cfg.block_size, cfg.dropout)

    def analysis_batches():
        generator = torch.Generator().manual_seed(ctx.seed)
        order = torch.randperm(len(train_set), generator=generator)[: 4 * cfg.batch_size].tolist()
        return [
            torch.stack([train_set[i] for i in order[k : k + cfg.batch_size]])
            for k in range(0, len(order), cfg.batch_size)
        ]

    def no_decay_on_norms_and_biases(module: nn.Module) -> list[dict]:
        decay = [p for n, p in module.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in module.named_parameters() if p.ndim < 2]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    n_params = sum(p.numel() for p in model.parameters())
    val_eval = sharded_evaluation(val_set, vocab, cfg.eval_batch_size)
    test_eval = sharded_evaluation(test_set, vocab, cfg.eval_batch_size, prefix="test_")
    return TaskSetup(
        model=model,
        train_set=train_set,
        train_loss=lm_loss,
        evaluate=lambda model: evaluate_sharded(val_eval, model, ctx.device),
        sharded_evaluation=val_eval,
        final_evaluate=lambda model: evaluate_sharded(test_eval, model, ctx.device, ctx.rank, ctx.world_size),
        final_evaluate_on_every_rank=True,
        headline="ppl",
        higher_is_better=False,
        dataset=f"{dataset_name} ({cfg.tokenizer}-level)",
        analysis_batches=analysis_batches,
        param_groups=no_decay_on_norms_and_biases,
        shard_blocks=decoders.blocks,
        activation_checkpointing=decoders.enable_activation_checkpointing,
        tokens_per_example=cfg.block_size,
        flops_per_example=decoders.flops_per_token(model, cfg.block_size) * cfg.block_size,
        notes=[
            f"{cfg.model}: {n_params / 1e6:.2f}M parameters, vocabulary {vocab.size} "
            f"({cfg.tokenizer}-level), "
            f"context {cfg.block_size}; ppl is per {'character' if cfg.tokenizer == 'char' else 'byte'}",
            f"splits by contiguous blocks: train {len(splits.train):,} / val {len(splits.val):,} / "
            f"test {len(splits.test):,} characters; eval windows capped at {cfg.max_eval_samples}",
        ],
    )
