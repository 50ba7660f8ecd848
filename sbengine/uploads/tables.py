"""Uploaded tables (CSV or Parquet, read with pyarrow) as datasets whose blocks are named columns.

A practitioner's shortcut in tabular data is a column (a hospital or site identifier, a timestamp), so a
table's feature blocks are declared by column name: ``{"name": "site", "columns": ["hospital_id"]}``.
Numeric and boolean columns are one feature each; a column declared ``categorical`` is one-hot encoded
(categories sorted, one feature ``column=value`` each) and its block covers all of its features. Anything
else is refused naming the column: a missing value (null, empty, NaN), a text column without a declared
encoding, a nested type. Columns no block names form one more block, ``other columns``, so that declaring S
alone is enough. The label column holds integer classes ``0..K-1`` or class names (sorted into ``0..K-1``;
the names are kept); an optional split column holds ``train``/``val``/``test`` or ``0``/``1``/``2``.

The result is an ordinary float32 dataset whose ``feature_names`` are the columns (after encoding), so
results and reports name columns rather than coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sbengine.uploads.formats import Rejected
from sbengine.uploads.messages import listed, one_line

SPLITS = ("train", "val", "test")
OTHER_COLUMNS = "other columns"
MAX_CATEGORIES = 1000


def _read(path: Path, fmt: str) -> Any:
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pacsv

        return pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            read_options=pacsv.ReadOptions(block_size=1 << 22),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        what = "a Parquet file" if fmt == "parquet" else "a CSV table (UTF-8, a header row, comma-separated)"
        raise Rejected(f"the file is not readable as {what}: {one_line(exc)[:300]}") from None


def _values(table: Any, name: str, *, field: str) -> Any:
    """A column as a numpy array, refused (naming the column and the first row) if any value is missing."""
    import numpy as np
    import pyarrow.compute as pc

    column = table.column(name)
    if column.null_count:
        row = int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0])
        raise Rejected(
            f"column {name[:100]!r} has a missing value (first in data row {row + 1})", field=field
        )
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise Rejected(
            f"column {name[:100]!r} has a missing or infinite value (NaN/inf, first in data row {row + 1})",
            field=field,
        )
    return values


def _labels(values: Any, name: str) -> tuple[Any, list[str] | None]:
    import numpy as np

    if values.dtype.kind in "iu":
        return values.astype(np.int64), None
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        return values.astype(np.int64), None
    if values.dtype.kind in "OUSb":
        names = sorted({str(v) for v in values.tolist()})
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[str(v)] for v in values.tolist()], dtype=np.int64), names
    raise Rejected(
        f"the label column {name[:100]!r} must hold integer classes or class names, not {values.dtype}",
        field="body.label",
    )


def _split_codes(values: Any, name: str) -> Any:
    import numpy as np

    codes = np.full(values.shape, -1, dtype=np.int64)
    if values.dtype.kind in "iu":
        codes = values.astype(np.int64)
    else:
        for i, split in enumerate(SPLITS):
            codes[np.array([str(v) for v in values.tolist()]) == split] = i
    bad = np.flatnonzero((codes < 0) | (codes > 2))
    if bad.size:
        raise Rejected(
            f"the split column {name[:100]!r} must hold train/val/test or 0/1/2 (data row {bad[0] + 1} has "
            f"{str(values[bad[0]])[:40]!r})",
            field="body.split_column",
        )
    return codes


def read_table(request: dict[str, Any], path: Path, fmt: str) -> dict[str, Any]:
    """Everything ``check_dataset`` needs to build the dataset: splits, feature names, resolved blocks."""
    import numpy as np

    from sbengine.data.dataset import FeatureBlock

    label = request.get("label")
    if not label:
        raise Rejected(
            f"a table ({fmt}) needs the 'label' form field: the name of its label column", field="body.label"
        )
    table = _read(path, fmt)
    names = list(table.column_names)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise Rejected(f"the table has two columns named {dup[:100]!r}")
    split_column = request.get("split_column")
    categorical = list(request.get("categorical") or [])
    for wanted, field in (
        ([label], "body.label"),
        ([split_column] if split_column else [], "body.split_column"),
        (categorical, "body.categorical"),
    ):
        for column in wanted:
            if column not in names:
                raise Rejected(
                    f"the table has no column {column[:100]!r} (its columns: {listed(names)})", field=field
                )
    if table.num_rows == 0:
        raise Rejected("the table has no rows")
    y, class_names = _labels(_values(table, label, field="body.label"), label)
    codes = (
        _split_codes(_values(table, split_column, field="body.split_column"), split_column)
        if split_column
        else np.full(table.num_rows, 2, dtype=np.int64)
    )
    features = [n for n in names if n not in (label, split_column)]
    if not features:
        raise Rejected("the table has no feature columns besides the label (and split) column")
    columns: list[Any] = []
    feature_names: list[str] = []
    spans: dict[str, list[int]] = {}
    encodings: dict[str, Any] = {}
    max_features = int(request.get("max_input_size") or 1 << 24)
    for name in features:
        field = "body.categorical" if name in categorical else "body.file"
        values = _values(table, name, field=field)
        start = len(feature_names)
        if name in categorical:
            keys = [str(v) for v in values.tolist()]
            categories = sorted(set(keys))
            if len(categories) > MAX_CATEGORIES:
                raise Rejected(
                    f"categorical column {name[:100]!r} has {len(categories)} distinct values; at most "
                    f"{MAX_CATEGORIES} are one-hot encoded",
                    field="body.categorical",
                )
            index = {c: i for i, c in enumerate(categories)}
            codes_c = np.array([index[k] for k in keys], dtype=np.int64)
            onehot = np.zeros((len(keys), len(categories)), dtype=np.float32)
            onehot[np.arange(len(keys)), codes_c] = 1.0
            columns.append(onehot)
            feature_names.extend(f"{name}={c}" for c in categories)
            encodings[name] = {"encoding": "one-hot", "categories": categories}
        elif values.dtype.kind in "iufb":
            columns.append(values.astype(np.float32)[:, None])
            feature_names.append(name)
        else:
            example = str(values[0])[:40]
            raise Rejected(
                f"column {name[:100]!r} is not numeric (e.g. {example!r}): declare it categorical "
                "(one-hot encoded; form field 'categorical') or leave it out of the table",
                field="body.file",
                column=name,
            )
        if len(feature_names) > max_features:
            raise Rejected(
                f"the table encodes to more than {max_features} features (SBAUDIT_MAX_INPUT_SIZE)",
                field="body.categorical" if categorical else "body.file",
            )
        spans[name] = list(range(start, len(feature_names)))
    x = np.concatenate(columns, axis=1)
    if not np.isfinite(x).all():
        raise Rejected("the table holds values too large for float32")
    blocks = []
    used: dict[str, str] = {}
    for i, block in enumerate(request["blocks"]):
        field = f"body.blocks.{i}"
        if block.get("columns") is None:
            raise Rejected('a table\'s blocks name columns: {"name": ..., "columns": [...]}', field=field)
        indices: list[int] = []
        for column in block["columns"]:
            if column in (label, split_column):
                raise Rejected(f"{column[:100]!r} is the {'label' if column == label else 'split'} column, "
                               "not a feature", field=f"{field}.columns")  # fmt: skip
            if column not in spans:
                raise Rejected(
                    f"the table has no column {column[:100]!r} (its feature columns: {listed(features)})",
                    field=f"{field}.columns",
                )
            if column in used:
                raise Rejected(
                    f"column {column[:100]!r} is already in block {used[column][:100]!r}",
                    field=f"{field}.columns",
                )
            used[column] = block["name"]
            indices.extend(spans[column])
        blocks.append(
            FeatureBlock(
                name=block["name"],
                kind="columns",
                indices=tuple(indices),
                params={"columns": block["columns"]},
            )
        )
    rest = [n for n in features if n not in used]
    if rest:
        if any(b.name == OTHER_COLUMNS for b in blocks):
            raise Rejected(f"the block name {OTHER_COLUMNS!r} is taken by the columns no block names")
        blocks.append(
            FeatureBlock(
                name=OTHER_COLUMNS,
                kind="columns",
                indices=tuple(i for n in rest for i in spans[n]),
                params={"columns": rest},
            )
        )
    splits = {name: (x[codes == i], y[codes == i]) for i, name in enumerate(SPLITS) if (codes == i).any()}
    return {
        "splits": splits,
        "input_shape": (x.shape[1],),
        "blocks": blocks,
        "feature_names": feature_names,
        "spec": {
            "table": {
                "label": label,
                "split_column": split_column,
                "columns": features,
                "encodings": encodings,
                **({"classes": class_names} if class_names else {}),
            }
        },
    }
