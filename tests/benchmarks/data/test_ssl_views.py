"""Batched SSL augmentations: output range and size, reproducibility from the seed, each op on known inputs."""

from __future__ import annotations

import torch

from benchmarks.data.ssl_views import ViewConfig, augment, colour_jitter, grey, random_resized_crop


def test_views_have_the_requested_size_stay_in_range_and_follow_the_seed():
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(0)
    a = augment(x, ViewConfig(out_size=24, solarize_p=0.5))
    torch.manual_seed(0)
    b = augment(x, ViewConfig(out_size=24, solarize_p=0.5))
    assert a.shape == (8, 3, 24, 24) and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert not torch.equal(a, augment(x, ViewConfig(out_size=24)))


def test_crops_are_axis_aligned_and_flipped_about_half_the_time():
    ramp = torch.linspace(0, 1, 32).expand(1, 1, 32, 32).repeat(64, 1, 1, 1)  # brightness grows left to right
    torch.manual_seed(0)
    out = random_resized_crop(ramp, 16, min_scale=0.2)
    rows_equal = torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-5)  # no rotation or shear
    steps = out[:, 0, 0].diff(dim=-1)
    increasing, decreasing = (steps >= -1e-6).all(dim=1), (steps <= 1e-6).all(dim=1)
    assert rows_equal and bool((increasing | decreasing).all())
    assert 16 <= int(decreasing.sum()) <= 48  # flipped (p = 0.5): 32 expected of 64


def test_grey_uses_luma_weights_and_zero_strength_jitter_is_identity():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert grey(rgb).item() == torch.tensor(0.299).item()
    x = torch.rand(4, 3, 5, 5)
    plain = ViewConfig(out_size=5, jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0)
    assert torch.allclose(colour_jitter(x, plain), x, atol=1e-6)


def test_the_batched_blur_and_hue_equal_torchvisions_per_image_ops():
    from torchvision.transforms import functional as TF

    from benchmarks.data.ssl_views import gaussian_blur, gaussian_kernel_size, hue_shift

    torch.manual_seed(0)
    x = torch.rand(3, 3, 40, 40)
    sigma, shift = torch.tensor([0.1, 0.8, 2.0]), torch.tensor([-0.1, 0.03, 0.5])
    k = gaussian_kernel_size(40)
    assert k == 5 and gaussian_kernel_size(224) == 23 and gaussian_kernel_size(8) == 3
    blurred, hued = gaussian_blur(x, sigma), hue_shift(x, shift)
    for i in range(3):
        assert torch.allclose(blurred[i], TF.gaussian_blur(x[i], [k, k], [sigma[i].item()] * 2), atol=1e-6)
        assert torch.allclose(hued[i], TF.adjust_hue(x[i], shift[i].item()), atol=1e-5)


def test_blur_and_hue_draw_nothing_when_off_and_change_the_view_when_on():
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(0)
    plain = augment(x, ViewConfig(out_size=24))
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(augment(x, ViewConfig(out_size=24, hue=0.0, blur_p=0.0)), plain)
    assert torch.equal(torch.rand(1), after_plain)  # the same number of draws: old trajectories are kept
    torch.manual_seed(0)
    full = augment(x, ViewConfig(out_size=24, jitter_p=1.0, hue=0.1, blur_p=1.0))
    assert full.shape == plain.shape and not torch.equal(full, plain) and 0 <= full.min() and full.max() <= 1
