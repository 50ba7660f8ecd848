"""What the API itself checks of an upload (it parses nothing of the file): the client's file name, and the
decoding of form fields."""

from __future__ import annotations

import pytest

from service.schemas.uploads import FormError, decode_form
from service.uploads.rejected import Rejected, check_filename


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "dir/model.pt",
        "..\\x.pt",
        "C:x.pt",
        "..",
        "a\x00b",
        "a\nb",
        "x" * 300,
    ],
)
def test_path_like_file_names_are_refused(name):
    with pytest.raises(Rejected, match="plain file name"):
        check_filename(name)


@pytest.mark.parametrize("name", [None, "", "model.safetensors", "my model (v2).pt", "модель.pt"])
def test_plain_file_names_pass(name):
    check_filename(name)


def test_form_fields_are_decoded():
    assert decode_form({"input_shape": "3,32,32", "num_classes": "2", "name": "m", "dataset_id": " "}) == {
        "input_shape": [3, 32, 32], "num_classes": 2, "name": "m"
    }  # fmt: skip
    assert decode_form({"input_shape": "[50]", "architecture": '{"name": "fcn"}'})["architecture"] == {
        "name": "fcn"
    }
    with pytest.raises(FormError) as caught:
        decode_form({"blocks": "[{"})
    assert caught.value.field == "blocks"
    with pytest.raises(FormError):
        decode_form({"num_classes": "two"})
