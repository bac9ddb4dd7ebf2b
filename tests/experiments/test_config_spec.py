"""A study's [model] table builds the MethodSpec: its fields are the keys, old names still read with a warning."""

from __future__ import annotations

import dataclasses

import pytest

from fedgmm.experiments.config import ConfigError, parse_config
from fedgmm.experiments.study import cell_key, method_variants
from fedgmm.federated.spec import MethodSpec


def config(**model: object):  # type: ignore[no-untyped-def]
    return parse_config({"name": "x", "datasets": ["blobs"], "model": dict(model)})


def test_model_keys_are_the_spec_fields() -> None:
    cfg = config(n_components=3, reg_covar=0.05, local_reg_covar=0.001, fit_tol=1e-4, round_tol=1e-5, n_init=2)
    (variant,) = method_variants(cfg, "fedgengmm")
    # None resolves to the default local K, 4 × n_components (issue 9; was 2 ×).
    assert variant.spec == MethodSpec(
        "fedgengmm", n_components=3, local_components=12, reg_covar=0.05, local_reg_covar=0.001,
        fit_tol=1e-4, round_tol=1e-5, n_init=2,
    )  # fmt: skip
    assert variant.spec.local_settings().reg_covar == 0.001 and variant.spec.global_settings().reg_covar == 0.05


def test_old_tolerance_keys_warn_and_map_to_the_new_names() -> None:
    with pytest.warns(FutureWarning) as record:
        old = config(em_tol=1e-5, tol=1e-4)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2 and "'em_tol' is deprecated" in messages[0] and "'tol' is deprecated" in messages[1]
    assert old.model.spec.round_tol == 1e-5 and old.model.spec.fit_tol == 1e-4
    assert old == config(round_tol=1e-5, fit_tol=1e-4)
    with pytest.raises(ConfigError, match="both 'tol' and its new name 'fit_tol'"):
        config(tol=1e-4, fit_tol=1e-4)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"local_reg_covar": "small"}, "local_reg_covar = 'small' has the wrong type; expected float"),
        ({"local_reg_covar": -1.0}, "local_reg_covar must be a number >= 0"),
        ({"round_tool": 1e-3}, "Did you mean 'round_tol'"),
    ],
)
def test_bad_model_values_name_the_key(model: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config(**model)


def test_run_keys_do_not_move_with_the_renames() -> None:
    """Run keys name the tolerances as the first results files did, so cached rows still match."""
    cfg = config(round_tol=1e-4)
    (variant,) = method_variants(cfg, "fedem")
    key = cell_key(cfg, ("blobs", 1.0, 0.0, 0), variant)
    trial = dataclasses.replace(variant, spec=dataclasses.replace(variant.spec, local_reg_covar=0.01))
    assert cell_key(cfg, ("blobs", 1.0, 0.0, 0), trial) != key
    assert cell_key(cfg, ("blobs", 1.0, 0.0, 0), dataclasses.replace(variant)) == key
