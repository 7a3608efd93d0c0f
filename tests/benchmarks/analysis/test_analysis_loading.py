import collections

import pytest
import torch
from safetensors.torch import save_file, save_model
from torch import nn

from benchmarks.analysis.loading import (
    _load_weights,
    choose_mode,
    find_run_dirs,
    freeze_stochastic_layers,
    to_device,
)


def test_find_run_dirs_accepts_a_run_or_a_sweep(tmp_path):
    for name in ("b/run2", "a/run1"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "result.json").write_text("{}")
    assert find_run_dirs(tmp_path) == [tmp_path / "a/run1", tmp_path / "b/run2"]
    assert find_run_dirs(tmp_path / "b/run2") == [tmp_path / "b/run2"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_run_dirs(tmp_path / "nowhere")


def test_to_device_walks_nested_batches():
    Pair = collections.namedtuple("Pair", "x y")
    batch = {"a": [torch.zeros(1), (torch.ones(1), "label")], "b": Pair(torch.zeros(2), 3)}
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved["b"], Pair) and moved["b"].y == 3
    assert isinstance(moved["a"][1], tuple) and moved["a"][1][1] == "label"
    torch.testing.assert_close(moved["a"][1][0], torch.ones(1))


def test_freeze_puts_only_stochastic_layers_in_eval_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5), nn.MultiheadAttention(2, 1))
    net.eval()
    freeze_stochastic_layers(net)
    assert net.training and net[0].training
    assert not net[1].training and not net[2].training and not net[3].training


def test_choose_mode_prefers_eval_and_falls_back_to_train_for_train_only_losses():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    batch = torch.randn(4, 2)
    assert choose_mode(net, lambda m, b: m(b).pow(2).mean(), batch) == "eval"
    assert not net.training

    def train_only_loss(model, b):  # like torchvision detectors: the loss exists in train mode only
        if not model.training:
            raise RuntimeError("targets should not be None")
        return model(b).pow(2).mean()

    assert choose_mode(net, train_only_loss, batch) == "train-frozen-norm"
    assert net.training and not net[1].training
    # BatchNorm on running statistics: the loss does not depend on which other examples share the batch.
    torch.testing.assert_close(net(batch)[:2], net(batch[:2]))


class TiedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, as in language models


def test_weights_with_tied_tensors_load_and_mismatches_are_explained(tmp_path):
    source, target = TiedNet(), TiedNet()
    save_model(source, str(tmp_path / "tied.safetensors"))  # writes one name for the shared tensor
    state = _load_weights(target, tmp_path / "tied.safetensors", torch.device("cpu"))
    torch.testing.assert_close(target.head.weight, source.embed.weight)
    assert set(state) == {"embed.weight", "head.weight"}
    save_file({"other.weight": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match="does not match the rebuilt model"):
        _load_weights(target, tmp_path / "wrong.safetensors", torch.device("cpu"))
