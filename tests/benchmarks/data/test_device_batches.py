"""Batches made on the device (benchmarks/data/device_batches.py): every output is a crop (and maybe a flip) of the
padded image, the batched draws follow the same distribution as the per-example path, reflect padding equals
torchvision's, the draws are reproducible for a seed, and through the engine the same examples arrive in the
same order as from the DataLoader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import engine
from benchmarks.data.device_batches import pad_images, random_crop_flip
from benchmarks.recipes import compose_run
from benchmarks.tasks.classification import ArrayImages

PAD = 1  # an 8x8 image (digits-sized) pads by 8 // 8 = 1: (2 * 1 + 1)^2 offsets x 2 flips = 18 outcomes


def _image(size: int = 8) -> np.ndarray:
    """One uint8 [1, H, W, 3] image of distinct non-zero values, so that every crop/flip is recognisable."""
    return (np.arange(size * size * 3).reshape(1, size, size, 3) % 251 + 1).astype(np.uint8)


def _outcomes(x: torch.Tensor, mode: str) -> dict[tuple, torch.Tensor]:
    """(top, left, flipped) -> the augmented image, for every outcome of a pad-PAD crop of float x [C, H, W]."""
    h, w = x.shape[-2:]
    padded = pad_images(x, PAD, mode)
    out = {}
    for top in range(2 * PAD + 1):
        for left in range(2 * PAD + 1):
            crop = padded[:, top : top + h, left : left + w]
            out[(top, left, False)], out[(top, left, True)] = crop, crop.flip(-1)
    return out


def _which(y: torch.Tensor, outcomes: dict[tuple, torch.Tensor]) -> tuple:
    matches = [k for k, v in outcomes.items() if torch.equal(v, y)]
    assert len(matches) == 1, "not a crop (and flip) of the padded image"
    return matches[0]


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_the_batched_and_the_per_example_augmentation_draw_the_same_outcomes_uniformly(mode):
    images, labels = _image(), np.zeros(1, dtype=np.int64)
    data = ArrayImages(images, labels, (0.0,) * 3, (1 / 255,) * 3, augment=True, flip=True, padding=mode)
    outcomes = _outcomes(data.images[0].float(), mode)
    n = 3600
    torch.manual_seed(0)
    cpu = [_which(data[0][0], outcomes) for _ in range(n)]
    generator = torch.Generator().manual_seed(0)
    x, y = data.batch(torch.zeros(n, dtype=torch.long), generator)
    assert y.tolist() == [0] * n
    batched = [_which(image, outcomes) for image in x]
    expected, sigma = n / 18, (n / 18 * (1 - 1 / 18)) ** 0.5
    for draws in (cpu, batched):
        counts = {k: draws.count(k) for k in outcomes}
        assert all(abs(c - expected) < 5 * sigma for c in counts.values()), counts  # all 18, each ~1/18


def test_reflect_padding_is_torchvisions():
    from torchvision.transforms.v2 import functional as TF

    x = torch.from_numpy(_image(8)[0]).permute(2, 0, 1).float()
    assert torch.equal(pad_images(x, 4, "reflect"), TF.pad(x, [4], padding_mode="reflect"))
    assert torch.equal(pad_images(x, 4, "constant"), TF.pad(x, [4], fill=0))
    with pytest.raises(ValueError, match="choose one of: constant, reflect"):
        pad_images(x, 4, "edge")


def test_the_draws_are_reproducible_for_a_seed():
    x = torch.rand(16, 3, 8, 8)

    def draw(seed):
        return random_crop_flip(x, 2, "reflect", True, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))


FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def _history(tmp_path, name, extra):
    cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / name), FAST + extra)
    engine.run(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    return [(h["train_loss"], h["online"], h["avg"]) for h in result["history"]]


def test_batches_on_device_train_on_the_same_examples_in_the_same_order_as_the_loader(tmp_path):
    plain = ["task.augment=false"]  # no random draws: the two paths must agree bit for bit
    loader = _history(tmp_path, "loader", plain + ["trainer.data_on_device=false"])
    assert _history(tmp_path, "device", plain + ["trainer.data_on_device=true"]) == loader
    augmented = ["task.augment=true", "trainer.data_on_device=true"]
    assert _history(tmp_path, "aug1", augmented) == _history(tmp_path, "aug2", augmented) != loader


def test_a_task_without_batches_on_device_is_refused_when_asked(tmp_path):
    cfg, run_dir = compose_run("smoke/regression", "baseline", 0, str(tmp_path), FAST + ["trainer.data_on_device=true"])
    with pytest.raises(ValueError, match="trainer.data_on_device=true: the regression task's training set"):
        engine.run(cfg, run_dir)
