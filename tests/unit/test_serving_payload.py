"""Request bodies of /predict and /generate: what is accepted, and the 400 message for what is not."""

import json
import warnings

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.utils import _enforce_schema
from mlflow.pyfunc.scoring_server import _split_data_and_params, infer_and_parse_data

from mlplatform.serving.payload import (PayloadError, jsonable, parse_generate, parse_predict, parse_predict_request,
                                        split_outputs)

ROWS = [{"x1": 0.1, "x2": 1.0}, {"x1": 0.9, "x2": 0.1}]
EXPECTED = pd.DataFrame({"x1": [0.1, 0.9], "x2": [1.0, 0.1]})


@pytest.mark.parametrize("body", [
    ROWS,
    {"dataframe_records": ROWS},
    {"columns": ["x1", "x2"], "data": [[0.1, 1.0], [0.9, 0.1]]},
    {"columns": ["x1", "x2"], "index": [0, 1], "data": [[0.1, 1.0], [0.9, 0.1]]},
    {"dataframe_split": {"columns": ["x1", "x2"], "data": [[0.1, 1.0], [0.9, 0.1]]}},
    json.loads(EXPECTED.to_json(orient="split")),
])
def test_records_and_split_orient(body):
    pd.testing.assert_frame_equal(parse_predict(json.dumps(body).encode()), EXPECTED)


@pytest.mark.parametrize("body,message", [
    (b"", "the request body is empty; send JSON records"),
    (b"{nope", "the request body is not valid JSON (Expecting property name"),
    (b"\xff\xfe", "the request body is not valid JSON"),
    (b"[]", "no rows: the list of records is empty"),
    (b'[{"x1": 1}, 3]', "record 1 is a number; each record must be an object"),
    (b'"rows"', "unsupported body: a string; send JSON records"),
    (b'{"inputs": [[1, 2]], "dataframe_records": []}',
     "unsupported body: an object with keys ['dataframe_records', 'inputs']; send JSON records"),
    (b'{"inputs": 3}', 'inputs is a number; send {"inputs": {"column": [values], ...}}'),
    (b'{"instances": []}', "no rows: instances is an empty list"),
    (b'{"inputs": {}}', "inputs is an empty object"),
    (b'{"inputs": {"x1": [1, 2], "x2": [3]}}',
     "inputs columns must be lists of the same length (one value per row); got x1: a list of 2, x2: a list of 1"),
    (b'{"inputs": {"x1": [], "x2": []}}', "no rows: the columns of inputs are empty"),
    (b'{"instances": [[1, 2], [3]]}', "the rows of instances have [1, 2] values; each row must have one value"),
    (b'{"columns": ["x1", "x2"], "data": [[1, 2], [3]]}',
     "data[1] has 1 values; each row must be a list of 2 values (one per column: x1, x2)"),
    (b'{"columns": ["x1"], "data": []}', "split orient needs 'data', a non-empty list of rows; got a list"),
    (b'{"columns": [1], "data": [[1]]}', "split orient needs 'columns', a non-empty list of column names"),
    (b'{"columns": ["x1"], "data": [[1]], "rows": 1}', "split orient has unknown key(s) ['rows']"),
    (b'{"columns": ["x1"], "data": [[1]], "index": [0, 1]}', "index must be a list of 1 labels"),
    (b'{"dataframe_split": [[1]]}', "dataframe_split must be an object with columns and data; got a list"),
])
def test_bad_predict_bodies_say_what_is_wrong(body, message):
    with pytest.raises(PayloadError) as info:
        parse_predict(body)
    assert message in str(info.value)


def test_generate_bodies():
    req = parse_generate(b'{"prompt": "hello", "max_tokens": 5}', max_tokens_limit=100)
    assert (req.prompts, req.max_tokens, req.single, req.params) == (["hello"], 5, True, {})
    req = parse_generate(b'{"prompts": ["a", "b"], "params": {"temperature": 0.1}}', max_tokens_limit=64)
    assert (req.prompts, req.max_tokens, req.single, req.params) == (["a", "b"], 64, False, {"temperature": 0.1})


@pytest.mark.parametrize("body,message", [
    (b'{"prompt": "a", "max_tokens": 0}', "max_tokens is 0; allowed: an integer from 1 to 100"),
    (b'{"prompt": "a", "max_tokens": 101}', "max_tokens is 101; allowed: an integer from 1 to 100"),
    (b'{"prompt": "a", "max_tokens": "5"}', "max_tokens is '5'; allowed: an integer from 1 to 100"),
    (b'{"prompt": "a", "max_tokens": true}', "max_tokens is True; allowed"),
    (b'{"max_tokens": 5}', "give exactly one of 'prompt' and 'prompts'"),
    (b'{"prompt": "a", "prompts": ["b"]}', "give exactly one of 'prompt' and 'prompts'"),
    (b'{"prompt": 3}', "prompt must be a string"),
    (b'{"prompts": []}', "prompts must be a non-empty list of strings"),
    (b'{"prompt": "a", "temperature": 1}', "unknown key(s) ['temperature']; allowed: prompt, prompts, max_tokens, params"),
    (b'["a"]', "the body is a list; send {\"prompt\""),
])
def test_bad_generate_bodies(body, message):
    with pytest.raises(PayloadError) as info:
        parse_generate(body, max_tokens_limit=100)
    assert message in str(info.value)


def test_outputs_are_split_back_per_request():
    assert split_outputs(np.array([0, 1, 1]), [2, 1]) == [[0, 1], [1]]
    assert split_outputs(pd.Series([0.5, 0.25]), [1, 1]) == [[0.5], [0.25]]
    assert split_outputs(pd.DataFrame({"p": [0.1, 0.9], "label": ["a", "b"]}), [2]) == \
        [[{"p": 0.1, "label": "a"}, {"p": 0.9, "label": "b"}]]
    assert split_outputs({"p": np.array([0.1, 0.9])}, [1, 1]) == [[{"p": 0.1}], [{"p": 0.9}]]
    with pytest.raises(ValueError, match="the model returned 1 outputs for 2 rows"):
        split_outputs([1], [1, 1])


def test_jsonable_turns_nan_and_numpy_into_json():
    assert jsonable(np.array([1.5, np.nan, np.inf])) == [1.5, None, None]
    assert jsonable({"a": np.int64(3), "b": [np.float32(0.5)]}) == {"a": 3, "b": [0.5]}
    json.dumps(jsonable(pd.DataFrame({"x": [np.nan, 1.0]})), allow_nan=False)


# A signature with each numeric width and a string column, as MLflow infers it from a training frame.
TYPED = pd.DataFrame({"length": [5.1], "width": np.array([3.5], dtype=np.float32), "count": [3], "kind": ["a"]})
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # MLflow's hint that integer columns cannot hold missing values
    SCHEMA = infer_signature(TYPED).inputs


@pytest.mark.parametrize("wrap", ["records", "dataframe_records", "dataframe_split"])
def test_rows_are_cast_to_the_signature_as_mlflow_models_serve_casts_them(wrap):
    rows = [{"length": 5, "width": 3, "count": 2, "kind": "b"}, {"length": 6.5, "width": 2, "count": 1, "kind": "c"}]
    split = {"columns": list(rows[0]), "data": [list(r.values()) for r in rows]}
    body = {"records": rows, "dataframe_records": {"dataframe_records": rows},
            "dataframe_split": {"dataframe_split": split}}[wrap]
    frame = parse_predict(json.dumps(body).encode(), SCHEMA)
    # The same frame MLflow's scoring server hands the model, which then passes its schema enforcement.
    mlflow_frame = infer_and_parse_data({"dataframe_split": split}, SCHEMA)
    pd.testing.assert_frame_equal(frame, mlflow_frame)
    pd.testing.assert_frame_equal(_enforce_schema(frame, SCHEMA), _enforce_schema(mlflow_frame, SCHEMA))


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory):
    """A real pyfunc model with SCHEMA as its signature: its predict enforces the schema as a served one
    does. Its answer shows the values it was given: the sum of each row's numbers."""
    class Summing(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: pd.DataFrame, params=None) -> list[float]:
            return model_input[["length", "width", "count"]].sum(axis=1).tolist()

    path = tmp_path_factory.mktemp("model") / "summing"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hint to log an input example
        mlflow.pyfunc.save_model(str(path), python_model=Summing(), signature=ModelSignature(inputs=SCHEMA),
                                 pip_requirements=[])
    return mlflow.pyfunc.load_model(str(path))


def test_integers_for_float_columns_get_the_answers_of_floats(typed_model):
    """The issue: `{"dataframe_records": [{"length": 5, ...}]}` got 400 "Failed to enforce schema"
    (MLflow's predict refuses int64 for a double column unless the rows are cast first, as
    `mlflow models serve` casts them)."""
    whole = [{"length": 5, "width": 3, "count": 2, "kind": "b"}, {"length": 6, "width": 2, "count": 1, "kind": "c"}]
    floats = [{k: float(v) if k in ("length", "width") else v for k, v in row.items()} for row in whole]
    with pytest.raises(MlflowException, match="Failed to enforce schema"):
        typed_model.predict(pd.DataFrame.from_records(whole))
    for body in (whole, {"dataframe_records": whole},
                 {"dataframe_split": {"columns": list(whole[0]), "data": [list(r.values()) for r in whole]}}):
        answers = typed_model.predict(parse_predict(json.dumps(body).encode(), SCHEMA))
        assert answers == typed_model.predict(parse_predict(json.dumps(floats).encode(), SCHEMA))
        assert answers == [10.0, 9.0]


@pytest.mark.parametrize("row,message", [
    ({"length": "a lot"}, """column 'length', row 1: "a lot" is not a double (the model's signature); allowed: a number"""),
    ({"width": [1]}, "column 'width', row 1: [1] is not a float (the model's signature); allowed: a number"),
    ({"count": None}, "column 'count', row 1: null is not a long (the model's signature); allowed: a whole number"),
    ({"count": "two"}, """column 'count', row 1: "two" is not a long (the model's signature); allowed: a whole number"""),
])
def test_a_value_mlflow_cannot_cast_is_refused_naming_column_row_value_and_type(row, message):
    rows = [{"length": 5.1, "width": 3.5, "count": 2, "kind": "b"}, {"length": 5.1, "width": 3.5, "count": 2, "kind": "b", **row}]
    with pytest.raises(MlflowException):  # MLflow's scoring server refuses it too (its message names the column only)
        infer_and_parse_data({"dataframe_records": rows}, SCHEMA)
    with pytest.raises(PayloadError) as info:
        parse_predict(json.dumps(rows).encode(), SCHEMA)
    assert str(info.value) == message


def test_a_fraction_for_an_integer_column_is_refused_not_truncated():
    """`mlflow models serve` casts 2.5 to 2 with astype and scores it; MLflow's schema enforcement (the model's
    predict given the frame as it is) refuses float → long. Refused here: the answer would be for another row.
    A whole number written as a float (2.0, as JSON encoders may write it) is still accepted."""
    rows = [{"length": 5.1, "width": 3.5, "count": 2.0, "kind": "b"}, {"length": 5.1, "width": 3.5, "count": 2.5, "kind": "b"}]
    assert infer_and_parse_data({"dataframe_records": rows}, SCHEMA)["count"].tolist() == [2, 2]  # truncated
    with pytest.raises(PayloadError) as info:
        parse_predict(json.dumps(rows).encode(), SCHEMA)
    assert str(info.value) == "column 'count', row 1: 2.5 is not a long (the model's signature); allowed: a whole number"
    assert parse_predict(json.dumps(rows[:1]).encode(), SCHEMA)["count"].tolist() == [2]


# TF-serving bodies, as `mlflow models serve` takes them (pyfunc/scoring_server: infer_and_parse_data, then the
# model's schema enforcement turns the result into the frame the model scores).
TF_BODIES = [
    {"inputs": {"length": [5, 6.5], "width": [3, 2], "count": [2, 1], "kind": ["b", "c"]}},
    {"instances": {"length": [5, 6.5], "width": [3, 2], "count": [2, 1], "kind": ["b", "c"]}},
    {"inputs": {"length": 5, "width": 3, "count": 2, "kind": "b"}},
    {"instances": [{"length": 5, "width": 3, "count": 2, "kind": "b"}, {"length": 6.5, "width": 2, "count": 1, "kind": "c"}]},
    {"inputs": [{"length": 5, "width": 3, "count": 2, "kind": "b"}]},
]


@pytest.mark.parametrize("body", TF_BODIES, ids=lambda b: f"{next(iter(b))}-{type(b[next(iter(b))]).__name__}")
def test_inputs_and_instances_give_the_frame_mlflow_models_serve_scores(body, typed_model):
    frame = parse_predict(json.dumps(body).encode(), SCHEMA)
    mlflow_frame = _enforce_schema(infer_and_parse_data(body, SCHEMA), SCHEMA)
    pd.testing.assert_frame_equal(_enforce_schema(frame, SCHEMA), mlflow_frame, check_dtype=True)
    assert typed_model.predict(frame) == typed_model.predict(mlflow_frame)


def test_inputs_without_a_schema_and_unnamed_rows():
    pd.testing.assert_frame_equal(parse_predict(b'{"inputs": {"x1": [0.1, 0.9], "x2": [1.0, 0.1]}}'), EXPECTED)
    pd.testing.assert_frame_equal(parse_predict(json.dumps({"instances": ROWS}).encode()), EXPECTED)
    # Rows without names: columns 0, 1 (as MLflow makes them), which a model with named inputs refuses.
    unnamed = parse_predict(b'{"instances": [[0.1, 1.0], [0.9, 0.1]]}', SCHEMA)
    assert list(unnamed.columns) == [0, 1]
    with pytest.raises(MlflowException, match="Model is missing inputs"):
        _enforce_schema(unnamed, SCHEMA)


def test_inputs_values_the_signature_cannot_take_are_refused():
    body = {"inputs": {"length": [5.1, "a lot"], "width": [3.5, 3.5], "count": [2, 2], "kind": ["b", "b"]}}
    with pytest.raises(MlflowException):  # MLflow refuses it too
        infer_and_parse_data(body, SCHEMA)
    with pytest.raises(PayloadError) as info:
        parse_predict(json.dumps(body).encode(), SCHEMA)
    assert str(info.value) == ("""column 'length', row 1: "a lot" is not a double (the model's signature); """
                               "allowed: a number")


@pytest.mark.parametrize("body", [
    {"dataframe_records": ROWS, "params": {"scale": 2}},
    {"dataframe_split": {"columns": ["x1", "x2"], "data": [[0.1, 1.0], [0.9, 0.1]]}, "params": {"scale": 2}},
    {"inputs": {"x1": [0.1, 0.9], "x2": [1.0, 0.1]}, "params": {"scale": 2}},
    {"instances": ROWS, "params": {"scale": 2}},
], ids=lambda b: next(iter(b)))
def test_params_beside_the_data_as_mlflow_models_serve_splits_them(body):
    frame, params = parse_predict_request(json.dumps(body).encode())
    pd.testing.assert_frame_equal(frame, EXPECTED)
    assert params == _split_data_and_params(json.dumps(body))[1] == {"scale": 2}
    assert parse_predict_request(json.dumps({k: v for k, v in body.items() if k != "params"}).encode())[1] is None


def test_params_that_are_not_an_object_are_refused():
    with pytest.raises(PayloadError) as info:
        parse_predict_request(json.dumps({"dataframe_records": ROWS, "params": [2]}).encode())
    assert str(info.value) == 'params is a list; send the inference parameters as an object {"name": value, ...} ' \
                              "beside the data"


def test_the_inference_log_reads_the_rows_of_a_body_with_params():
    """The drift gate's live inputs (inference_log.input_frame) are the rows, whatever params came beside them."""
    from mlplatform.serving.inference_log import input_frame

    logged = pd.DataFrame({"request_id": ["a", "b"], "side": ["champion", "champion"], "inputs": [
        json.dumps({"dataframe_records": ROWS[:1], "params": {"scale": 2}}),
        json.dumps({"inputs": {"x1": [0.9], "x2": [0.1]}, "params": {"scale": 2}})]})
    pd.testing.assert_frame_equal(input_frame(logged), EXPECTED)
