"""Every bad argument raises ValueError naming the argument, the value and what is allowed."""

import pytest
import torch

import sema
from sema_testing import BNNet

BAD = [
    (sema.EMA, dict(decay=1.0), r"decay=1.0 is outside the allowed range \(0, 1\)"),
    (sema.EMA, dict(decay=0.0), r"decay=0.0 is outside the allowed range \(0, 1\)"),
    (sema.EMA, dict(decay=-0.5), r"decay=-0.5 is outside"),
    (sema.EMA, dict(decay=float("nan")), r"decay=nan is outside"),
    (sema.EMA, dict(update_every=0), r"update_every=0 must be an integer >= 1"),
    (sema.EMA, dict(warmup_steps=-1), r"warmup_steps=-1 must be an integer >= 0"),
    (sema.EMA, dict(warmup="cosine"), r"warmup='cosine' is not supported; allowed: 'none', 'linear', 'exp', 'power'"),
    (sema.EMA, dict(warmup_ratio=0.0), r"warmup_ratio=0.0 is outside the allowed range \(0, 1\]"),
    (sema.EMA, dict(buffers="mean"), r"buffers='mean' is not supported; allowed: 'average', 'copy', 'ignore'"),
    (sema.EMA, dict(preset="timm"), r"preset='timm' is not supported; allowed: 'paper', 'openmixup', 'mmdet'"),
    (sema.EMA, dict(momentum=2e-4), r"momentum=0.0002 is only accepted with preset='mmdet'"),
    (sema.EMA, dict(preset="mmdet", momentum=2e-4, decay=0.9), r"pass either decay=0.9 or momentum=0.0002"),
    (sema.EMA, dict(average_dtype="int8"), r"average_dtype='int8' is not a floating-point torch dtype"),
    (sema.SEMA, dict(switch_every=0), r"switch_every=0 must be an integer >= 1"),
    (sema.SEMA, dict(switch_start=-1), r"switch_start=-1 must be an integer >= 0"),
    (sema.SEMA, dict(switch_unit="iter"), r"switch_unit='iter' is not supported; allowed: 'epoch', 'step'"),
    (sema.SEMA, dict(switch_end=-2), r"switch_end=-2 must be an integer >= 0"),
    (sema.SEMA, dict(switch_blend=0.0), r"switch_blend=0.0 is outside the allowed range \(0, 1\]"),
    (sema.SEMA, dict(switch_blend=1.5), r"switch_blend=1.5 is outside the allowed range \(0, 1\]"),
    (sema.SWA, dict(start_step=-1), r"start_step=-1 must be an integer >= 0"),
    (sema.SWA, dict(update_every=0), r"update_every=0 must be an integer >= 1"),
    (sema.SWA, dict(buffers="all"), r"buffers='all' is not supported"),
]


@pytest.mark.parametrize("cls,kwargs,message", BAD)
def test_bad_argument(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(BNNet(), **kwargs)


@pytest.mark.parametrize("cls", [sema.EMA, sema.SEMA, sema.SWA])
def test_model_without_parameters(cls):
    with pytest.raises(ValueError, match=r"model=ReLU has no parameters"):
        cls(torch.nn.ReLU())


def test_swapped_cannot_nest():
    avg = sema.EMA(BNNet())
    with avg.swapped():
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with avg.swapped():
                pass
