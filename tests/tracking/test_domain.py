"""Filter building, clamping and downsampling of the tracking service, without MLflow."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.utils.search_utils import SearchUtils

from mlmesh_common import history
from mlmesh_common.errors import InvalidArgument
from mlmesh_tracking import domain


@pytest.mark.parametrize(
    ("given_limit", "expected"), [(0, 50), (1, 1), (50, 50), (100, 100), (101, 100), (10_000, 100)]
)
def test_clamp_limit(given_limit, expected):
    assert domain.clamp_limit(given_limit) == expected


def test_negative_limit_rejected():
    with pytest.raises(InvalidArgument):
        domain.clamp_limit(-1)


@pytest.mark.parametrize(
    "value",
    ["training", "it's", 'say "hi"', "x' OR tags.a = 'b", "a AND metrics.m > 0", "üñí ☃", "%_"],
)
def test_quoted_values_parse_back_as_exactly_one_equality(value):
    clause = domain.tag_equals("run_type", value, "run_type")
    parsed = SearchUtils.parse_search_filter(clause)
    assert parsed == [{"type": "tag", "key": "run_type", "comparator": "=", "value": value}]


@pytest.mark.parametrize("value", ["a\\b", "both ' and \"", "line\nbreak"])
def test_values_mlflow_cannot_express_are_refused(value):
    with pytest.raises(InvalidArgument):
        domain.quote_literal(value, "run_type")


@given(
    st.text(
        alphabet=st.characters(blacklist_characters="\\\n\r", blacklist_categories=("Cs",)),
        max_size=40,
    )
)
def test_any_expressible_value_round_trips(value):
    if "'" in value and '"' in value:
        return
    clause = domain.tag_equals("strategy_id", value, "strategy_id")
    parsed = SearchUtils.parse_search_filter(clause)
    assert len(parsed) == 1 and parsed[0]["value"] == value and parsed[0]["comparator"] == "="


def test_build_filter_scopes_tenant_and_appends_user_filter():
    text = domain.build_run_filter(
        tenant="acme", run_type="backtest", status="FINISHED", user_filter="metrics.sharpe > 1"
    )
    parsed = SearchUtils.parse_search_filter(text)
    assert {"type": "tag", "key": "mlmesh.tenant", "comparator": "=", "value": "acme"} in parsed
    assert {"type": "tag", "key": "run_type", "comparator": "=", "value": "backtest"} in parsed
    assert {"type": "attribute", "key": "status", "comparator": "=", "value": "FINISHED"} in parsed
    assert {"type": "metric", "key": "sharpe", "comparator": ">", "value": "1"} in parsed


def test_default_tenant_means_untagged():
    parsed = SearchUtils.parse_search_filter(domain.build_run_filter(tenant="default"))
    assert parsed == [
        {"type": "tag", "key": "mlmesh.tenant", "comparator": "IS NULL", "value": None}
    ]


def test_downsample_rejects_negative():
    with pytest.raises(InvalidArgument):
        history.downsample([1, 2], -1)
