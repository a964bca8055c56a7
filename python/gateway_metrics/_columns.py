"""Columns and tables of ``record_batch`` that the core does not read as they
are: pandas Series (numpy-backed, nullable, categorical, Arrow-backed), numpy
text and object arrays, and whole tables (pandas DataFrames, and anything with
Arrow's PyCapsule interface, such as pyarrow Tables and Polars DataFrames).

Nothing here imports pandas, numpy, pyarrow or Polars: an object is asked
for its dtype and converted through its own methods. numpy is imported only
to take the distinct values of a numpy text array, which is numpy's already.
"""

from __future__ import annotations

from typing import Any

from . import _core

#: ``record_request``'s keywords a table's columns can give: the ones with one
#: value per request (tool calls, extra labels and exemplars are keywords).
TABLE_FIELDS: tuple[str, ...] = tuple(
    name for name, *_ in _core.REQUEST_FIELDS if name not in {"tool_calls", "labels", "exemplar"}
)
#: The keywords a table must give, unless passed as keywords.
REQUIRED_FIELDS: tuple[str, ...] = tuple(
    name for name, _, default, *_ in _core.REQUEST_FIELDS if default is None
)


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] == "pandas"


def column(value: Any, label: bool) -> tuple[Any, Any, Any] | None:
    """``value`` (a pandas Series or array, or a numpy array the core cannot read
    as it is) as ``(values, null mask, categories)``: values the core reads (a
    list, a numeric numpy array, Arrow data), a numpy array of bools where rows
    are null (or None), and for coded text the categories the values index (or
    None). None when ``value`` is neither."""
    if _is_pandas(value) and hasattr(value, "dtype") and hasattr(value, "to_numpy"):
        return _pandas(value, label)
    if type(value).__module__ == "numpy" and hasattr(value, "dtype"):
        return _numpy_array(value, label)
    return None


def _pandas(value: Any, label: bool) -> tuple[Any, Any, Any]:
    """A pandas Series, or one of pandas' arrays (what ``pd.array`` makes)."""
    dtype = value.dtype
    array = getattr(value, "array", value)
    if getattr(dtype, "name", None) == "category":
        if label:
            return array.codes, None, array.categories.tolist()
        return value.to_numpy(dtype="float64", na_value=float("nan")), None, None
    if type(dtype).__module__.partition(".")[0] == "numpy":
        values = value.to_numpy()
        converted = _numpy_array(values, label)
        return converted if converted is not None else (values, None, None)
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if numpy_dtype is not None and getattr(dtype, "kind", "") in "iuf":
        # A nullable integer or float (pandas' masked arrays): the values with
        # nulls as 0, and where the nulls are.
        return array.to_numpy(dtype=numpy_dtype, na_value=0), array.isna(), None
    if hasattr(array, "__arrow_array__") and "pyarrow" in str(getattr(dtype, "storage", "pyarrow")):
        # Arrow-backed (ArrowDtype, or pandas' pyarrow strings): its own Arrow data.
        return array.__arrow_array__(), None, None
    # Other extension dtypes (Python-backed strings): one object per row.
    return value.to_numpy(dtype=object, na_value=None).tolist(), None, None


def _numpy_array(array: Any, label: bool) -> tuple[Any, Any, Any] | None:
    kind = array.dtype.kind
    if kind == "O":
        return array.tolist(), None, None
    if label and kind in "US":
        import numpy

        distinct, codes = numpy.unique(array.reshape(-1), return_inverse=True)
        return codes.reshape(-1), None, distinct.tolist()
    return None


def record_table(
    metrics: Any, table: Any, *extra: Any, columns: dict[str, str] | None = None, **keywords: Any
) -> int:
    """``metrics.record_batch(table, columns=..., **keywords)``: each field not
    passed as a keyword is the table's column of that name (or of the name
    ``columns`` maps it to); other columns are ignored."""
    if extra:
        raise TypeError(
            f"record_batch() takes one positional argument (a table), {len(extra) + 1} given"
        )
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - set(TABLE_FIELDS))
    if unknown:
        raise ValueError(
            f"columns maps {unknown[0]!r}, which is not a column record_batch reads "
            f"(those are: {', '.join(TABLE_FIELDS)})"
        )
    for ours, theirs in mapping.items():
        if not isinstance(theirs, str):
            raise TypeError(
                f"columns[{ours!r}] must be a column name (str), not {type(theirs).__name__}"
            )
    available = _table_columns(table)
    arguments = dict(keywords)
    for field in TABLE_FIELDS:
        if field in keywords:
            continue
        name = mapping.get(field, field)
        if name in available:
            arguments[field] = available[name]
        elif field in mapping:
            raise ValueError(
                f"columns maps {field!r} to {name!r}, which the table does not have "
                f"(its columns: {', '.join(map(str, available)) or 'none'})"
            )
    missing = [field for field in REQUIRED_FIELDS if field not in arguments]
    if missing:
        raise TypeError(
            f"record_batch(): the table has no column {missing[0]!r} and it was not passed "
            f"as a keyword; map a column to it with columns={{{missing[0]!r}: 'its name'}} "
            f"(the table's columns: {', '.join(map(str, available)) or 'none'})"
        )
    rows: int = metrics.record_batch(**arguments)
    return rows


def _table_columns(table: Any) -> dict[Any, Any]:
    """The columns of ``table`` by name: a pandas DataFrame's Series, or an
    Arrow table's columns (read in place by the core)."""
    if _is_pandas(table) and hasattr(table, "columns") and hasattr(table, "dtypes"):
        return {name: table[name] for name in table.columns}
    if hasattr(table, "__arrow_c_stream__") or hasattr(table, "__arrow_c_array__"):
        columns: dict[Any, Any] = _core.arrow_table(table)
        return columns
    raise TypeError(
        "record_batch() takes a table (a pandas DataFrame, or an object with Arrow's "
        "PyCapsule interface: a pyarrow Table or RecordBatch, a Polars DataFrame) as "
        f"its one positional argument, not {type(table).__name__}"
    )
