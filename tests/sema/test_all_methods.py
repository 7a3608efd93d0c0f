"""Every method in `sema.METHODS` passes the method template (sema/testing.py), without an entry of its own:
it is built with `template_kwargs(cls)` (its Settings defaults, an epoch every 3 steps, decay 0.9).

Optional entries below: FAST_KWARGS adds arguments that make a method act within ~10 steps where its defaults
would not; BAD_KWARGS lists arguments it must reject (a method without an entry is checked with its Settings'
fields set to values no method accepts: -1 for an integer setting, NaN for a number).
"""

import pytest

import sema
import sema.testing
from sema.testing import (
    check_bad_arguments,
    check_bf16_model,
    check_copy_to,
    check_declared_passivity,
    check_no_host_sync,
    check_protocol,
    check_refused_states,
    check_reshaped_model,
    check_round_trip,
    check_swapped_restores,
    template_kwargs,
)

FAST_KWARGS = {
    "sema": dict(switch_every=2, switch_unit="step"),
    "swa": dict(start_steps=2),
    "lawa": dict(k=3, every=2, unit="step"),
    "bema": dict(burnin_steps=2),
    "power_ema": dict(gamma=2.0, sigma_rel=None),
    "lookahead": dict(k=3, alpha=0.5),
}

BAD_KWARGS = {
    "ema": [dict(decay=1.0), dict(update_every=0), dict(buffers="mean"), dict(preset="tf"),
            dict(first_update_copies=1)],
    "sema": [dict(switch_every=0), dict(switch_blend=0.0), dict(switch_unit="iter")],
    "swa": [dict(start_steps=-1), dict(update_every=0), dict(bn_update_batches=0)],
    "lawa": [dict(k=0), dict(every=0), dict(start=-1), dict(unit="iter"), dict(buffers="mean")],
    "bema": [dict(ema_power=-0.1), dict(bias_power=float("nan")), dict(lag=0.5), dict(multiplier=0.0),
             dict(beta_min=1.5), dict(burnin_steps=-1), dict(update_every=0), dict(t_origin="global"),
             dict(preset="authors")],
    "power_ema": [dict(gamma=-1.0), dict(sigma_rel=0.5), dict(sigma_rel=0.0), dict(gamma=1.0, sigma_rel=0.1),
                  dict(update_every=0)],
    "lookahead": [dict(k=0), dict(alpha=0.0), dict(alpha=1.5), dict(buffers="mean")],
}

CHECKS = [check_protocol, check_round_trip, check_swapped_restores, check_copy_to, check_bf16_model,
          check_no_host_sync, check_declared_passivity, check_refused_states, check_reshaped_model]


def _bad_values(cls: type) -> list[dict]:
    """A bad value for every numeric setting with a default: -1 for an integer (no method accepts a negative
    count), NaN for a float."""
    bad = []
    for key, value in template_kwargs(cls).items():
        if isinstance(value, int) and not isinstance(value, bool):
            bad.append({key: -1})
        elif isinstance(value, float):
            bad.append({key: float("nan")})
    return bad


def test_template_entries_name_registered_methods():
    assert set(FAST_KWARGS) <= set(sema.METHODS) and set(BAD_KWARGS) <= set(sema.METHODS)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(sema.METHODS))
def test_template(name, check):
    cls = sema.METHODS[name]
    kwargs = template_kwargs(cls, **FAST_KWARGS.get(name, {}))
    check(lambda model: cls(model, **kwargs))


@pytest.mark.parametrize("name", sorted(sema.METHODS))
def test_bad_arguments(name):
    cls = sema.METHODS[name]
    check_bad_arguments(cls, BAD_KWARGS.get(name) or _bad_values(cls))


# The template is not vacuous: a method that breaks a rule fails the matching check.
@pytest.mark.parametrize("name", sorted(sema.METHODS))
def test_every_method_rejects_the_fallback_bad_values(name):
    """The fallback a method without a BAD_KWARGS entry gets is rejected by every registered method."""
    cls = sema.METHODS[name]
    for kwargs in _bad_values(cls):
        with pytest.raises(ValueError):
            cls(sema.testing.BNNet(), **template_kwargs(cls, **kwargs))


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


class _TrustingEMA(sema.EMA):
    def load_state_dict(self, state, strict=True):
        self._plan.load_average_state = lambda average: None  # loads whatever it is given, NaN included
        super().load_state_dict(state, strict)


class _CarelessEMA(sema.EMA):
    def load_state_dict(self, state, strict=True):
        self._step = 3  # changes a counter before the state is checked
        super().load_state_dict(state, strict)


def test_template_catches_a_method_that_loads_a_non_finite_average():
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        sema.testing.check_refused_states(lambda model: _TrustingEMA(model, decay=0.9))


def test_template_catches_a_refused_state_that_changed_the_object():
    with pytest.raises(AssertionError, match="a refused state_dict changed the object"):
        sema.testing.check_refused_states(lambda model: _CarelessEMA(model, decay=0.9))


def test_template_catches_a_lossy_checkpoint():
    with pytest.raises(AssertionError, match="after resuming at step 4"):
        check_round_trip(lambda model: _ForgetfulEMA(model, decay=0.9, warmup_steps=20))


class _SneakyEMA(sema.EMA):
    def epoch_end(self):
        super().epoch_end()
        self.copy_to()  # writes the average into the model while declaring writes_model=False
        return False


def test_template_catches_a_method_that_writes_while_declaring_itself_passive():
    with pytest.raises(AssertionError, match="declares writes_model=False but changed the model"):
        check_declared_passivity(lambda model: _SneakyEMA(model, decay=0.9))


def test_every_method_declares_whether_it_writes_into_the_model():
    assert {name: cls.writes_model for name, cls in sema.METHODS.items()} == {
        "ema": False, "sema": True, "swa": False, "lawa": False, "bema": False, "power_ema": False,
        "lookahead": True}


def test_import_sema_exposes_every_submodule_the_docs_call():
    """docs/*.md call sema.<module>.<name>: each resolves after a plain `import sema` (optional-dependency
    integrations excepted: they are imported by name)."""
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    called = {m.group(1) for doc in docs.glob("*.md") for m in re.finditer(r"\bsema\.([a-z_]+)\.[a-zA-Z_]+",
                                                                              doc.read_text())}
    assert "bn" in called
    for module in sorted(called - {"integrations"}):
        assert hasattr(sema, module), f"sema.{module} is documented but not an attribute of the sema package"
