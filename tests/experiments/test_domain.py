"""Pure rules of the registry: page tokens, filter parsing, ids, limits."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlmesh_common.errors import InvalidArgument
from mlmesh_common.resources import is_uuid, page, page_window
from mlmesh_experiments import domain
from mlmesh_experiments.entities import EXPERIMENT_DICTS, WRITABLE_FIELDS
from mlmesh_experiments.storage.base import Clause


@given(st.integers(0, 10_000), st.integers(0, 1000), st.integers(0, 20_000))
def test_page_tokens_round_trip(offset, returned, total):
    token = page([None] * returned, offset, total).next_page_token
    if returned == 0 or offset + returned >= total:
        assert token == ""
    else:
        assert page_window(10, 0, token) == (offset + returned, 10)


@given(st.text(max_size=40))
def test_any_garbage_token_is_a_clean_400(text):
    try:
        offset, _ = page_window(0, 0, text)
    except InvalidArgument as error:
        assert error.reason == "INVALID_PAGE_TOKEN"
    else:
        assert offset >= 0


def test_page_window_defaults_and_clamps():
    assert page_window(0, 0, "") == (0, 100)
    assert page_window(5000, 7, "") == (7, 1000)
    with pytest.raises(InvalidArgument):
        page_window(-1, 0, "")
    with pytest.raises(InvalidArgument):
        page_window(1, -1, "")


def test_parse_run_filter():
    clauses = domain.parse_run_filter(
        "metrics.sharpe > 1 and params.lr = '0.1' and tags.`a b` LIKE 'x%' "
        "and attributes.status = 'finished' and attributes.start_time >= 5 "
        "and attributes.run_id IN ('a', 'b')"
    )
    assert clauses == (
        Clause("metric", "sharpe", ">", 1.0),
        Clause("param", "lr", "=", "0.1"),
        Clause("tag", "a b", "LIKE", "x%"),
        Clause("attribute", "status", "=", "FINISHED"),
        Clause("attribute", "start_time", ">=", 5),
        Clause("attribute", "run_id", "IN", ("a", "b")),
    )
    assert domain.parse_run_filter("   ") == ()


@pytest.mark.parametrize(
    "text",
    [
        "metrics.a LIKE 'x'",
        "params.a > '1'",
        "tags.a = 'x' OR tags.b = 'y'",
        "metrics.a = 'high'",
        "attributes.color = 'x'",
        "attributes.start_time = 'noon'",
        "attributes.status = 'DONE'",
        "datasets.name = 'x'",
        "nonsense",
        "metrics.a = 1; DROP TABLE runs",
    ],
)
def test_bad_filters_are_400(text):
    with pytest.raises(InvalidArgument) as excinfo:
        domain.parse_run_filter(text)
    assert excinfo.value.reason == "INVALID_FILTER"


def test_ids_and_limits():
    assert is_uuid(str(uuid.uuid4()))
    assert not is_uuid(uuid.uuid4().hex)
    assert not is_uuid("../x")
    domain.check_text("x" * 255, domain.MAX_NAME, "name")
    with pytest.raises(InvalidArgument) as excinfo:
        domain.check_text("x" * 256, domain.MAX_NAME, "name")
    assert excinfo.value.metadata["limit"] == "255"
    with pytest.raises(InvalidArgument):
        domain.check_key(" ", "tag")


def test_writable_fields_are_those_not_output_only():
    assert set(WRITABLE_FIELDS) == {
        "name",
        "description",
        "artifact_location",
        "tags",
        "strategy_id",
        "dataset_version",
        "feature_version",
        "model_version",
        "git_commit",
        "mlflow_run_id",
        "parameters",
        "metrics",
        "artifacts",
    }
    assert set(EXPERIMENT_DICTS) == {"tags", "parameters", "metrics", "artifacts"}
