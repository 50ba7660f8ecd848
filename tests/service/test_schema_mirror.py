"""The API's request schemas mirror the engine's own limits, so bad requests are refused (422) before a job
is queued. This test (which may import the engine; the API may not) keeps the two in step."""

from __future__ import annotations

import dataclasses
import typing

import annotated_types as at
import pytest

from service.schemas import audits, datasets, models

sbengine = pytest.importorskip("sbengine")

# Engine features the API does not expose (none at present); anything else the engine has and the API
# lacks, or the API has and the engine lacks, is drift.
TRAINING_LATER: set[str] = set()
CHECKS_LATER: set[str] = set()
# Losses that need target labels the service has no way to send.
LOSSES_NOT_OFFERED = {"targeted"}


def _literal_values(annotation) -> set:
    args = set()
    for arg in typing.get_args(annotation) or ():
        args |= _literal_values(arg) if typing.get_origin(arg) is not None else {arg}
    return args if typing.get_origin(annotation) is not None else {annotation}


def _bounds(field) -> dict:
    out = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(at, name.capitalize())):
                out[name] = getattr(meta, name)
    return out


def test_presets_and_block_types():
    from sbengine.data import PRESET_NAMES
    from sbengine.data.synthetic import BLOCK_TYPES, NOISE_MODES, SLAB_KS

    assert set(typing.get_args(datasets.PresetName)) == set(PRESET_NAMES)
    assert set(datasets.SYNTHETIC_PRESETS) | set(datasets.IMAGE_PRESETS) == set(PRESET_NAMES)
    block_types = {
        typing.get_args(m.model_fields["type"].annotation)[0]
        for m in typing.get_args(typing.get_args(datasets.Block)[0])
    }
    assert block_types == set(BLOCK_TYPES)
    assert set(typing.get_args(datasets.NoiseMode)) == set(NOISE_MODES)
    assert set(typing.get_args(datasets.SlabBlock.model_fields["k"].annotation)) == set(SLAB_KS)


def test_architectures_options_defaults_and_ranges():
    from sbengine.models import ARCHITECTURES

    schemas = {}
    for schema in typing.get_args(typing.get_args(models.Architecture)[0]):
        for name in typing.get_args(schema.model_fields["name"].annotation):
            schemas[name] = schema
    from sbengine.models.library import LIBRARIES

    assert set(LIBRARIES) == set(models.LIBRARIES)
    schemas = {name: schema for name, schema in schemas.items() if name not in LIBRARIES}
    assert set(schemas) == set(ARCHITECTURES)
    for name, arch in ARCHITECTURES.items():
        schema = schemas[name]
        fields = {k: f for k, f in schema.model_fields.items() if k != "name"}
        assert set(fields) == set(arch.options), name
        for key, option in arch.options.items():
            field = fields[key]
            assert field.default == option.default, (name, key)
            if option.choices:
                assert set(typing.get_args(field.annotation)) == set(option.choices), (name, key)
            bounds = _bounds(field)
            if option.low is not None:
                assert bounds.get("gt" if option.low_open else "ge") == option.low, (name, key, bounds)
            if option.high is not None:
                assert bounds.get("lt" if option.high_open else "le") == option.high, (name, key, bounds)


def test_training_config_fields_and_defaults():
    from sbengine.train import OPTIMIZERS, SELECTIONS, StopRule, TrainConfig

    engine_fields = {f.name for f in dataclasses.fields(TrainConfig)} - TRAINING_LATER
    assert set(models.TrainingConfig.model_fields) == engine_fields
    ours, theirs = models.TrainingConfig(), TrainConfig()
    for name in engine_fields - {"stop", "schedule"}:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.stop.model_dump() == dataclasses.asdict(theirs.stop)
    assert set(models.StopRule.model_fields) == {f.name for f in dataclasses.fields(StopRule)}
    assert models.StopRule().model_dump() == dataclasses.asdict(StopRule())
    assert set(typing.get_args(models.TrainingConfig.model_fields["optimizer"].annotation)) == set(OPTIMIZERS)
    assert set(typing.get_args(models.TrainingConfig.model_fields["select"].annotation)) == set(SELECTIONS)
    # The resolved config the API stores is accepted by the engine as is.
    TrainConfig.from_dict(models.TrainingConfig().model_dump())


def test_audit_checks():
    from sbengine.checks import CHECKS

    assert set(typing.get_args(audits.CheckName)) == set(audits.AUDIT_CHECKS)
    assert set(audits.AUDIT_CHECKS) <= set(CHECKS)
    assert set(CHECKS) - set(audits.AUDIT_CHECKS) <= CHECKS_LATER
    assert {name for name, check in CHECKS.items() if check.needs_members} == audits.NEEDS_ENSEMBLE


def _within(field, low=None, high=None) -> None:
    """The schema's range is the engine's, or narrower (a deployment cap on cost)."""
    bounds = _bounds(field)
    if low is not None:
        assert bounds.get("ge", bounds.get("gt")) is not None and bounds.get("ge", bounds.get("gt")) >= low
    if high is not None:
        assert bounds.get("le") is not None and bounds["le"] <= high, bounds


def test_audit_options_fields_defaults_and_ranges():
    from sbengine.attacks import LOSSES, MAX_RESTARTS, MAX_STEPS, NORMS
    from sbengine.checks import CHECKS
    from sbengine.metrics import DEPENDENCE_METHODS
    from sbengine.uap import MAX_EPOCHS, METHODS

    # Every check of the registry that takes options has its options model, with the same names and defaults.
    engine_defaults = {name: check.defaults() for name, check in CHECKS.items() if check.options}
    assert set(audits.OPTION_MODELS) == set(engine_defaults)
    assert set(audits.AuditOptions.model_fields) == set(engine_defaults)
    for check, defaults in engine_defaults.items():
        schema = audits.OPTION_MODELS[check]
        assert set(schema.model_fields) == set(defaults), check
        assert schema().model_dump() == defaults, check
    pgd, uap = audits.PGDOptions.model_fields, audits.UAPOptions.model_fields
    assert set(typing.get_args(audits.Norm)) == set(NORMS)
    assert set(typing.get_args(pgd["loss"].annotation)) == set(LOSSES) - LOSSES_NOT_OFFERED
    assert set(typing.get_args(uap["method"].annotation)) == set(METHODS)
    assert set(typing.get_args(audits.DependenceMethod)) == set(DEPENDENCE_METHODS)
    _within(pgd["steps"], 1, MAX_STEPS)
    _within(pgd["restarts"], 1, MAX_RESTARTS)
    _within(uap["epochs"], 1, MAX_EPOCHS)
    assert _bounds(pgd["rand_eps"]) == {"ge": 0}
    for field in (pgd["eps"], pgd["step_size"], uap["eps"], uap["step_size"]):
        assert _bounds(field) == {"gt": 0}


def test_audit_requests_the_api_accepts_run_in_the_engine():
    from sbengine.audit import check_options
    from sbengine.checks.pgd import pgd_config
    from sbengine.data import build_dataset

    request = audits.AuditCreate.model_validate(
        {"model_id": "mdl_x", "checks": ["pgd", "uap", "feature_dependence", "generalization"],
         "options": {"pgd": {"norm": "linf", "steps": 3}, "uap": {"method": "svd"}}}
    )  # fmt: skip
    options = request.resolved_options()
    assert set(options) == {"pgd", "uap", "feature_dependence"}
    merged = check_options(list(request.checks), options)
    assert {k: v for k, v in merged.items() if v} == options
    ds = build_dataset({"preset": "LMS-5", "n_train": 20, "n_val": 10, "n_test": 10})
    assert pgd_config(ds, merged["pgd"]).norm == "linf"


def test_adversarial_training_and_ensembles():
    from sbengine.attacks import LOSSES, MAX_RESTARTS, MAX_STEPS, NORMS, PGDConfig
    from sbengine.ensemble import MAX_ENSEMBLE_SIZE
    from sbengine.train import AdversarialTraining, TrainConfig

    assert set(models.PGDAttack.model_fields) == {f.name for f in dataclasses.fields(PGDConfig)}
    for f in dataclasses.fields(PGDConfig):
        if f.default is not dataclasses.MISSING:
            assert models.PGDAttack.model_fields[f.name].default == f.default, f.name
    fields = models.PGDAttack.model_fields
    assert set(typing.get_args(fields["norm"].annotation)) == set(NORMS)
    assert set(typing.get_args(fields["loss"].annotation)) == set(LOSSES) - LOSSES_NOT_OFFERED
    _within(fields["steps"], 1, MAX_STEPS)
    _within(fields["restarts"], 1, MAX_RESTARTS)
    assert set(models.AdversarialTraining.model_fields) == {
        f.name for f in dataclasses.fields(AdversarialTraining)
    }
    theirs = AdversarialTraining(attack={})
    ours = models.AdversarialTraining(attack={"eps": 0.3, "step_size": 0.1})
    for name in ("eval_attack", "mixed_precision", "eval_examples"):
        assert getattr(ours, name) == getattr(theirs, name), name
    _within(models.ModelCreate.model_fields["ensemble_size"], 1, MAX_ENSEMBLE_SIZE)
    # The resolved config the API stores, with adversarial training, is accepted by the engine as is.
    training = models.TrainingConfig(adversarial=ours).model_dump()
    config = TrainConfig.from_dict(training)
    assert config.adversarial.pgd_configs()[0].eps == 0.3


def test_dataset_requests_the_api_accepts_build_in_the_engine():
    from sbengine.data import build_dataset

    request = datasets.DatasetCreate.model_validate(
        {"blocks": [{"type": "linear"}, {"type": "noisy_slab", "k": 3, "noise": 0.2, "noise_mode": "flip"},
                    {"type": "noise", "count": 2}],
         "n_train": 20, "n_val": 0, "n_test": 10, "simple_blocks": [1]}
    )  # fmt: skip
    ds = build_dataset(request.engine_request())
    assert ds.input_shape == (4,) and ds.simple_blocks == [1]
    preset = datasets.DatasetCreate.model_validate(
        {"preset": "MS-(5,7)", "n_train": 20, "n_test": 10, "n_val": 5}
    )
    assert build_dataset(preset.engine_request()).describe()["sizes"] == {"train": 20, "val": 5, "test": 10}


def test_library_and_onnx_lists_match_the_engine():
    """GET /v1/architectures lists what the engine accepts: torchvision's classifiers, the options the
    engine refuses, the pinned timm, the checks that need gradients and the ONNX operators run in torch."""
    import timm

    from sbengine.checks import CHECKS
    from sbengine.models.library import REFUSED_OPTIONS, torchvision_models
    from sbengine.models.onnx_ops import SUPPORTED
    from service.schemas import architectures
    from service.schemas.audits import NEEDS_FIXED_BLOCKS, NEEDS_GRADIENTS

    assert torchvision_models() == architectures.TORCHVISION_MODELS
    assert models.LIBRARY_REFUSED_OPTIONS == REFUSED_OPTIONS
    assert timm.__version__ == architectures.TIMM_VERSION
    assert set(architectures.ONNX_TORCH_OPERATORS) == SUPPORTED
    assert {name for name, check in CHECKS.items() if check.needs_gradients} == NEEDS_GRADIENTS
    assert {name for name, check in CHECKS.items() if check.needs_fixed_blocks} == NEEDS_FIXED_BLOCKS
