"""The classification task: datasets through `setup`, models (project and timm, CIFAR stems), metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.tasks import classification as cls
from benchmarks.tasks.protocol import RunContext
from fixture_writers import write_cifar100, write_imagenet


def ctx(tmp_path) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)


def test_digits_setup_trains_and_evaluates(tmp_path):
    setup = cls.setup(cls.Config(dataset="digits", model="tiny_cnn", augment=False, max_train_samples=100,
                                 max_eval_samples=50), ctx(tmp_path))
    assert len(setup.train_set) == 100 and setup.headline == "top1" and setup.higher_is_better
    x, y = setup.train_set[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and 0 <= int(y) < 10
    batch = next(iter(torch.utils.data.DataLoader(setup.train_set, batch_size=16)))
    loss = setup.train_loss(setup.model, batch)
    assert loss.ndim == 0 and abs(loss.item() - torch.log(torch.tensor(10.0)).item()) < 1.0
    setup.model.eval()
    with torch.no_grad():
        metrics = setup.evaluate(setup.model)
    assert set(metrics) == {"top1", "top5", "loss"} and 0 <= metrics["top1"] <= metrics["top5"] <= 100


def test_evaluate_counts_hand_checked_accuracies(tmp_path):
    cfg = cls.Config(dataset="digits", model="tiny_cnn", augment=False, max_eval_samples=20, eval_batch_size=8)
    setup = cls.setup(cfg, ctx(tmp_path))
    labels = cls.build_datasets(cfg)[1].labels

    class Oracle(nn.Module):
        """Logit 10 on the label for the first 15 examples; on the last 5, 10 on label + 1 and 5 on the label."""

        def __init__(self):
            super().__init__()
            self.seen = 0

        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            for row in range(len(x)):
                i, y = self.seen + row, int(labels[self.seen + row])
                logits[row, y] = 10.0 if i < 15 else 5.0
                if i >= 15:
                    logits[row, (y + 1) % 10] = 10.0
            self.seen += len(x)
            return logits

    metrics = setup.evaluate(Oracle())
    e = torch.tensor(1.0).exp
    right = -torch.log(e() ** 10 / (e() ** 10 + 9)).item()
    wrong = -torch.log(e() ** 5 / (e() ** 10 + e() ** 5 + 8)).item()
    assert metrics["top1"] == pytest.approx(75.0) and metrics["top5"] == pytest.approx(100.0)
    assert metrics["loss"] == pytest.approx((15 * right + 5 * wrong) / 20, rel=1e-5)


def test_augmentation_crops_and_flips_with_the_global_rng():
    images = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3).numpy()
    ds = cls.ArrayImages(images, torch.tensor([0, 1]).numpy(), (0, 0, 0), (1 / 255,) * 3, augment=True, flip=True)
    torch.manual_seed(0)
    a = [ds[0][0] for _ in range(5)]
    torch.manual_seed(0)
    b = [ds[0][0] for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(a[0], x) for x in a[1:])  # the crops differ between draws


def test_cifar100_from_tiny_official_files(tmp_path):
    write_cifar100(tmp_path, n_train=6, n_test=3)
    setup = cls.setup(cls.Config(dataset="cifar100", data_root=str(tmp_path), model="tiny_cnn"), ctx(tmp_path))
    assert len(setup.train_set) == 6 and setup.dataset == "cifar100"
    with torch.no_grad():
        setup.model.eval()
        assert set(setup.evaluate(setup.model)) == {"top1", "top5", "loss"}


def test_imagenet_folder_through_setup(tmp_path):
    write_imagenet(tmp_path)
    setup = cls.setup(cls.Config(dataset="imagenet", data_root=str(tmp_path), model="tiny_cnn", image_size=32),
                      ctx(tmp_path))
    x, y = setup.train_set[0]
    assert x.shape == (3, 32, 32) and y == 0
    setup.model.eval()
    with torch.no_grad():
        assert setup.evaluate(setup.model)["top1"] >= 0


def test_timm_models_get_a_cifar_stem_and_vits_take_the_image_size():
    resnet = cls.build_model(cls.Config(model="resnet18"), num_classes=100, image_size=32)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, nn.Identity)
    assert resnet(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    vit = cls.build_model(cls.Config(model="deit_tiny_patch16_224"), num_classes=10, image_size=32)
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    big = cls.build_model(cls.Config(model="resnet18"), num_classes=10, image_size=224)
    assert big.conv1.kernel_size == (7, 7)  # ImageNet-size inputs keep the ImageNet stem


def test_densenet_and_resnext_get_a_cifar_stem_and_an_unknown_stem_is_an_error():
    densenet = cls.build_model(cls.Config(model="densenet121"), num_classes=100, image_size=32)
    conv0 = densenet.features.conv0
    assert (conv0.kernel_size, conv0.stride) == ((3, 3), (1, 1)) and isinstance(densenet.features.pool0, nn.Identity)
    assert isinstance(densenet.features.norm0, nn.Identity)
    assert densenet(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    resnext = cls.build_model(cls.Config(model="resnext50_32x4d"), num_classes=100, image_size=32)
    assert resnext.conv1.stride == (1, 1) and isinstance(resnext.maxpool, nn.Identity)
    with pytest.raises(ValueError, match="task.model='efficientnet_b0' at 32 px: no CIFAR stem is known"):
        cls.build_model(cls.Config(model="efficientnet_b0"), num_classes=10, image_size=32)
    kept = cls.build_model(cls.Config(model="efficientnet_b0", cifar_stem=False), num_classes=10, image_size=32)
    assert kept.conv_stem.stride == (2, 2)  # kept on purpose


def test_wide_resnet_28_10_has_the_published_parameter_count_and_its_twin_runs():
    with torch.device("meta"):
        wrn = cls.build_model(cls.Config(model="wrn28_10"), num_classes=100, image_size=32)
    assert sum(p.numel() for p in wrn.parameters()) == 36_536_884
    twin = cls.build_model(cls.Config(model="wrn10_1"), num_classes=10, image_size=32)
    assert twin(torch.zeros(2, 3, 32, 32)).shape == (2, 10) and len(twin.blocks) == 3
    # openmixup's variant: the same network plus a bias on every convolution, LeakyReLU, slow BatchNorm
    with torch.device("meta"):
        official = cls.build_model(cls.Config(model="wrn28_10_openmixup"), num_classes=100, image_size=32)
    biases = sum(m.out_channels for m in official.modules() if isinstance(m, nn.Conv2d))
    assert sum(p.numel() for p in official.parameters()) == 36_536_884 + biases
    assert isinstance(official.act, nn.LeakyReLU) and official.bn.momentum == 0.001 and official.bn.eps == 1e-3
    shortcuts = [b.activated_shortcut for b in official.blocks if b.shortcut is not None]
    assert shortcuts == [True, False, False]  # only the first group's projection sees the activated input
    from benchmarks.models.wide_resnet import WideResNet

    with pytest.raises(ValueError, match="variant='fixmatch' is not allowed; choose one of: original, openmixup"):
        WideResNet(10, 1, variant="fixmatch")


def test_unknown_names_list_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="task.model='resnet7' is not allowed; choose one of: small_cnn, tiny_cnn"):
        cls.build_model(cls.Config(model="resnet7"), 10, 32)
    with pytest.raises(ValueError, match="task.dataset='svhn' is not allowed; choose one of: fashion_mnist, digits"):
        cls.setup(cls.Config(dataset="svhn"), ctx(tmp_path))


def test_the_official_adamw_pipeline_randaugment_and_resized_crop_is_reproducible(tmp_path):
    import json

    from benchmarks import engine
    from benchmarks.recipes import compose_run

    extra = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "task.augment=true",
             "task.rand_augment=rand-m7-mstd0.5", "task.resized_crop_scale=[0.8,1.0]", "task.image_size=16"]
    histories = []
    for name in ("a", "b"):
        cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / name), extra)
        engine.run(cfg, run_dir)
        histories.append(json.loads((run_dir / "result.json").read_text())["history"])
    assert [h["train_loss"] for h in histories[0]] == [h["train_loss"] for h in histories[1]]
    config = cls.Config(dataset="digits", augment=True, rand_augment="rand-m7-mstd0.5", resized_crop_scale=[0.8, 1.0],
                        image_size=16)
    train, _ = cls.build_datasets(config)
    assert isinstance(train, cls.TransformedImages) and train[0][0].shape == (3, 16, 16)
    steps = [type(t).__name__ for t in train.transform.transforms]
    assert steps == ["RandomResizedCrop", "RandAugment", "ToTensor", "Normalize"]  # digits: no flips


def test_mixup_mixes_each_image_with_its_flipped_partner_and_the_targets_say_how_much():
    import numpy as np
    import torch.nn.functional as F

    mix = cls.batch_mixing(cls.Config(mixup_alpha=0.8), num_classes=4)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    np.random.seed(0)
    mixed, soft = mix(x.clone(), y)
    lam = soft[0, 0].item()  # image 0 (class 0) is mixed with image 3 (class 3)
    assert 0 < lam < 1 and soft[0, 3].item() == pytest.approx(1 - lam) and torch.allclose(soft.sum(1), torch.ones(4))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    np.random.seed(0)
    assert torch.equal(mix(x.clone(), y)[0], mixed)  # numpy's global RNG (seeded, checkpointed) decides
    logits = torch.randn(4, 4)
    assert F.cross_entropy(logits, soft).item() == pytest.approx(-(soft * logits.log_softmax(1)).sum(1).mean().item())


def test_cutmix_pastes_a_box_of_the_flipped_batch_and_smooths_by_its_area():
    import numpy as np

    mix = cls.batch_mixing(cls.Config(cutmix_alpha=1.0, label_smoothing=0.1), num_classes=4)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    np.random.seed(3)
    mixed, soft = mix(x.clone(), y)
    pasted = (mixed != x).any(dim=1)[0]  # the box where image 0 shows image 3
    assert pasted.any() and torch.equal(mixed[0][:, pasted], x[3][:, pasted])
    lam = 1 - pasted.float().mean().item()  # the kept area
    off = 0.1 / 4  # label smoothing spreads 0.1 over the 4 classes
    assert soft[0, 0].item() == pytest.approx(lam * (1 - 0.1 + off) + (1 - lam) * off)
    assert soft[0, 3].item() == pytest.approx((1 - lam) * (1 - 0.1 + off) + lam * off)
    assert cls.batch_mixing(cls.Config(), 4) is None
    with pytest.raises(ValueError, match="need even batches"):
        cls.batch_mixing(cls.Config(mixup_alpha=0.8, batch_size=5), 4)
    with pytest.raises(ValueError, match="each must be >= 0"):
        cls.batch_mixing(cls.Config(mixup_alpha=-1.0), 4)


def test_the_official_imagenet_pipeline_is_timms_in_the_configs_order(tmp_path):
    from torchvision.transforms import InterpolationMode

    write_imagenet(tmp_path)
    config = cls.Config(dataset="imagenet", data_root=str(tmp_path), image_size=32, rand_augment="rand-m9-mstd0.5-inc1",
                        random_erasing=0.25)
    train, test = cls.build_datasets(config)
    steps = [type(t).__name__ for t in train.transform.transforms]
    assert steps == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToTensor", "Normalize",
                     "RandomErasing"]
    crop, resize = train.transform.transforms[0], test.transform.transforms[0]
    assert crop.interpolation == resize.interpolation == InterpolationMode.BICUBIC and crop.scale == (0.08, 1.0)
    assert train[0][0].shape == test[0][0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="task.interpolation='nearest' is not allowed; choose one of: bicubic"):
        cls.build_datasets(cls.Config(dataset="imagenet", data_root=str(tmp_path), interpolation="nearest"))


def test_a_run_with_mixup_and_cutmix_is_reproducible(tmp_path):
    import json

    from benchmarks import engine
    from benchmarks.recipes import compose_run

    extra = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "task.mixup_alpha=0.8", "task.cutmix_alpha=1.0",
             "task.label_smoothing=0.1"]
    losses = []
    for name in ("a", "b"):
        cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / name), extra)
        engine.run(cfg, run_dir)
        losses.append([h["train_loss"] for h in json.loads((run_dir / "result.json").read_text())["history"]])
    assert losses[0] == losses[1]
    cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / "plain"),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1"])
    engine.run(cfg, run_dir)
    plain = [h["train_loss"] for h in json.loads((run_dir / "result.json").read_text())["history"]]
    assert plain != losses[0]  # the mixing is on
