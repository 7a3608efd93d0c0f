"""Named presets reproducing each official SEMA variant's defaults, and Keras 3's optimizer EMA.

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
    "keras"      Keras 3's `use_ema=True, ema_momentum=m, ema_overwrite_frequency=f` (keras/src/optimizers/
                 base_optimizer.py): trainable variables only (`buffers="ignore"`: BatchNorm statistics are neither
                 averaged nor overwritten), no warm-up, decay = ema_momentum (same convention: the weight on the
                 old average; Keras' default 0.99). The first averaging update copies (`first_update_copies=True`:
                 Keras forces the momentum to 0 at its first iteration, so after step 1 the average IS the weights
                 after that step); then `avg <- m * avg + (1 - m) * weights` after every optimizer step. With
                 `sema.SEMA` the switch is counted in optimizer steps (`switch_unit="step"`), so `switch_every=f`
                 overwrites the model with the average after steps f, 2f, 3f, ... (1-based, right after that step's
                 update), the average not reset and the optimizer state untouched, as Keras does. Keras'
                 `ema_overwrite_frequency=None` is `sema.EMA(model, preset="keras")`; `model.fit()` ends by writing
                 the average into the model: call `copy_to()` after the last step. Differences: Keras keeps the
                 average in the variables' dtype (sema: float32 unless `average_dtype`); sema averages frozen
                 (requires_grad=False) parameters too, which is a no-op here (the first update copies them and
                 they never move); Keras accepts momentum 0 and 1, sema a decay in (0, 1).

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
    first_update_copies: bool = False  # the first averaging update sets avg <- weights (decay 0 once)
    switch_unit: str = "epoch"  # SEMA: what switch_every / switch_start / switch_end count


PRESETS: dict[str, Preset] = {
    "paper": Preset(decay=0.999, buffers="average", warmup="linear"),
    "openmixup": Preset(decay=0.999, buffers="ignore", warmup="linear"),
    "mmdet": Preset(decay=0.9998, buffers="average", warmup="mmdet_linear"),
    "keras": Preset(decay=0.99, buffers="ignore", warmup="none", first_update_copies=True, switch_unit="step"),
}


def check_preset(preset: str) -> Preset:
    """The Preset named `preset`; ValueError listing the allowed names otherwise."""
    check_choice("preset", preset, tuple(PRESETS))
    return PRESETS[preset]


def resolve_preset(
    preset: str,
    decay: float | None,
    buffers: str | None,
    warmup: str | None,
    momentum: float | None = None,
    first_update_copies: bool | None = None,
) -> Preset:
    """The preset with the explicit arguments applied: None takes the preset's value. `momentum` (the mmdet
    convention, weight on the new weights) is only accepted with preset="mmdet" and means decay = 1 - momentum."""
    p = check_preset(preset)
    if momentum is not None:
        if preset != "mmdet":
            raise ValueError(
                f"momentum={momentum!r} is only accepted with preset='mmdet' (got preset={preset!r}); "
                "elsewhere pass decay = 1 - momentum"
            )
        if decay is not None:
            raise ValueError(f"pass either decay={decay!r} or momentum={momentum!r}, not both (decay = 1 - momentum)")
        decay = 1.0 - check_open_unit("momentum", momentum)
    if first_update_copies is not None and not isinstance(first_update_copies, bool):
        raise ValueError(f"first_update_copies={first_update_copies!r} must be True, False or None (the preset's)")
    return Preset(
        decay=p.decay if decay is None else decay,
        buffers=p.buffers if buffers is None else buffers,
        warmup=p.warmup if warmup is None else warmup,
        first_update_copies=p.first_update_copies if first_update_copies is None else first_update_copies,
        switch_unit=p.switch_unit,
    )
