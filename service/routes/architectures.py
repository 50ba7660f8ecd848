"""GET /v1/architectures: every architecture ``POST /v1/models`` and ``POST /v1/models/uploads`` accept,
with each option's JSON schema, read off the request schemas themselves so the list cannot drift from
what the API validates."""

from __future__ import annotations

import typing
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from service.auth import CurrentPrincipal
from service.routes.common import PROBLEM_RESPONSES, model_response
from service.schemas import models
from service.schemas.architectures import (
    ONNX_TORCH_OPERATORS,
    TIMM_VERSION,
    TORCHVISION_MODELS,
    TORCHVISION_VERSION,
    ArchitectureInfo,
    ArchitectureList,
)

router = APIRouter(prefix="/v1/architectures", tags=["models"], responses=PROBLEM_RESPONSES)

_INPUTS = {"fcn": "vector or image (flattened)", "cnn1d": "vector", "gru": "vector", "lstm": "vector"}


def _options(schema: type[BaseModel]) -> dict[str, Any]:
    properties = dict(schema.model_json_schema().get("properties", {}))
    properties.pop("name", None)
    return properties


def _summary(schema: type[BaseModel]) -> str:
    return " ".join((schema.__doc__ or "").split()) or schema.__name__


def _listing() -> ArchitectureList:
    data = []
    schemas = typing.get_args(typing.get_args(models.Architecture)[0])
    for schema in schemas:
        for name in typing.get_args(schema.model_fields["name"].annotation):
            library = schema is models.LibraryArchitecture
            options = _options(schema)
            if library:
                options["<keyword>"] = {
                    "type": ["number", "string", "boolean", "null"],
                    "description": "any keyword option of the library's builder except "
                    + ", ".join(sorted(models.LIBRARY_REFUSED_OPTIONS)),
                }
            data.append(
                ArchitectureInfo(
                    name=name,
                    summary=_summary(schema),
                    input="image" if library or name in models.VISION_ARCHITECTURES else _INPUTS[name],
                    trainable=True,
                    options=options,
                    models=list(TORCHVISION_MODELS) if name == "torchvision" else None,
                    notes=(
                        f"torchvision {TORCHVISION_VERSION}: "
                        "torchvision.models.get_model(model, weights=None)"
                        if name == "torchvision"
                        else f"timm {TIMM_VERSION}: any name of timm.list_models(); "
                        "timm.create_model(model, pretrained=False)"
                        if name == "timm"
                        else None
                    ),
                )
            )
    data.append(
        ArchitectureInfo(
            name="onnx",
            summary="An ONNX graph from any framework, uploaded without an architecture; input shape and "
            "classes come from the graph (or the form). Runs in torch (every check) when every operator "
            "is in `models`, else in onnxruntime (forward only: no pgd or uap).",
            input="any",
            trainable=False,
            options={},
            models=list(ONNX_TORCH_OPERATORS),
            notes="`models` lists the ONNX operators the engine runs in torch",
        )
    )
    return ArchitectureList(data=data)


@router.get(
    "",
    response_model=ArchitectureList,
    summary="The architectures models may have, with their options",
    operation_id="listArchitectures",
)
def list_architectures(principal: CurrentPrincipal) -> Response:
    return model_response(_listing())
