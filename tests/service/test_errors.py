"""Field paths in validation problems name what the client sent."""

from __future__ import annotations

from service.errors import field_path


def test_union_tags_are_dropped_from_field_paths():
    body = {"blocks": [{"type": "linear"}, {"type": "noisy_slab", "noise": 2}]}
    assert field_path(("body", "blocks", 1, "noisy_slab", "noise"), body) == "body.blocks.1.noise"
    assert field_path(("body", "blocks", 0, "linear", "margin"), body) == "body.blocks.0.margin"


def test_a_field_named_like_a_tag_is_kept():
    body = {"blocks": [{"type": "noise", "noise": 0.5}]}
    assert field_path(("body", "blocks", 0, "noise", "noise"), body) == "body.blocks.0.noise"


def test_architecture_name_tag():
    body = {"architecture": {"name": "fcn", "width": -1}}
    assert field_path(("body", "architecture", "fcn", "width"), body) == "body.architecture.width"
    assert field_path(("query", "limit"), None) == "query.limit"
