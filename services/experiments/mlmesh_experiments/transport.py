"""gRPC servicer for mlmesh.experiments.v1.ExperimentService: protos in, service calls, protos
out; REST statuses are declared in the protos (mlmesh_common.http)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from mlmesh.experiments.v1 import experiment_pb2, experiments_service_pb2_grpc, run_pb2
from mlmesh.experiments.v1 import experiments_service_pb2 as pb
from mlmesh_common.compare import MetricDiff, ParamDiff
from mlmesh_common.idempotency import fingerprint, idempotency_key
from mlmesh_common.tenancy import tenant_of
from mlmesh_common.values import nullable
from mlmesh_experiments.entities import MetricPoint, MetricSeries, experiment_fields
from mlmesh_experiments.service import ExperimentsService, RunOverfitting

Response = TypeVar("Response", bound=Message)
_DIRECTIONS = {"maximize": pb.MetricDiff.MAXIMIZE, "minimize": pb.MetricDiff.MINIMIZE}


def _metric_diffs(diffs: dict[str, MetricDiff], runs: bool = False) -> dict:
    """Experiment-record diffs name their best `best_id`; run diffs `best_run_id`, as the
    tracking service's do."""
    message, best = (pb.RunMetricDiff, "best_run_id") if runs else (pb.MetricDiff, "best_id")
    return {
        key: message(
            values={i: nullable(v) for i, v in diff.values.items()},
            best_value=nullable(diff.best_value),
            direction=_DIRECTIONS[diff.direction],
            **{best: nullable(diff.best_id)},
        )
        for key, diff in diffs.items()
    }


def _param_diffs(diffs: dict[str, ParamDiff]) -> dict[str, pb.ParamDiff]:
    return {
        key: pb.ParamDiff(
            values={i: nullable(v) for i, v in diff.values.items()}, varies=diff.varies
        )
        for key, diff in diffs.items()
    }


def _overfitting_response(result: RunOverfitting) -> pb.ComputeRunOverfittingResponse:
    report, ppy = result.report, result.periods_per_year
    annual = math.sqrt(ppy)
    pbo = report.pbo
    return pb.ComputeRunOverfittingResponse(
        n_runs=report.n_trials,
        n_observations=report.n_observations,
        n_blocks=pbo.n_blocks,
        n_combinations=len(pbo.logits),
        **pbo.proto_fields(),
        runs=[
            pb.RunSharpe(run_id=run_id, sharpe=float(sharpe) * annual, psr=float(psr))
            for run_id, sharpe, psr in zip(result.run_ids, report.sharpe, report.psr, strict=True)
        ],
        best_run_id=result.run_ids[report.best],
        best_sharpe=float(report.sharpe[report.best]) * annual,
        sr0=report.sr0 * annual,
        dsr=report.dsr,
        metric_key=result.metric_key,
        periods_per_year=ppy,
    )


def _status_name(status: int) -> str:
    return "" if status == run_pb2.Run.STATUS_UNSPECIFIED else run_pb2.Run.Status.Name(status)


class ExperimentServicer(experiments_service_pb2_grpc.ExperimentServiceServicer):
    def __init__(self, service: ExperimentsService) -> None:
        self._service = service

    async def _once(
        self,
        context,
        request: Message,
        response_type: type[Response],
        write: Callable[[str], Awaitable[Response]],
    ) -> Response:
        """`write(tenant)`, or with an idempotency key, the first answer to that key: its writes
        and the answer commit together, and a retry gets the answer without writing again."""
        tenant = tenant_of(context)
        key = idempotency_key(context)
        if key is None:
            return await write(tenant)
        async with self._service.idempotent(tenant, key, fingerprint(request)) as call:
            if call.stored is not None:
                return response_type.FromString(call.stored)
            response = await write(tenant)
            call.response = response.SerializeToString()
            return response

    # --- experiments ---------------------------------------------------------------------

    async def CreateExperiment(self, request, context):
        async def write(tenant):
            fields = experiment_fields(request.experiment)
            return (await self._service.create_experiment(tenant, fields)).to_proto()

        experiment = await self._once(context, request, experiment_pb2.Experiment, write)
        return experiment

    async def ListExperiments(self, request, context):
        page = await self._service.list_experiments(
            tenant_of(context),
            strategy_id=request.strategy_id,
            search=request.search,
            lifecycle_stage=request.lifecycle_stage,
            limit=request.limit,
            offset=request.offset or request.skip,
            page_token=request.page_token,
        )
        return pb.ListExperimentsResponse(
            experiments=[e.to_proto() for e in page.items],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def GetExperiment(self, request, context):
        experiment = await self._service.get_experiment(tenant_of(context), request.experiment_id)
        return experiment.to_proto()

    async def UpdateExperiment(self, request, context):
        async def write(tenant):
            experiment = await self._service.update_experiment(
                tenant,
                request.experiment_id,
                experiment_fields(request.experiment),
                list(request.update_mask.paths),
            )
            return experiment.to_proto()

        return await self._once(context, request, experiment_pb2.Experiment, write)

    async def DeleteExperiment(self, request, context):
        async def write(tenant):
            await self._service.delete_experiment(tenant, request.experiment_id)
            return empty_pb2.Empty()

        response = await self._once(context, request, empty_pb2.Empty, write)
        return response

    async def RestoreExperiment(self, request, context):
        async def write(tenant):
            experiment = await self._service.restore_experiment(tenant, request.experiment_id)
            return experiment.to_proto()

        return await self._once(context, request, experiment_pb2.Experiment, write)

    async def CompareExperiments(self, request, context):
        result = await self._service.compare_experiments(
            tenant_of(context), list(request.experiment_ids), list(request.maximize)
        )
        return pb.CompareExperimentsResponse(
            experiments=[e.to_proto() for e in result.experiments],
            metric_diff=_metric_diffs(result.metric_diff),
        )

    # --- runs ----------------------------------------------------------------------------

    async def CreateRun(self, request, context):
        async def write(tenant):
            run = await self._service.create_run(
                tenant, request.experiment_id, request.name, request.description, dict(request.tags)
            )
            return run.to_proto()

        run = await self._once(context, request, run_pb2.Run, write)
        return run

    async def ListRuns(self, request, context):
        page = await self._service.list_runs(
            tenant_of(context),
            experiment_id=request.experiment_id,
            status=_status_name(request.status),
            filter_text=request.filter,
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
            order_by=list(request.order_by),
            include_total=not request.HasField("include_total") or request.include_total,
        )
        response = pb.ListRunsResponse(total=page.total, next_page_token=page.next_page_token)
        add = response.runs.add
        for run in page.items:
            run.fill(add())
        return response

    async def GetRun(self, request, context):
        return (await self._service.get_run(tenant_of(context), request.run_id)).to_proto()

    async def LogMetrics(self, request, context):
        async def write(tenant):
            points = [
                MetricPoint(key, value, request.step, request.timestamp)
                for key, value in request.metrics.items()
            ]
            counts = await self._service.log_batch(tenant, request.run_id, metrics=points)
            return pb.LogMetricsResponse(run_id=request.run_id, metrics_logged=counts.metrics)

        return await self._once(context, request, pb.LogMetricsResponse, write)

    async def LogParams(self, request, context):
        async def write(tenant):
            counts = await self._service.log_batch(
                tenant, request.run_id, params=list(request.params.items())
            )
            return pb.LogParamsResponse(run_id=request.run_id, params_logged=counts.params)

        return await self._once(context, request, pb.LogParamsResponse, write)

    async def LogBatch(self, request, context):
        async def write(tenant):
            counts = await self._service.log_batch(
                tenant,
                request.run_id,
                metrics=[MetricPoint(m.key, m.value, m.step, m.timestamp) for m in request.metrics],
                params=[(p.key, p.value) for p in request.params],
                tags=[(t.key, t.value) for t in request.tags],
                series=[
                    MetricSeries(s.key, s.values, s.steps, s.timestamps) for s in request.series
                ],
            )
            return pb.LogBatchResponse(
                run_id=request.run_id,
                metrics_logged=counts.metrics,
                params_logged=counts.params,
                tags_logged=counts.tags,
            )

        return await self._once(context, request, pb.LogBatchResponse, write)

    async def LogArtifact(self, request, context):
        async def write(tenant):
            record = await self._service.log_artifact(
                tenant,
                request.run_id,
                request.artifact_path,
                request.upload.content_type,
                request.upload.data,
            )
            artifact = run_pb2.Artifact(
                path=record.path,
                size_bytes=record.size_bytes,
                sha256=record.sha256,
                uri=record.uri,
            )
            return pb.LogArtifactResponse(run_id=request.run_id, artifact=artifact)

        return await self._once(context, request, pb.LogArtifactResponse, write)

    async def ListArtifacts(self, request, context):
        listing = await self._service.list_artifacts(
            tenant_of(context), request.run_id, request.path
        )
        artifacts = []
        for entry in listing.entries:
            record = listing.records.get(entry.path)
            artifacts.append(
                run_pb2.Artifact(
                    path=entry.path,
                    size_bytes=entry.size_bytes,
                    is_dir=entry.is_dir,
                    sha256=record.sha256 if record else "",
                    uri=f"{listing.root_uri}/{entry.path}",
                )
            )
        return pb.ListArtifactsResponse(
            run_id=request.run_id, root_uri=listing.root_uri, artifacts=artifacts
        )

    async def DownloadArtifact(self, request, context):
        data, content_type = await self._service.download_artifact(
            tenant_of(context), request.run_id, request.path
        )
        return httpbody_pb2.HttpBody(content_type=content_type, data=data)

    async def GetMetricHistory(self, request, context):
        points, total = await self._service.metric_history(
            tenant_of(context),
            request.run_id,
            request.key,
            request.max_points,
            request.start_step if request.HasField("start_step") else None,
            request.end_step if request.HasField("end_step") else None,
        )
        response = pb.GetMetricHistoryResponse(
            run_id=request.run_id, key=request.key, total_points=total
        )
        add = response.points.add  # far cheaper than a list of messages
        for step, timestamp, value in points:
            add(step=step, value=value, timestamp=timestamp)
        return response

    async def EndRun(self, request, context):
        async def write(tenant):
            run = await self._service.end_run(tenant, request.run_id, _status_name(request.status))
            return run.to_proto()

        return await self._once(context, request, run_pb2.Run, write)

    async def CompareRuns(self, request, context):
        result = await self._service.compare_runs(
            tenant_of(context),
            list(request.run_ids),
            list(request.metrics),
            list(request.maximize),
        )
        return pb.CompareRunsResponse(
            runs=[
                pb.ComparedRun(
                    run_id=r.id,
                    name=r.name,
                    experiment_id=r.experiment_id,
                    status=run_pb2.Run.Status.Value(r.status),
                    params=r.params,
                    metrics=r.metrics,
                )
                for r in result.runs
            ],
            metric_diff=_metric_diffs(result.metric_diff, runs=True),
            param_diff=_param_diffs(result.param_diff),
        )

    async def ComputeRunOverfitting(self, request, context):
        result = await self._service.run_overfitting(
            tenant_of(context),
            run_ids=list(request.run_ids),
            experiment_id=request.experiment_id,
            filter_text=request.filter,
            metric_key=request.metric_key,
            n_blocks=request.n_blocks if request.HasField("n_blocks") else None,
            periods_per_year=(
                request.periods_per_year if request.HasField("periods_per_year") else None
            ),
        )
        return _overfitting_response(result)
