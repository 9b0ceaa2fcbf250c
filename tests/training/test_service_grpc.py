"""The training service in process, over a real gRPC server on the port it bound (make_server on
127.0.0.1:0) with the in-memory store: the fast tier for the rules that need no Ray, MLflow or
registry (models, datasets, tasks, tenancy, validation before any work). The REST view of the
same rules, and everything that trains, runs against the real processes in test_api.py."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from mlmesh.training.v1 import model_pb2, training_service_pb2_grpc
from mlmesh.training.v1 import training_service_pb2 as pb
from mlmesh_common.artifacts import LocalArtifactStore
from mlmesh_common.server import HTTP_CODE_HEADER
from mlmesh_training.__main__ import Deps, make_server
from mlmesh_training.lineage import ExperimentsRecorder, MlflowRecorder
from mlmesh_training.service import TrainingService
from mlmesh_training.storage.memory import InMemoryTrainingStore
from mlmesh_training.tuning import Tuner, open_storage
from tests.helpers.training import bars_csv, features_csv


@pytest.fixture(scope="module")
async def stub(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-in-process")
    # Neither is reached by these tests: nothing here trains.
    mlflow = MlflowRecorder("http://127.0.0.1:9", "in-process", 5.0)
    experiments = ExperimentsRecorder("127.0.0.1:9")
    service = TrainingService(
        InMemoryTrainingStore(),
        LocalArtifactStore(root / "artifacts"),
        mlflow,
        experiments,
        "0123abcd",
        Tuner(open_storage(None)),
    )
    server, port = make_server(Deps(service), "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield training_service_pb2_grpc.TrainingServiceStub(channel)
    await channel.close()
    await server.stop(None)
    await experiments.close()
    mlflow.close()


@pytest.fixture
def tenant() -> tuple[tuple[str, str]]:
    return (("x-tenant-id", f"t-{uuid.uuid4().hex[:10]}"),)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    trailing = dict(error.trailing_metadata())
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return info


async def create_model(stub, tenant, **fields) -> model_pb2.Model:
    parameters = struct_pb2.Struct()
    parameters.update({"n_estimators": 10})
    model = model_pb2.Model(name="rf", model_type="random_forest", parameters=parameters, **fields)
    return await stub.CreateModel(pb.CreateModelRequest(model=model), metadata=tenant)


async def upload(stub, tenant, kind: str, content: bytes) -> str:
    call = stub.CreateDataset(
        pb.CreateDatasetRequest(
            kind=kind, symbol="SPX", upload={"content_type": "text/csv", "data": content}
        ),
        metadata=tenant,
    )
    dataset = await call
    assert dict(await call.initial_metadata())["location"] == f"/api/v1/datasets/{dataset.id}"
    return dataset.id


async def test_model_lifecycle_with_declared_statuses(stub, tenant):
    call = stub.CreateModel(
        pb.CreateModelRequest(model=model_pb2.Model(name="rf", model_type="random_forest")),
        metadata=tenant,
    )
    model = await call
    metadata = dict(await call.initial_metadata())
    assert metadata[HTTP_CODE_HEADER] == "201"
    assert metadata["location"] == f"/api/v1/models/{model.id}"
    assert (model.plugin_key, model.family, model.version) == (
        "ml.random_forest",
        "machine_learning",
        1,
    )
    got = await stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=tenant)
    assert got == model
    get_call = stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=tenant)
    await get_call
    assert HTTP_CODE_HEADER not in dict(await get_call.initial_metadata())
    renamed = await stub.UpdateModel(
        pb.UpdateModelRequest(model_id=model.id, model=model_pb2.Model(name="rf2", version=1)),
        metadata=tenant,
    )
    assert (renamed.name, renamed.version) == ("rf2", 2)
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.UpdateModel(
            pb.UpdateModelRequest(model_id=model.id, model=model_pb2.Model(name="x", version=1)),
            metadata=tenant,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert error_info(stale.value).reason == "VERSION_MISMATCH"
    delete = stub.DeleteModel(pb.DeleteModelRequest(model_id=model.id), metadata=tenant)
    await delete
    assert dict(await delete.initial_metadata())[HTTP_CODE_HEADER] == "204"
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=tenant)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_another_tenants_model_is_permission_denied(stub, tenant):
    model = await create_model(stub, tenant)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=(("x-tenant-id", "x"),))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied.value).reason == "TENANT_MISMATCH"


async def test_a_bad_training_request_is_refused_before_any_task(stub, tenant):
    model = await create_model(stub, tenant)
    features = await upload(stub, tenant, "features", features_csv(120))
    await upload(stub, tenant, "bars", bars_csv(120))
    other = (("x-tenant-id", f"other-{uuid.uuid4().hex[:6]}"),)
    foreign = await upload(stub, other, "features", features_csv(60))
    missing = str(uuid.uuid4())
    cases = [
        ([features, missing], grpc.StatusCode.NOT_FOUND, "DATASET_NOT_FOUND"),
        ([features, foreign], grpc.StatusCode.PERMISSION_DENIED, "TENANT_MISMATCH"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FEATURES"),
    ]
    for feature_ids, code, reason in cases:
        request = pb.TrainModelRequest(
            model_id=model.id, dataset=pb.DatasetSpec(feature_ids=feature_ids, symbol="SPX")
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.TrainModelAsync(pb.TrainModelAsyncRequest(request=request), metadata=tenant)
        assert (refused.value.code(), error_info(refused.value).reason) == (code, reason)
        if code == grpc.StatusCode.NOT_FOUND:
            assert error_info(refused.value).metadata["dataset_ids"] == missing
    tasks = await stub.ListTasks(pb.ListTasksRequest(), metadata=tenant)
    assert (tasks.total, list(tasks.tasks)) == (0, [])


async def test_dataset_preview_and_listing(stub, tenant):
    dataset_id = await upload(stub, tenant, "bars", bars_csv(50))
    preview = await stub.PreviewDataset(
        pb.PreviewDatasetRequest(dataset_id=dataset_id, rows=3), metadata=tenant
    )
    assert len(preview.rows) == 3 and "close" in preview.columns
    listed = await stub.ListDatasets(pb.ListDatasetsRequest(kind="bars"), metadata=tenant)
    assert [d.id for d in listed.datasets] == [dataset_id]
