"""The verdict's thresholds and codes exist three times: in the engine (sbengine.metrics), in the API's schema
(which may not import the engine) and in the CLI's gates (which may import neither). This test, which may
import all three, keeps them in step."""

from __future__ import annotations

import dataclasses
import typing

import annotated_types as at
import pytest

from sbclient.cli import gates
from service.schemas import audits

sbengine = pytest.importorskip("sbengine")


def _range(field) -> tuple[float | None, float | None]:
    low = next((m.ge for m in field.metadata if isinstance(m, at.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, at.Le)), None)
    return low, high


def test_thresholds_names_defaults_and_ranges():
    from sbengine.metrics import THRESHOLD_RANGES, VerdictThresholds

    engine = {f.name: f.default for f in dataclasses.fields(VerdictThresholds)}
    schema = audits.VerdictThresholds.model_fields
    assert set(schema) == set(engine) == set(THRESHOLD_RANGES)
    assert audits.VerdictThresholds().model_dump() == engine
    for name, (low, high) in THRESHOLD_RANGES.items():
        assert _range(schema[name]) == (low, high), name
    # What the API stores is what the engine accepts.
    assert VerdictThresholds.from_dict(audits.VerdictThresholds().model_dump()) == VerdictThresholds()


def test_verdict_codes_and_check_names():
    from sbengine.metrics import VERDICT_TEXT

    assert set(typing.get_args(audits.VerdictCode)) == set(VERDICT_TEXT) == set(gates.VERDICT_CODES)
    assert set(gates.CHECK_NAMES) == set(audits.AUDIT_CHECKS)


def test_the_gate_aliases_name_figures_of_the_randomization_check():
    import torch

    from sbengine.data import build_dataset
    from sbengine.metrics import randomization

    ds = build_dataset({"preset": "LMS-5", "n_train": 10, "n_val": 0, "n_test": 50, "seed": 0})
    result = randomization(torch.nn.Linear(50, 2), ds, repeats=1)
    for alias, path in gates.ALIASES.items():
        check, *keys = path.split(".")
        assert check == "randomization" and len(keys) == 1 and keys[0] in result, alias
