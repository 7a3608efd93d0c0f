"""Every method in `sema.METHODS` passes the method template (tests/sema/method_template.py).

A new method adds one entry to each dict below: keyword arguments that make it act within ~10 steps (so the
checks see snapshots, switches, syncs), and arguments it must reject with ValueError.
"""

import pytest

import sema
from method_template import (
    check_bad_arguments,
    check_bf16_model,
    check_copy_to,
    check_no_host_sync,
    check_protocol,
    check_round_trip,
    check_swapped_restores,
)

FAST_KWARGS = {
    "ema": dict(decay=0.9),
    "sema": dict(decay=0.9, switch_every=2, switch_unit="step"),
    "swa": dict(start_step=2),
    "lawa": dict(k=3, every=2, unit="step"),
    "bema": dict(burnin_steps=2),
    "power_ema": dict(gamma=2.0),
    "lookahead": dict(k=3, alpha=0.5),
}

BAD_KWARGS = {
    "ema": [dict(decay=1.0), dict(update_every=0), dict(buffers="mean")],
    "sema": [dict(switch_every=0), dict(switch_blend=0.0), dict(switch_unit="iter")],
    "swa": [dict(start_step=-1), dict(update_every=0)],
    "lawa": [dict(k=0), dict(every=0), dict(start=-1), dict(unit="iter"), dict(buffers="mean")],
    "bema": [dict(ema_power=-0.1), dict(bias_power=float("nan")), dict(lag=0.5), dict(multiplier=0.0),
             dict(beta_min=1.5), dict(burnin_steps=-1), dict(update_every=0)],
    "power_ema": [dict(gamma=-1.0), dict(sigma_rel=0.5), dict(sigma_rel=0.0), dict(gamma=1.0, sigma_rel=0.1),
                  dict(update_every=0)],
    "lookahead": [dict(k=0), dict(alpha=0.0), dict(alpha=1.5), dict(buffers="mean")],
}

CHECKS = [check_protocol, check_round_trip, check_swapped_restores, check_copy_to, check_bf16_model,
          check_no_host_sync]


def test_every_method_has_template_entries():
    assert set(FAST_KWARGS) == set(sema.METHODS), "add FAST_KWARGS for every sema.METHODS entry"
    assert set(BAD_KWARGS) == set(sema.METHODS), "add BAD_KWARGS for every sema.METHODS entry"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(sema.METHODS))
def test_template(name, check):
    cls = sema.METHODS[name]
    check(lambda model: cls(model, **FAST_KWARGS[name]))


@pytest.mark.parametrize("name", sorted(sema.METHODS))
def test_bad_arguments(name):
    check_bad_arguments(sema.METHODS[name], BAD_KWARGS[name])


# The template is not vacuous: a method that breaks a rule fails the matching check.
class _SyncingEMA(sema.EMA):
    def update(self):
        super().update()
        if self._plan.groups[0].average[0].sum() > 1e9:  # bool(tensor): a host read of a device value
            pass


class _ForgetfulEMA(sema.EMA):
    def load_state_dict(self, state, strict=True):
        super().load_state_dict(state, strict)
        self._step = 0  # loses the step counter: the warm-up restarts after a resume


def test_template_catches_a_host_sync():
    with pytest.raises(AssertionError, match=r"called \['__bool__'\]"):
        check_no_host_sync(lambda model: _SyncingEMA(model, decay=0.9))


def test_template_catches_a_lossy_checkpoint():
    with pytest.raises(AssertionError, match="after resuming at step 4"):
        check_round_trip(lambda model: _ForgetfulEMA(model, decay=0.9, warmup_steps=20))
