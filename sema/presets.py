"""Named presets reproducing each official SEMA variant's defaults.

The official code exists in three versions that disagree (see shared/research/paper.md, sections 1.3-1.6):

    "paper"      the project default and the behaviour the paper describes: parameters AND floating-point buffers
                 (BatchNorm running statistics) are averaged and switched, integer buffers copied; decay 0.999;
                 `warmup_steps` drives openmixup's linear warm-up (decay_0 = 0.9 * decay).
    "openmixup"  the classification/regression hooks (openmixup EMAHook / SwitchEMAHook, `full_params_ema=False`):
                 parameters only. BN statistics are neither averaged nor switched: the average is evaluated with
                 the model's current BN statistics (`buffers="ignore"`). Same decay and linear warm-up as "paper".
                 The released hook's inverted switch condition (`not every_n_epochs`, which never switches with
                 interval 1) is NOT reproduced: the cadence is the paper's, see `sema.SEMA`.
    "mmdet"      the detection hook (BaseSwitchEMAHook, `skip_buffers=False`): the whole state dict; floating
                 tensors averaged, integer ones copied. mmdet writes `ema = (1 - momentum) * ema + momentum * w`
                 with momentum = 2e-4 by default; here that is `decay = 1 - momentum` = 0.9998, and
                 `momentum=` is accepted with this preset and translated. `warmup_steps` drives the detection
                 hook's linear momentum warm-up ("mmdet_linear"; "mmdet_exp" is its exponential one).

Why "paper" is the default: it is what the paper describes, it keeps the averaged model self-consistent (its BN
statistics belong to its weights, which matters after a switch), and the switch then makes the model equal the
average exactly. Any argument passed explicitly overrides the preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from sema.schedules import check_choice, check_open_unit


@dataclass(frozen=True)
class Preset:
    decay: float  # default decay (weight on the old average)
    buffers: str  # default buffer policy: average | copy | ignore
    warmup: str  # the warm-up formula that `warmup_steps` drives (see sema.schedules)


PRESETS: dict[str, Preset] = {
    "paper": Preset(decay=0.999, buffers="average", warmup="linear"),
    "openmixup": Preset(decay=0.999, buffers="ignore", warmup="linear"),
    "mmdet": Preset(decay=0.9998, buffers="average", warmup="mmdet_linear"),
}


def resolve_preset(
    preset: str,
    decay: float | None,
    buffers: str | None,
    warmup: str | None,
    momentum: float | None = None,
) -> tuple[float, str, str]:
    """(decay, buffers, warmup): explicit arguments win; None takes the preset's value. `momentum` (the
    mmdet convention, weight on the new weights) is only accepted with preset="mmdet" and means decay = 1 - momentum."""
    check_choice("preset", preset, tuple(PRESETS))
    p = PRESETS[preset]
    if momentum is not None:
        if preset != "mmdet":
            raise ValueError(
                f"momentum={momentum!r} is only accepted with preset='mmdet' (got preset={preset!r}); "
                "elsewhere pass decay = 1 - momentum"
            )
        if decay is not None:
            raise ValueError(f"pass either decay={decay!r} or momentum={momentum!r}, not both (decay = 1 - momentum)")
        decay = 1.0 - check_open_unit("momentum", momentum)
    return (p.decay if decay is None else decay, p.buffers if buffers is None else buffers,
            p.warmup if warmup is None else warmup)
