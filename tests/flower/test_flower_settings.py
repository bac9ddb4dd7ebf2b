"""The Flower run config builds the same MethodSpec; the renamed tolerance and local-reg-covar."""

from __future__ import annotations

import pytest

from fedgmm.flower.settings import DEFAULTS, RunSettings, SettingsError


def test_run_config_builds_the_spec() -> None:
    spec = RunSettings.from_run_config({**DEFAULTS, "fit-tol": 1e-4, "round-tol": 1e-5}).spec
    assert (spec.fit_tol, spec.round_tol, spec.local_reg_covar) == (1e-4, 1e-5, "auto")  # issue 9's default
    assert RunSettings.from_run_config({**DEFAULTS, "local-reg-covar": 0.0}).spec.local_reg_covar is None
    spec = RunSettings.from_run_config({**DEFAULTS, "reg-covar": 0.05, "local-reg-covar": 1e-3}).spec
    assert spec.local_settings().reg_covar == 1e-3 and spec.global_settings().reg_covar == 0.05
    with pytest.raises(SettingsError, match="'local-reg-covar' must be > 0, or 0"):
        RunSettings.from_run_config({**DEFAULTS, "local-reg-covar": -1.0})


def test_one_shot_keys_follow_the_spec() -> None:
    spec = RunSettings.from_run_config(DEFAULTS).spec
    assert (spec.n_init, spec.aggregation, spec.local_components) == (10, "sample", None)
    cfg = {**DEFAULTS, "aggregation": "reduce", "n-init": 5, "local-reg-covar": "heldout",
           "local-components-list": "2,2,20-30"}
    spec = RunSettings.from_run_config(cfg).spec
    assert (spec.aggregation, spec.n_init, spec.local_reg_covar) == ("reduce", 5, "heldout")
    run_on = RunSettings.from_run_config({**DEFAULTS, "server-tol": 1e-7, "server-max-iter": 0}).spec
    assert (run_on.server_tol, run_on.server_max_iter) == (1e-7, 0)
    assert (run_on.global_settings().server_tol, run_on.global_settings().server_max_iter) == (1e-7, 0)
    with pytest.raises(SettingsError, match="'server-max-iter'"):
        RunSettings.from_run_config({**DEFAULTS, "server-max-iter": -1})
    assert spec.local_settings().per_client == ((2, 2), (2, 2), (20, 30))
    with pytest.raises(SettingsError, match="not both"):
        RunSettings.from_run_config({**cfg, "local-components-min": 2, "local-components-max": 2})
    with pytest.raises(SettingsError, match="local-components-list"):
        RunSettings.from_run_config({**DEFAULTS, "local-components-list": "2,x"})


def test_tol_is_read_as_round_tol_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="set 'round-tol' instead"):
        spec = RunSettings.from_run_config({**DEFAULTS, "tol": 1e-7}).spec
    assert spec.round_tol == 1e-7 and spec.fit_tol == DEFAULTS["fit-tol"]


def test_max_rounds_zero_is_the_library_default_40_or_10_with_epsilon() -> None:
    fedem = {**DEFAULTS, "algorithm": "fedem"}
    assert DEFAULTS["max-rounds"] == 0
    assert RunSettings.from_run_config(fedem).spec.max_rounds == 40
    assert RunSettings.from_run_config({**fedem, "epsilon": 8.0, "clip-bound": 5.0}).spec.max_rounds == 10
    assert RunSettings.from_run_config({**fedem, "epsilon": 8.0, "clip-bound": 5.0, "max-rounds": 3}).spec.max_rounds == 3
    with pytest.raises(SettingsError, match="'max-rounds' must be >= 0"):
        RunSettings.from_run_config({**fedem, "max-rounds": -1})
