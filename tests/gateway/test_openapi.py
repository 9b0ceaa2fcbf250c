"""The served OpenAPI document of the real services against a hand-written expectation for a few
operations: the success statuses and Locations the protos declare, required and read-only
fields from their field_behavior annotations."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.descriptors import load_descriptor_set
from gateway.openapi import build_document

DESCRIPTORS = Path(__file__).resolve().parents[2] / "gateway" / "build" / "descriptors.pb"
TASK_LOCATION = "Path of the resource: `/api/v1/tasks/{task_id}`."


@pytest.fixture(scope="module")
def document() -> dict:
    return build_document(load_descriptor_set(DESCRIPTORS))


def success(document: dict, verb: str, path: str) -> dict[str, dict]:
    responses = document["paths"][path][verb]["responses"]
    return {code: response for code, response in responses.items() if code.startswith("2")}


@pytest.mark.parametrize(
    ("verb", "path", "code", "location"),
    [
        ("post", "/api/v1/models", "201", "Path of the resource: `/api/v1/models/{id}`."),
        ("get", "/api/v1/models/{model_id}", "200", None),
        ("delete", "/api/v1/models/{model_id}", "204", None),
        ("post", "/api/v1/models/{model_id}/train/async", "202", TASK_LOCATION),
        ("post", "/api/v1/models/tune/async", "202", TASK_LOCATION),
        ("post", "/api/v1/models/automl/async", "202", TASK_LOCATION),
        ("post", "/api/v1/models/tune", "200", None),
        (
            "post",
            "/api/v1/experiments/runs",
            "201",
            "Path of the resource: `/api/v1/experiments/runs/{id}`.",
        ),
        ("delete", "/api/v1/experiments/{experiment_id}", "204", None),
        ("post", "/api/v1/experiments/{experiment_id}/restore", "200", None),
        ("post", "/api/v1/tracking/runs/compare", "200", None),
    ],
)
def test_success_status_and_location(document, verb, path, code, location):
    (answered,) = success(document, verb, path).items()
    assert answered[0] == code
    if location is None:
        assert "headers" not in answered[1]
    else:
        assert answered[1]["headers"]["Location"]["description"] == location


def test_a_declared_alternative_status(document):
    answers = success(document, "post", "/api/v1/datasets")
    assert set(answers) == {"201", "200"}
    assert answers["201"]["headers"]["Location"]["description"] == (
        "Path of the resource: `/api/v1/datasets/{id}`."
    )
    assert "headers" not in answers["200"]
    schema = {"$ref": "#/components/schemas/mlmesh.training.v1.Dataset"}
    assert answers["200"]["content"]["application/json"]["schema"] == schema


def test_required_and_read_only_fields(document):
    schemas = document["components"]["schemas"]
    model = schemas["mlmesh.training.v1.Model"]["properties"]
    assert {name for name, field in model.items() if field.get("readOnly")} == {
        "id",
        "plugin_key",
        "mlflow_run_id",
        "artifact_uri",
        "metrics",
        "created_at",
        "updated_at",
    }
    assert schemas["mlmesh.training.v1.TuneModelRequest"]["required"] == ["plugin_key", "dataset"]
    assert schemas["mlmesh.training.v1.DatasetSpec"]["required"] == ["feature_ids"]
    experiment = schemas["mlmesh.experiments.v1.Experiment"]["properties"]
    assert experiment["id"]["readOnly"] and experiment["created_at"]["readOnly"]
    assert "readOnly" not in experiment["name"]
    # The async training body is the training request less the model id of its path.
    body = document["paths"]["/api/v1/models/{model_id}/train/async"]["post"]
    schema = body["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["dataset"]
    assert set(schema["properties"]) == {"dataset", "cv", "strategy_id", "seed", "backtest"}


def links(document: dict, verb: str, path: str, code: str) -> dict[str, dict]:
    return document["paths"][path][verb]["responses"][code]["links"]


def test_links_chain_an_id_to_every_operation_that_takes_it(document):
    created = links(document, "post", "/api/v1/experiments", "201")
    experiment_id = {"path.experiment_id": "$response.body#/id"}
    for target in ("GetExperiment", "UpdateExperiment", "DeleteExperiment", "RestoreExperiment"):
        assert created[f"ExperimentService_{target}"]["parameters"] == experiment_id
    # A reference in a body or a query parameter takes the id too.
    assert created["ExperimentService_CreateRun"]["requestBody"] == {
        "experiment_id": "$response.body#/id"
    }
    assert created["ExperimentService_ListRuns"]["parameters"] == {
        "query.experiment_id": "$response.body#/id"
    }
    assert created["ExperimentService_CompareExperiments"]["requestBody"] == ["$response.body#/id"]
    assert "ExperimentService_GetRun" not in created  # a run's path takes a run's id
    run = links(document, "post", "/api/v1/experiments/runs", "201")
    assert run["ExperimentService_LogBatch"]["parameters"] == {"path.run_id": "$response.body#/id"}
    assert run["ExperimentService_GetExperiment"]["parameters"] == {
        "path.experiment_id": "$response.body#/experiment_id"
    }
    # Both answers of a dataset upload link; a nested, repeated reference takes a list.
    for code in ("201", "200"):
        dataset = links(document, "post", "/api/v1/datasets", code)
        assert dataset["TrainingService_TrainModel"]["requestBody"] == {
            "dataset": {"feature_ids": ["$response.body#/id"]}
        }
        assert set(dataset) >= {"TrainingService_GetDataset", "TrainingService_DeleteDataset"}
    task = links(document, "post", "/api/v1/models/tune/async", "202")
    assert task["TrainingService_GetTask"]["parameters"] == {
        "path.task_id": "$response.body#/task_id"
    }
    # A list hands on its first item; an answer referencing another service's resource links there.
    listed = links(document, "get", "/api/v1/tracking/runs", "200")
    assert listed["TrackingService_GetRun"]["parameters"] == {
        "path.run_id": "$response.body#/runs/0/run_id"
    }
    trained = links(document, "post", "/api/v1/models/{model_id}/train", "200")
    assert trained["TrackingService_GetRun"]["parameters"] == {
        "path.run_id": "$response.body#/mlflow_run_id"
    }
    # Errors and empty answers carry nothing to link.
    assert (
        "links" not in document["paths"]["/api/v1/models/{model_id}"]["delete"]["responses"]["204"]
    )
