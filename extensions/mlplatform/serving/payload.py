"""Request bodies of a serving endpoint → model inputs, and model outputs → JSON. Pure functions.

`/predict` accepts JSON records or pandas' split orient, bare or wrapped as `mlflow models serve`
expects them, so one client works against both:

    [{"x": 1.0, "y": 2.0}, ...]                                    records
    {"dataframe_records": [{"x": 1.0, "y": 2.0}, ...]}
    {"columns": ["x", "y"], "data": [[1.0, 2.0], ...]}             split (as DataFrame.to_json(orient="split"))
    {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, 2.0], ...]}}
    {"inputs": {"x": [1.0, ...], "y": [2.0, ...]}}                 columns (TF serving, as MLflow takes it)
    {"inputs": {"x": 1.0, "y": 2.0}}                               one row
    {"instances": [{"x": 1.0, "y": 2.0}, ...]}                     records (`inputs` takes these too)
    {"instances": [[1.0, 2.0], ...]}                               unnamed rows (columns 0, 1, ...: only a
                                                                   model without column names takes them)

and answers `{"predictions": [...]}`, one entry per row. Given the model's input schema, the rows are
cast to its column types as `mlflow models serve` casts them (MLflow's own function): an integer for a
float column is accepted, a value the type cannot take (a word for a float) is refused, and so is a
number the cast would change (2.5 for a long, which `mlflow models serve` truncates to 2 and MLflow's
schema enforcement refuses), naming the column, the row, the value and the type. `/generate` (text-generation models)
accepts `{"prompt": "..."}` or `{"prompts": [...]}` with an optional `max_tokens` and answers
`{"generations": [...]}`, one per prompt.

Every problem with a body raises `PayloadError` whose message says what is wrong and what is accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ('JSON records ([{"column": value, ...}, ...]) or pandas split orient '
           '({"columns": [...], "data": [[...], ...]}), optionally wrapped as '
           '{"dataframe_records": ...} / {"dataframe_split": ...}, or {"inputs": ...} / {"instances": ...} '
           '(columns {"column": [values]} or records)')
TF_KEYS = ("inputs", "instances")
DEFAULT_MAX_TOKENS = 128


class PayloadError(ValueError):
    """A request body the endpoint cannot use (HTTP 400)."""


def _json(body: bytes) -> Any:
    if not body.strip():
        raise PayloadError(f"the request body is empty; send {FORMATS}")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError(f"the request body is not valid JSON ({e}); send {FORMATS}") from None


def parse_predict(body: bytes, schema: Any = None) -> pd.DataFrame:
    """The rows of a `/predict` body as a DataFrame, cast to `schema` (an MLflow input schema) if given."""
    frame = parse_predict_request(body)[0]
    return frame if schema is None else cast_to_signature(frame, schema)


def parse_predict_request(body: bytes) -> tuple[pd.DataFrame, dict | None]:
    """A `/predict` body's rows and its `params` (the model's inference parameters, beside the data as
    `mlflow models serve` takes them: checked against the model's params schema by its predict; None: none)."""
    doc = _json(body)
    params = None
    if isinstance(doc, dict) and "params" in doc:
        doc = dict(doc)
        params = doc.pop("params")
        if not isinstance(params, dict):
            raise PayloadError(f'params is {_kind(params)}; send the inference parameters as an object '
                               '{"name": value, ...} beside the data')
    return _frame(doc), params


def cast_to_signature(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    """`frame` cast to `schema` with the function MLflow's scoring server uses for dataframe_records /
    dataframe_split (an integer for a double becomes a double, which the model's own schema enforcement
    then accepts), refusing what it cannot cast and what the cast would change (2.5 for a long)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.proto_json_utils import cast_df_types_according_to_schema

    sent = frame.copy()  # the cast replaces the columns of the frame it is given
    try:
        cast = cast_df_types_according_to_schema(frame, schema)
    except MlflowException as e:
        raise PayloadError(_first_uncastable(sent, schema) or e.message) from None
    truncated = _first_truncated(sent, cast, schema)
    if truncated:
        raise PayloadError(truncated)
    return cast


def layout(frame: pd.DataFrame) -> tuple:
    """The columns and dtypes of a parsed frame: frames of one layout concatenate without changing a value."""
    return tuple((str(name), str(dtype)) for name, dtype in frame.dtypes.items())


def concatenated(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows of `frames` (of one `layout`) as one frame; a single frame as it is (no copy)."""
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def cast_together(frames: list[pd.DataFrame], schema: Any) -> tuple[pd.DataFrame | None, list[PayloadError | None]]:
    """`frames` (requests of one `layout`) concatenated and cast to `schema` in one call (the cast costs
    about as much for 32 rows as for one). If that cast refuses a value, each frame is cast alone, so only
    the requests with a refused value get their refusal, naming their own row. Returns the joined cast frame
    of the accepted frames (None if none) and, per frame, its refusal (None: accepted, in the joined frame)."""
    try:
        return cast_to_signature(concatenated(frames), schema), [None] * len(frames)
    except PayloadError as e:
        if len(frames) == 1:
            return None, [e]
    refusals: list[PayloadError | None] = []
    accepted = []
    for frame in frames:
        try:
            accepted.append(cast_to_signature(frame, schema))
            refusals.append(None)
        except PayloadError as e:
            refusals.append(e)
    if not accepted:
        return None, refusals
    return concatenated(accepted), refusals


def _named_columns(frame: pd.DataFrame, schema: Any) -> list:
    """The schema's column specs of the columns `frame` has (none for a schema of unnamed tensors)."""
    if not schema.has_input_names():
        return []
    return [spec for spec in schema.inputs if spec.name in frame.columns]


def _first_uncastable(sent: pd.DataFrame, schema: Any) -> str | None:
    """The refusal of the first value MLflow's cast refuses, found with the same function (its own message
    names only the column): column by column, then value by value in the refused column; None if no
    single value is refused."""
    from mlflow.types.schema import Schema

    for spec in _named_columns(sent, schema):
        one_column = Schema([spec])
        if _casts(sent[[spec.name]], one_column):
            continue
        for row, value in enumerate(sent[spec.name]):
            if not _casts(pd.DataFrame({spec.name: [value]}), one_column):
                return _refusal(row, spec, value)
    return None


def _casts(frame: pd.DataFrame, schema: Any) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.proto_json_utils import cast_df_types_according_to_schema

    try:
        cast_df_types_according_to_schema(frame.copy(), schema)
    except MlflowException:
        return False
    return True


def _first_truncated(sent: pd.DataFrame, cast: pd.DataFrame, schema: Any) -> str | None:
    """The refusal of the first number an integer column's cast changed: pandas' astype turns 2.5 into 2,
    which `mlflow models serve` would score silently; MLflow's schema enforcement refuses float → int."""
    for spec in _named_columns(sent, schema):
        if cast[spec.name].dtype.kind not in "iu":
            continue
        numbers = pd.to_numeric(sent[spec.name], errors="coerce")
        changed = numbers.notna() & (numbers != cast[spec.name])
        if changed.any():
            row = int(np.argmax(changed.to_numpy()))
            return _refusal(row, spec, sent[spec.name].iloc[row])
    return None


# What a client may send for each of MLflow's column types, for the refusal's hint.
ALLOWED_VALUES = {"double": "a number", "float": "a number", "long": "a whole number", "integer": "a whole number",
                  "boolean": "true or false", "string": "a string", "binary": "a base64-encoded string",
                  "datetime": "a date-time (ISO 8601)"}


def _refusal(row: int, spec: Any, value: Any) -> str:
    expected = repr(spec.type)  # MLflow's name of the type: double, long, Array(double), ...
    allowed = ALLOWED_VALUES.get(expected, f"a value of type {expected}")
    return (f"column {spec.name!r}, row {row}: {_shown(value)} is not a {expected} (the model's signature); "
            f"allowed: {allowed}")


def _shown(value: Any) -> str:
    """A value as the client sent it, in JSON (NaN is how pandas holds a null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


def _frame(doc: Any) -> pd.DataFrame:
    if isinstance(doc, dict) and len(doc) == 1 and "dataframe_records" in doc:
        doc = doc["dataframe_records"]
    elif isinstance(doc, dict) and len(doc) == 1 and "dataframe_split" in doc:
        doc = doc["dataframe_split"]
        if not isinstance(doc, dict):
            raise PayloadError(f"dataframe_split must be an object with columns and data; got {_kind(doc)}")
    elif isinstance(doc, dict) and len(doc) == 1 and set(doc) & set(TF_KEYS):
        return tf_serving_frame(*next(iter(doc.items())))
    if isinstance(doc, list):
        return _records(doc)
    if isinstance(doc, dict) and ("columns" in doc or "data" in doc):
        return _split(doc)
    keys = f"an object with keys {sorted(doc)[:5]}" if isinstance(doc, dict) else _kind(doc)
    raise PayloadError(f"unsupported body: {keys}; send {FORMATS}")


def _records(rows: list) -> pd.DataFrame:
    if not rows:
        raise PayloadError("no rows: the list of records is empty")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PayloadError(f"record {i} is {_kind(row)}; each record must be an object "
                               '{"column": value, ...}')
    return pd.DataFrame.from_records(rows)


def tf_serving_frame(key: str, value: Any) -> pd.DataFrame:
    """`{"inputs": ...}` / `{"instances": ...}` as `mlflow models serve` turns them into the DataFrame a
    column-signature model scores (parse_tf_serving_input, then pyfunc's schema enforcement): an object of
    columns → one row per position, of scalars → one row; a list of objects → records; a list of lists →
    unnamed columns 0, 1, ... The cast to the signature comes after, as for the other formats."""
    if isinstance(value, dict):
        if not value:
            raise PayloadError(f"{key} is an empty object; send {{\"{key}\": {{\"column\": [values], ...}}}}")
        if all(not isinstance(v, (list, dict)) for v in value.values()):
            return pd.DataFrame([value])  # one row, as MLflow reads an object of scalars
        lengths = {name: len(v) if isinstance(v, list) else None for name, v in value.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            shown = ", ".join(f"{n}: {'a list of %d' % k if k is not None else _kind(value[n])}"
                              for n, k in lengths.items())
            raise PayloadError(f"{key} columns must be lists of the same length (one value per row); got {shown}")
        if not next(iter(lengths.values())):
            raise PayloadError(f"no rows: the columns of {key} are empty")
        return pd.DataFrame(value)
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        return _records(value)
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        if len({len(row) for row in value}) != 1:
            raise PayloadError(f"the rows of {key} have {sorted({len(row) for row in value})} values; "
                               "each row must have one value per column")
        return pd.DataFrame(value)  # columns 0, 1, ...: a model with named inputs refuses them, as MLflow does
    if isinstance(value, list) and not value:
        raise PayloadError(f"no rows: {key} is an empty list")
    raise PayloadError(f"{key} is {_kind(value)}; send {{\"{key}\": {{\"column\": [values], ...}}}} or "
                       f"{{\"{key}\": [{{\"column\": value, ...}}, ...]}}")


def _split(doc: dict) -> pd.DataFrame:
    unknown = sorted(set(doc) - {"columns", "data", "index"})
    if unknown:
        raise PayloadError(f"split orient has unknown key(s) {unknown}; allowed: columns, data, index")
    columns, data = doc.get("columns"), doc.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not columns:
        raise PayloadError(f"split orient needs 'columns', a non-empty list of column names; got {columns!r:.80}")
    if not isinstance(data, list) or not data:
        raise PayloadError(f"split orient needs 'data', a non-empty list of rows; got {_kind(data)}")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            got = f"{len(row)} values" if isinstance(row, list) else _kind(row)
            raise PayloadError(f"data[{i}] has {got}; each row must be a list of {len(columns)} values "
                               f"(one per column: {', '.join(columns)})")
    index = doc.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise PayloadError(f"index must be a list of {len(data)} labels (one per row) or left out")
    return pd.DataFrame(data, columns=columns, index=index)


@dataclass(frozen=True)
class GenerateRequest:
    prompts: list[str]
    max_tokens: int
    single: bool  # {"prompt": ...} rather than {"prompts": [...]}
    params: dict = field(default_factory=dict)


def parse_generate(body: bytes, max_tokens_limit: int) -> GenerateRequest:
    """A `/generate` body: `prompt` or `prompts`, `max_tokens` (1..limit), optional `params`."""
    doc = _json(body)
    usage = ('send {"prompt": "...", "max_tokens": N} or {"prompts": ["...", ...], "max_tokens": N}')
    if not isinstance(doc, dict):
        raise PayloadError(f"the body is {_kind(doc)}; {usage}")
    unknown = sorted(set(doc) - {"prompt", "prompts", "max_tokens", "params"})
    if unknown:
        raise PayloadError(f"unknown key(s) {unknown}; allowed: prompt, prompts, max_tokens, params")
    if ("prompt" in doc) == ("prompts" in doc):
        raise PayloadError(f"give exactly one of 'prompt' and 'prompts'; {usage}")
    single = "prompt" in doc
    prompts = [doc["prompt"]] if single else doc["prompts"]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise PayloadError(f"{'prompt' if single else 'prompts'} must be "
                           f"{'a string' if single else 'a non-empty list of strings'}")
    max_tokens = doc.get("max_tokens", min(DEFAULT_MAX_TOKENS, max_tokens_limit))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_tokens_limit:
        raise PayloadError(f"max_tokens is {max_tokens!r}; allowed: an integer from 1 to {max_tokens_limit}")
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise PayloadError(f"params must be an object of generation parameters; got {_kind(params)}")
    return GenerateRequest(prompts=prompts, max_tokens=max_tokens, single=single, params=params)


def split_outputs(outputs: Any, sizes: list[int]) -> list[Any]:
    """Cut the model's output for concatenated inputs back into one JSON-ready list per request."""
    rows = jsonable(outputs)
    if isinstance(rows, dict):  # a column-oriented dict (some pyfunc models): one list per column
        lengths = {len(v) for v in rows.values() if isinstance(v, list)}
        if lengths != {sum(sizes)} or not all(isinstance(v, list) for v in rows.values()):
            raise ValueError("the model's output cannot be split into rows")
        rows = [dict(zip(rows, values)) for values in zip(*rows.values())]
    if not isinstance(rows, list) or len(rows) != sum(sizes):
        raise ValueError(f"the model returned {len(rows) if isinstance(rows, list) else _kind(rows)} "
                         f"outputs for {sum(sizes)} rows")
    out, start = [], 0
    for n in sizes:
        out.append(rows[start:start + n])
        start += n
    return out


def jsonable(value: Any) -> Any:
    """numpy / pandas outputs as plain JSON values; NaN and infinities become null."""
    if isinstance(value, pd.DataFrame):
        return _finite(value.to_dict(orient="records"))
    if isinstance(value, (pd.Series, pd.Index)):
        return _finite(value.tolist())
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic):
        return _finite(value.item())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return _finite(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
