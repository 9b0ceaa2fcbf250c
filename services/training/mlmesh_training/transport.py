"""gRPC servicer for mlmesh.training.v1.TrainingService: protos in, service calls, protos out,
and the REST status each call asks the gateway for."""

from __future__ import annotations

from google.protobuf import empty_pb2, json_format, struct_pb2

from mlmesh.training.v1 import task_pb2, training_service_pb2_grpc
from mlmesh.training.v1 import training_service_pb2 as pb
from mlmesh_common.http import set_http_status
from mlmesh_common.tenancy import tenant_of
from mlmesh_training.entities import struct
from mlmesh_training.plugins import plugins
from mlmesh_training.service import TrainingService


def _param_spec(spec) -> pb.ParamSpec:
    data = spec.to_dict()
    message = pb.ParamSpec(type=data["type"], log=bool(data.get("log", False)))
    for name in ("low", "high", "step"):
        if data.get(name) is not None:
            setattr(message, name, float(data[name]))
    for choice in data.get("choices") or ():
        value = struct_pb2.Value()
        value.MergeFrom(json_format.ParseDict(choice, struct_pb2.Value()))
        message.choices.append(value)
    return message


def _space(request: pb.TuneModelRequest) -> dict[str, dict]:
    """The request's param_space as ParamSpec dicts; unset optional fields stay absent."""
    space = {}
    for name, spec in request.param_space.items():
        data: dict = {"type": spec.type}
        for field in ("low", "high", "step"):
            if spec.HasField(field):
                data[field] = getattr(spec, field)
        if spec.log:
            data["log"] = True
        if spec.choices:
            data["choices"] = [json_format.MessageToDict(choice) for choice in spec.choices]
        space[name] = data
    return space


def _request_dict(request) -> dict:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


class TrainingServicer(training_service_pb2_grpc.TrainingServiceServicer):
    def __init__(self, service: TrainingService) -> None:
        self._service = service

    # --- models --------------------------------------------------------------------------

    async def CreateModel(self, request, context):
        m = request.model
        model = await self._service.create_model(
            tenant_of(context),
            m.name,
            m.model_type,
            m.family,
            json_format.MessageToDict(m.parameters),
        )
        await set_http_status(context, 201, f"/api/v1/models/{model.id}")
        return model.to_proto()

    async def ListModels(self, request, context):
        page = await self._service.list_models(
            tenant_of(context), request.family, request.skip, request.limit, request.page_token
        )
        return pb.ListModelsResponse(
            models=[m.to_proto() for m in page.items],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def GetModel(self, request, context):
        return (await self._service.get_model(tenant_of(context), request.model_id)).to_proto()

    async def UpdateModel(self, request, context):
        m = request.model
        model = await self._service.update_model(
            tenant_of(context),
            request.model_id,
            name=m.name,
            parameters=json_format.MessageToDict(m.parameters)
            if m.HasField("parameters")
            else None,
            version=m.version,
        )
        return model.to_proto()

    async def DeleteModel(self, request, context):
        await self._service.delete_model(tenant_of(context), request.model_id)
        await set_http_status(context, 204)
        return empty_pb2.Empty()

    # --- training ------------------------------------------------------------------------

    async def TrainModel(self, request, context):
        tenant = tenant_of(context)
        job = await self._service.prepare(tenant, request.model_id, request)
        return await self._service.train(tenant, job)

    async def TrainModelAsync(self, request, context):
        tenant = tenant_of(context)
        train_request = pb.TrainModelRequest()
        train_request.ParseFromString(request.SerializeToString())
        job = await self._service.prepare(tenant, request.model_id, train_request)
        task = await self._service.train_async(tenant, job, _request_dict(request))
        await set_http_status(context, 202, f"/api/v1/tasks/{task.id}")
        return task.to_proto()

    # --- tuning and AutoML ----------------------------------------------------------------

    async def _tune_job(self, tenant: str, request):
        return await self._service.prepare_tune(
            tenant, request, _space(request), json_format.MessageToDict(request.fixed_params)
        )

    async def TuneModel(self, request, context):
        tenant = tenant_of(context)
        return await self._service.tune(tenant, await self._tune_job(tenant, request))

    async def TuneModelAsync(self, request, context):
        tenant = tenant_of(context)
        job = await self._tune_job(tenant, request.request)
        task = await self._service.tune_async(tenant, job, _request_dict(request.request))
        await set_http_status(context, 202, f"/api/v1/tasks/{task.id}")
        return task.to_proto()

    async def _automl_job(self, tenant: str, request):
        candidates = {
            key: json_format.MessageToDict(params) for key, params in request.candidates.items()
        }
        return await self._service.prepare_automl(tenant, request, candidates)

    async def RunAutoML(self, request, context):
        tenant = tenant_of(context)
        return await self._service.automl(tenant, await self._automl_job(tenant, request))

    async def RunAutoMLAsync(self, request, context):
        tenant = tenant_of(context)
        job = await self._automl_job(tenant, request.request)
        task = await self._service.automl_async(tenant, job, _request_dict(request.request))
        await set_http_status(context, 202, f"/api/v1/tasks/{task.id}")
        return task.to_proto()

    async def ListPlugins(self, request, context):
        return pb.ListPluginsResponse(
            plugins=[
                pb.Plugin(
                    key=p.key,
                    family=str(p.family),
                    model_type=p.model_type,
                    description=p.description,
                    default_params=struct(p.default_params()),
                )
                for p in plugins()
            ]
        )

    async def ListSearchSpaces(self, request, context):
        return pb.ListSearchSpacesResponse(
            search_spaces={
                p.key: pb.SearchSpace(
                    params={name: _param_spec(spec) for name, spec in p.search_space().items()}
                )
                for p in plugins()
            }
        )

    # --- datasets ------------------------------------------------------------------------

    async def CreateDataset(self, request, context):
        dataset, created = await self._service.create_dataset(
            tenant_of(context),
            name=request.name,
            kind=request.kind,
            symbol=request.symbol,
            timeframe=request.timeframe,
            content_type=request.upload.content_type,
            body=request.upload.data,
        )
        if created:  # an identical re-upload answers its existing dataset with 200
            await set_http_status(context, 201, f"/api/v1/datasets/{dataset.id}")
        return dataset.to_proto()

    async def ListDatasets(self, request, context):
        filters = {"symbol": request.symbol, "timeframe": request.timeframe, "kind": request.kind}
        page = await self._service.list_datasets(
            tenant_of(context), filters, request.skip, request.limit, request.page_token
        )
        return pb.ListDatasetsResponse(
            datasets=[d.to_proto() for d in page.items],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def GetDataset(self, request, context):
        dataset = await self._service.get_dataset(tenant_of(context), request.dataset_id)
        return dataset.to_proto()

    async def PreviewDataset(self, request, context):
        columns, rows = await self._service.preview_dataset(
            tenant_of(context), request.dataset_id, request.rows
        )
        return pb.PreviewDatasetResponse(
            dataset_id=request.dataset_id, columns=columns, rows=[struct(r) for r in rows]
        )

    async def DeleteDataset(self, request, context):
        await self._service.delete_dataset(tenant_of(context), request.dataset_id)
        await set_http_status(context, 204)
        return empty_pb2.Empty()

    # --- tasks ---------------------------------------------------------------------------

    async def GetTask(self, request, context):
        return (await self._service.get_task(tenant_of(context), request.task_id)).to_proto()

    async def ListTasks(self, request, context):
        status = "" if not request.status else task_pb2.Task.Status.Name(request.status)
        page = await self._service.list_tasks(
            tenant_of(context),
            {"status": status, "kind": request.kind},
            request.skip,
            request.limit,
            request.page_token,
        )
        return pb.ListTasksResponse(
            tasks=[t.to_proto() for t in page.items],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def CancelTask(self, request, context):
        return (await self._service.cancel_task(tenant_of(context), request.task_id)).to_proto()
