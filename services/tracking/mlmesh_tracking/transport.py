"""gRPC servicer for mlmesh.tracking.v1.TrackingService: protos in, domain calls, protos out."""

from __future__ import annotations

import grpc

from mlmesh.tracking.v1 import run_pb2, tracking_service_pb2_grpc
from mlmesh.tracking.v1 import tracking_service_pb2 as pb
from mlmesh_common.compare import MetricDiff, ParamDiff
from mlmesh_common.tenancy import tenant_of
from mlmesh_common.values import nullable
from mlmesh_tracking.service import TrackingService

_DIRECTIONS = {"maximize": pb.MetricDiff.MAXIMIZE, "minimize": pb.MetricDiff.MINIMIZE}


def _metric_diff_proto(diff: MetricDiff) -> pb.MetricDiff:
    return pb.MetricDiff(
        values={k: nullable(v) for k, v in diff.values.items()},
        best_run_id=nullable(diff.best_id),
        best_value=nullable(diff.best_value),
        direction=_DIRECTIONS[diff.direction],
    )


def _param_diff_proto(diff: ParamDiff) -> pb.ParamDiff:
    return pb.ParamDiff(values={k: nullable(v) for k, v in diff.values.items()}, varies=diff.varies)


class TrackingServicer(tracking_service_pb2_grpc.TrackingServiceServicer):
    def __init__(self, service: TrackingService) -> None:
        self._service = service

    async def ListRuns(self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext):
        status = "" if request.status == 0 else run_pb2.Run.Status.Name(request.status)
        page = await self._service.search_runs(
            tenant_of(context),
            run_type=request.run_type,
            strategy_id=request.strategy_id,
            experiment_id=request.experiment_id,
            status=status,
            user_filter=request.filter,
            order_by=list(request.order_by),
            limit=request.limit,
            page_token=request.page_token,
        )
        return pb.ListRunsResponse(
            runs=[run.to_summary_proto() for run in page.runs],
            count=len(page.runs),
            next_page_token=page.next_page_token,
        )

    async def GetRun(self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext):
        run = await self._service.get_run(tenant_of(context), request.run_id)
        return run.to_proto()

    async def GetRunMetrics(self, request, context):
        run = await self._service.get_run(tenant_of(context), request.run_id)
        return pb.GetRunMetricsResponse(run_id=run.run_id, metrics=run.metrics)

    async def GetRunParams(self, request, context):
        run = await self._service.get_run(tenant_of(context), request.run_id)
        return pb.GetRunParamsResponse(run_id=run.run_id, params=run.params)

    async def GetMetricHistory(self, request, context):
        history = await self._service.metric_history(
            tenant_of(context),
            request.run_id,
            request.key,
            request.max_points,
            request.start_step if request.HasField("start_step") else None,
            request.end_step if request.HasField("end_step") else None,
        )
        return pb.GetMetricHistoryResponse(
            run_id=request.run_id,
            key=request.key,
            points=[point.to_proto() for point in history.points],
            total_points=history.total_points,
        )

    async def CompareRuns(self, request, context):
        comparison = await self._service.compare_runs(
            tenant_of(context), list(request.run_ids), list(request.maximize)
        )
        return pb.CompareRunsResponse(
            runs=[
                pb.ComparedRun(
                    run_id=run.run_id,
                    run_name=run.run_name,
                    run_type=run.run_type,
                    params=run.params,
                    metrics=run.metrics,
                )
                for run in comparison.runs
            ],
            metric_diff={k: _metric_diff_proto(d) for k, d in comparison.metric_diff.items()},
            param_diff={k: _param_diff_proto(d) for k, d in comparison.param_diff.items()},
        )

    async def ListExperiments(self, request, context):
        experiments = await self._service.list_experiments()
        return pb.ListExperimentsResponse(experiments=[e.to_proto() for e in experiments])
