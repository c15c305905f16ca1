"""The observation checks: the hand-written /act body parser (every accepted shape and every rejected one, with the
field named), and the shared checks it and the KServe V1 / Open Inference V2 adapters are built on."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.infra.errors import ApiError
from app.serving.observations import (
    ObservationError,
    check_batch_size,
    check_finite,
    check_observation_batch,
    parse_act_body,
    to_float32,
)


def parse(payload: object, max_batch: int = 4) -> object:
    return parse_act_body(orjson.dumps(payload), max_batch)


def test_one_observation_becomes_a_float32_vector() -> None:
    parsed = parse_act_body(b'{"observation": [1, 0.5, -2e3]}', 4)
    assert parsed.observations.dtype == np.float32
    assert parsed.observations.tolist() == [1.0, 0.5, -2000.0]
    assert not parsed.batched and parsed.count == 1 and parsed.obs_dim == 3 and parsed.policy_id is None


def test_a_batch_becomes_a_float32_matrix_and_keeps_the_policy_id() -> None:
    parsed = parse_act_body(b'{"observations": [[1, 2], [3, 4.5]], "policy_id": 7}', 4)
    assert parsed.observations.shape == (2, 2) and parsed.observations.dtype == np.float32
    assert parsed.batched and parsed.count == 2 and parsed.policy_id == 7


def test_integers_mixed_with_floats_and_a_null_policy_id_are_accepted() -> None:
    parsed = parse_act_body(b'{"observations": [[1, 2.5], [-3, 4]], "policy_id": null}', 4)
    assert parsed.observations.tolist() == [[1.0, 2.5], [-3.0, 4.0]] and parsed.policy_id is None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"", "body", "required"),
        (b"not json", "body", "not valid JSON"),
        (b'{"observation": [NaN, 1]}', "body", "not valid JSON"),
        (b'{"observation": [Infinity, 1]}', "body", "not valid JSON"),
        (b'{"observation": [1e400, 1]}', "body", "not valid JSON"),
        (b"[1, 2, 3]", "body", "JSON object"),
        (b"{}", "observation", "required"),
        (b'{"observation": [1], "extra": 1}', "extra", "unknown field"),
        (b'{"observation": [1], "observations": [[1]]}', "observations", "not both"),
        (b'{"observation": "1,2,3"}', "observation", "list of numbers"),
        (b'{"observation": []}', "observation", "non-empty"),
        (b'{"observation": [1, "2", 3]}', "observation[1]", "got string"),
        (b'{"observation": [1, true, 3]}', "observation[1]", "got boolean"),
        (b'{"observation": [1, null, 3]}', "observation[1]", "got null"),
        (b'{"observation": [1, [2], 3]}', "observation[1]", "got array"),
        (b'{"observation": [1, {"a": 2}, 3]}', "observation[1]", "got object"),
        (b'{"observation": [[1, 2, 3]]}', "observation[0]", "got array"),
        (b'{"observation": [1e39, 0, 0]}', "observation[0]", "float32"),
        (b'{"observations": [1, 2, 3]}', "observations[0]", "list of numbers"),
        (b'{"observations": []}', "observations", "at least one"),
        (b'{"observations": {"a": 1}}', "observations", "list of observations"),
        (b'{"observations": [[1, 2], [3]]}', "observations[1]", "all must be equal"),
        (b'{"observations": [[1, 2], []]}', "observations[1]", "non-empty"),
        (b'{"observations": [[1, 2], [3, "x"]]}', "observations[1][1]", "got string"),
        (b'{"observations": [[1, 2], [3, [4, 5]]]}', "observations[1][1]", "got array"),
        (b'{"observations": [[1, 2], [3, false]]}', "observations[1][1]", "got boolean"),
        (b'{"observations": [[1], [2], [3], [4], [5]]}', "observations", "at most 4"),
        (b'{"observation": [1], "policy_id": 0}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": "3"}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": true}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": 1.5}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": 99999999999}', "policy_id", "at most"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(body: bytes, field: str, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_act_body(body, 4)
    error = caught.value
    assert error.status_code == 422 and error.code == "validation_error"
    assert error.details[0]["field"] == field, error.details
    assert words in error.message, error.message
    assert error.message.startswith(field)


# ---- the checks /act shares with the KServe V1 and Open Inference V2 adapters --------------------------------


def problem(call: object, *args: object) -> tuple[str, str]:
    with pytest.raises(ObservationError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.field, caught.value.problem


def test_a_tensor_takes_any_regular_nesting_and_leaves_the_shape_to_the_caller() -> None:
    assert to_float32([[1, 2.5], [3, 4]], "t", None, b"").shape == (2, 2)
    assert to_float32([1, 2, 3], "t", None, b"").shape == (3,)
    assert to_float32([[[1, 2, 3]]], "t", None, b"").shape == (1, 1, 3)
    empty = to_float32([], "t", None, b"")
    assert empty.shape == (0,) and empty.dtype == np.float32
    assert to_float32([[]], "t", None, b"").shape == (1, 0)


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ([[1, 2], [3, "x"]], "t[1][1]", "got string"),
        ([[1, 2], [3, None]], "t[1][1]", "got null"),
        ([[1, 2], [3]], "t[1]", "ragged"),
        ([[1, 2], 3], "t[1]", "list of numbers"),
        ([1, [2]], "t[1]", "got array"),
        ([[1, 2], [3, 1e39]], "t[1][1]", "FP32 range"),
        ([[[1], [2]], [[3], [4, 5]]], "t[1][1]", "ragged"),
    ],
)
def test_a_bad_tensor_names_its_first_bad_element(value: list[object], field: str, words: str) -> None:
    found_field, found_problem = problem(to_float32, value, "t", None, orjson.dumps(value))
    assert found_field == field and words in found_problem, found_problem


def test_booleans_are_found_and_true_or_false_elsewhere_in_the_body_is_no_problem() -> None:
    assert problem(to_float32, [[1, True]], "t", None, b"[[1, true]]") == ("t[0][1]", "must be a number, got boolean")
    body = b'{"data": [[1, 2]], "parameters": {"binary_data": false}}'
    assert to_float32([[1, 2]], "t", None, body).tolist() == [[1.0, 2.0]]
    assert to_float32([[1, 2]], "t", 2, body).tolist() == [[1.0, 2.0]]


def test_check_finite_names_the_first_nan_or_infinity() -> None:
    array = np.array([[1, 2, 3], [4, np.nan, np.inf]], dtype=np.float32)
    field, message = problem(check_finite, array, "observation")
    assert field == "observation[1][1]" and "finite" in message
    check_finite(np.zeros((2, 3), dtype=np.float32), "observation")


def test_the_batch_limit_reads_the_same_at_both_ends() -> None:
    assert problem(check_batch_size, 0, 4, "b") == (
        "b",
        "must hold between 1 and 4 observations per request, got none (at least one is needed)",
    )
    assert problem(check_batch_size, 5, 4, "b") == (
        "b",
        "must hold between 1 and 4 observations per request, got 5 (at most 4)",
    )
    check_batch_size(1, 4, "b")
    check_batch_size(4, 4, "b")


@pytest.mark.parametrize(
    ("shape", "words"),
    [((2, 2), "shape [n, 3] (obs_dim of policy 7), got [2, 2]"), ((3,), "got [3]"), ((0, 3), "got none")],
)
def test_a_batch_for_a_policy_has_its_obs_dim_and_a_size_within_the_limit(shape: tuple[int, ...], words: str) -> None:
    observations = np.zeros(shape, dtype=np.float32)
    field, message = problem(check_observation_batch, observations, 3, 7, 4, "batch")
    assert field == "batch" and words in message, message
    check_observation_batch(np.zeros((4, 3), dtype=np.float32), 3, 7, 4, "batch")
