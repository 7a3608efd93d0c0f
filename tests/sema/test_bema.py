"""BEMA: against a direct loop over the paper's formula (Python floats), hand-computed first steps, burn-in."""

import pytest
import torch

import sema
from sema_testing import BNNet, train_steps


def _set(lin, value):
    with torch.no_grad():
        lin.weight.fill_(value)


def _naive_bema(values, start, every, kappa=0.5, eta=0.2, rho=10.0, gamma=1.0, beta_min=0.0, initial=0.0):
    """mu after each update() call, straight from the formulas (one scalar weight, Python floats)."""
    out, theta0, ema, t = [], None, None, 0
    if start == 0:
        theta0 = ema = initial
    for n, theta in enumerate(values, start=1):
        if n == start:
            theta0 = ema = theta
        elif n > start and (n - start) % every == 0:
            t = n - start
            beta = max((rho + gamma * t) ** -kappa, beta_min)
            ema = (1 - beta) * ema + beta * theta
        if theta0 is None:
            out.append(theta)  # burn-in: the model's own weights
        else:
            out.append((rho + gamma * t) ** -eta * (theta - theta0) + ema)
    return out


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(burnin_steps=3, update_every=2),
    dict(ema_power=0.3, bias_power=0.5, lag=1.0, multiplier=2.0, beta_min=0.2, burnin_steps=1),
])
def test_matches_naive_formula_loop(kwargs):
    torch.manual_seed(0)
    values = torch.randn(30, dtype=torch.float64).cumsum(0).tolist()  # a drifting "trajectory"
    lin = torch.nn.Linear(1, 1, bias=False).double()
    _set(lin, 0.5)
    avg = sema.BEMA(lin, average_dtype=torch.float64, **kwargs)
    names = dict(ema_power="kappa", bias_power="eta", lag="rho", multiplier="gamma", beta_min="beta_min",
                 burnin_steps="start", update_every="every")
    naive_kwargs = {names[k]: v for k, v in kwargs.items()}
    naive_kwargs.setdefault("start", 0)
    naive_kwargs.setdefault("every", 1)
    expected = _naive_bema(values, initial=0.5, **naive_kwargs)
    for n, (theta, mu) in enumerate(zip(values, expected), start=1):
        _set(lin, theta)
        avg.update()
        assert avg.average.weight.item() == pytest.approx(mu, rel=1e-12, abs=1e-12), n


def test_hand_computed_first_step_with_defaults():
    lin = torch.nn.Linear(1, 1, bias=False).double()
    _set(lin, 1.0)  # theta_0 = EMA_0 = 1 (burnin_steps=0: the weights at binding)
    avg = sema.BEMA(lin, average_dtype=torch.float64)
    _set(lin, 3.0)
    avg.update()
    beta, alpha = 11 ** -0.5, 11 ** -0.2  # t = 1, rho = 10, gamma = 1
    ema = 1.0 + beta * (3.0 - 1.0)
    assert avg.beta(1) == beta and avg.alpha(1) == alpha
    assert avg.average.weight.item() == pytest.approx(alpha * (3.0 - 1.0) + ema, rel=1e-15)


def test_mu_tracks_the_model_between_ema_updates():
    """mu uses the model's current weights when read (the EMA part moves only on update steps)."""
    lin = torch.nn.Linear(1, 1, bias=False).double()
    _set(lin, 0.0)
    avg = sema.BEMA(lin, update_every=4, average_dtype=torch.float64)
    _set(lin, 2.0)
    avg.update()  # n = 1: not an EMA step; t = 0, EMA = 0
    assert avg.average.weight.item() == pytest.approx(10 ** -0.2 * 2.0, rel=1e-15)


def test_no_correction_and_no_ema_limits():
    lin = torch.nn.Linear(1, 1, bias=False).double()
    _set(lin, 0.0)
    avg = sema.BEMA(lin, ema_power=0.0, average_dtype=torch.float64)  # beta = 1: EMA = theta
    _set(lin, 2.0)
    avg.update()
    assert avg.average.weight.item() == pytest.approx(2.0 + 11 ** -0.2 * 2.0)


def test_whole_model_matches_torch_loop_with_bn_buffers():
    model = BNNet()
    avg = sema.BEMA(model, burnin_steps=2, update_every=2, buffers="average")
    start, every = 2, 2
    ref = {}

    def reference(i):
        n = i + 1
        state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
        if n == start:
            ref["theta0"] = {k: v.clone() for k, v in state.items()}
            ref["ema"] = {k: v.clone() for k, v in state.items()}
            ref["t"] = 0
        elif n > start and (n - start) % every == 0:
            t = ref["t"] = n - start
            beta = (10 + t) ** -0.5
            ref["ema"] = {k: torch.lerp(ref["ema"][k], v, beta) for k, v in state.items()}
        ref["state"] = state

    train_steps(model, avg, 9, after_step=reference)
    alpha = (10 + ref["t"]) ** -0.2
    got = avg.average.state_dict()
    for k, theta in ref["state"].items():
        if k.endswith("num_batches_tracked"):
            assert torch.equal(got[k], theta.long()), k  # integer buffers: copied from the model
            continue
        expected = alpha * (theta - ref["theta0"][k]) + ref["ema"][k]
        torch.testing.assert_close(got[k], expected, rtol=1e-5, atol=1e-6)


def test_default_keeps_the_models_batchnorm_statistics():
    model = BNNet()
    avg = sema.BEMA(model)
    train_steps(model, avg, 6)
    got = avg.average.state_dict()
    for name in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert torch.equal(got[name], model.state_dict()[name]), name
    with avg.swapped():
        assert torch.equal(model.bn.running_var, got["bn.running_var"])
    assert not torch.equal(got["fc1.weight"], model.fc1.weight)


def test_burn_in_returns_model_weights():
    model = BNNet()
    avg = sema.BEMA(model, burnin_steps=5)
    train_steps(model, avg, 3)
    assert not avg.started
    for k, v in model.state_dict().items():
        assert torch.equal(avg.average.state_dict()[k].to(v.dtype), v), k


@pytest.mark.parametrize("kwargs,message", [
    (dict(ema_power=-1.0), r"ema_power=-1.0 is outside the allowed range \[0.0, inf\)"),
    (dict(bias_power=float("inf")), r"bias_power=inf is outside"),
    (dict(lag=0.5), r"lag=0.5 is outside the allowed range \[1.0, inf\)"),
    (dict(multiplier=0), r"multiplier=0 is outside the allowed range \(0.0, inf\)"),
    (dict(beta_min=2.0), r"beta_min=2.0 is outside the allowed range \[0.0, 1.0\]"),
    (dict(burnin_steps=-3), r"burnin_steps=-3 must be an integer >= 0"),
    (dict(update_every=0), r"update_every=0 must be an integer >= 1"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sema.BEMA(torch.nn.Linear(1, 1), **kwargs)


# ---------------------------------------------------------------- parity with TRL's BEMACallback (preset="trl")
def _trl_bema(values, update_freq=400, update_after=0, ema_power=0.5, bias_power=0.2, lag=10, multiplier=1.0,
              min_ema_multiplier=0.0, initial=0.0):
    """TRL's BEMACallback (huggingface/trl, trl/trainer/callbacks.py: on_train_begin, on_step_end,
    _update_bema_weights), re-written here for one scalar weight: {global step: the running model's weight} at the
    steps where TRL updates it. `values[i]` is the weight after optimizer step i + 1."""
    theta0 = ema = initial  # on_train_begin: theta_0 and the EMA are the weights at train begin
    out = {}
    for step, theta in enumerate(values, start=1):  # state.global_step in on_step_end
        if step < update_after:
            continue
        if step == update_after:
            theta0 = ema = theta
        elif (step - update_after) % update_freq == 0:
            beta = max((lag + multiplier * step) ** -ema_power, min_ema_multiplier)
            alpha = (lag + multiplier * step) ** -bias_power
            ema = ema * (1 - beta) + theta * beta
            out[step] = ema + alpha * (theta - theta0)
    return out


@pytest.mark.parametrize("steps,kwargs,trl_kwargs", [
    (900, dict(), dict()),  # TRL's defaults: updates at steps 400 and 800
    (30, dict(update_every=2), dict(update_freq=2)),
    (30, dict(update_every=3, burnin_steps=4), dict(update_freq=3, update_after=4)),
    (30, dict(update_every=2, burnin_steps=3, ema_power=0.3, bias_power=0.5, lag=2.0, multiplier=0.5,
              beta_min=0.4), dict(update_freq=2, update_after=3, ema_power=0.3, bias_power=0.5, lag=2.0,
                                  multiplier=0.5, min_ema_multiplier=0.4)),
])
def test_trl_preset_matches_trls_callback_at_its_update_steps(steps, kwargs, trl_kwargs):
    torch.manual_seed(0)
    values = (torch.randn(steps, dtype=torch.float64) * 0.1).cumsum(0).tolist()
    lin = torch.nn.Linear(1, 1, bias=False).double()
    _set(lin, 0.5)
    avg = sema.BEMA(lin, preset="trl", average_dtype=torch.float64, **kwargs)
    expected = _trl_bema(values, initial=0.5, **trl_kwargs)
    assert expected
    seen = {}
    for n, theta in enumerate(values, start=1):
        _set(lin, theta)
        avg.update()
        if n in expected:
            seen[n] = avg.average.weight.item()
    assert seen.keys() == expected.keys()
    for n in expected:
        assert seen[n] == pytest.approx(expected[n], rel=1e-12, abs=1e-12), n


@pytest.mark.parametrize("kwargs,pinned", [
    # TRL's tests/test_callbacks.py, TestBEMACallback: 9 optimizer steps, `_update_bema_weights` patched; the
    # expected call arguments (the global steps t of beta_t and alpha_t) are the ones pinned there.
    (dict(update_every=2), [2, 4, 6, 8]),  # test_update_frequency_0: BEMACallback(update_freq=2)
    (dict(update_every=3), [3, 6, 9]),  # test_update_frequency_1: BEMACallback(update_freq=3)
    (dict(update_every=2, burnin_steps=3), [5, 7, 9]),  # test_update_frequency_2: update_freq=2, update_after=3
])
def test_trl_preset_updates_at_trls_pinned_steps(kwargs, pinned):
    avg = sema.BEMA(torch.nn.Linear(2, 2), preset="trl", **kwargs)
    calls = []
    beta = avg.beta
    avg.beta = lambda t: calls.append(t) or beta(t)  # beta_t is evaluated once per EMA update, at its t
    for _ in range(9):
        avg.update()
    assert calls == pinned


def test_presets_resolve_and_explicit_arguments_win():
    lin = torch.nn.Linear(2, 2)
    assert (sema.BEMA(lin).update_every, sema.BEMA(lin).t_origin) == (1, "burnin")
    trl = sema.BEMA(lin, preset="trl")
    assert (trl.update_every, trl.t_origin, trl.ema_power, trl.bias_power, trl.lag, trl.multiplier,
            trl.beta_min, trl.burnin_steps) == (400, "start", 0.5, 0.2, 10.0, 1.0, 0.0, 0)
    assert sema.BEMA(lin, preset="trl", update_every=7, t_origin="burnin").config()["update_every"] == 7
    assert sema.BEMA(lin, preset="trl", t_origin="burnin").t_origin == "burnin"
    with pytest.raises(ValueError, match=r"preset='authors' is not supported; allowed: 'sema', 'trl'"):
        sema.BEMA(lin, preset="authors")
    with pytest.raises(ValueError, match=r"t_origin='global' is not supported; allowed: 'burnin', 'start'"):
        sema.BEMA(lin, t_origin="global")


def test_the_two_clocks_differ_only_with_a_burn_in():
    """t = n - tau ("burnin") or n ("start"): the same averages without a burn-in, different ones with it."""
    def run(**kwargs):
        lin = torch.nn.Linear(1, 1, bias=False).double()
        _set(lin, 0.0)
        avg = sema.BEMA(lin, average_dtype=torch.float64, **kwargs)
        for n in range(1, 8):
            _set(lin, float(n * n))
            avg.update()
        return avg.average.weight.item()

    assert run(t_origin="burnin") == run(t_origin="start")
    assert run(t_origin="burnin", burnin_steps=2) != run(t_origin="start", burnin_steps=2)


def test_a_state_dict_saved_before_presets_loads():
    """Checkpoints written before `t_origin` / `preset` were in the configuration load into the default BEMA."""
    avg = sema.BEMA(BNNet())
    sd = avg.state_dict()
    sd["config"] = {k: v for k, v in sd["config"].items() if k not in ("t_origin", "preset")}
    sema.BEMA(BNNet()).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"t_origin: saved 'burnin', current 'start'"):
        sema.BEMA(BNNet(), preset="trl", update_every=1).load_state_dict(sd)
