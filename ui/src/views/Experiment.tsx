// One experiment: its record and its runs (server-side paged, filtered and sorted).
import { useQuery } from "@tanstack/react-query";
import { useParams } from "react-router-dom";
import { ApiError, api, unwrap } from "../api/client";
import { epoch, experimentsSource } from "../api/sources";
import { FilterBox, RunTable, type TableRun } from "../components/RunTable";
import { LIVE_MS } from "../components/RunView";
import { Empty, ErrorBox, KeyValues, Loading } from "../components/States";
import { orderBy } from "../lib/columns";
import { toNumber } from "../lib/compare";
import { readBool, readInt, useUrlState } from "../lib/url";
import { Pager } from "./Experiments";

export function ExperimentPage() {
  const { id = "" } = useParams();
  const [params, update] = useUrlState();
  const filter = params.get("filter") ?? "";
  const offset = readInt(params, "offset", 0);
  const limit = Math.min(readInt(params, "limit", 100) || 100, 1000);
  const status = params.get("status") ?? "";
  const order = orderBy(params.get("sort"), readBool(params, "desc"));
  const experiment = useQuery({
    queryKey: ["experiments", "one", id],
    queryFn: () => unwrap(api.GET("/api/v1/experiments/{experiment_id}", { params: { path: { experiment_id: id } } })),
  });
  const runs = useQuery({
    queryKey: ["experiments", "runs", id, filter, offset, limit, status, order],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/experiments/runs", {
          params: {
            query: {
              experiment_id: id,
              filter: filter || undefined,
              offset,
              limit,
              status: (status || undefined) as never,
              order_by: order ? [order] : undefined,
            },
          },
        }),
      ),
    placeholderData: (previous) => previous,
    refetchInterval: (q) =>
      q.state.data?.runs?.some((r) => String(r.status) === "RUNNING") ? LIVE_MS : false,
    retry: (count, error) => !(error instanceof ApiError && error.status < 500) && count < 2,
  });
  if (experiment.error) {
    return (
      <section>
        <h1>Experiment</h1>
        <ErrorBox error={experiment.error} />
      </section>
    );
  }
  if (!experiment.data) return <Loading what="experiment" />;
  const e = experiment.data;
  const rows: TableRun[] = (runs.data?.runs ?? []).map((run) => ({
    id: run.id ?? "",
    name: run.name ?? "",
    status: String(run.status ?? ""),
    startTime: epoch(run.start_time),
    params: run.params ?? {},
    tags: run.tags ?? {},
    metrics: Object.fromEntries(
      Object.entries(run.metrics ?? {}).map(([k, v]) => [k, toNumber(v) ?? Number.NaN]),
    ),
  }));
  const invalidFilter = runs.error instanceof ApiError && runs.error.status === 400 ? runs.error : null;
  return (
    <section data-testid="experiment">
      <h1>
        {e.name} {e.lifecycle_stage === "deleted" && <span className="badge">archived</span>}
      </h1>
      <details>
        <summary>Record</summary>
        <KeyValues
          values={{
            id: e.id,
            strategy_id: e.strategy_id,
            dataset_version: e.dataset_version,
            feature_version: e.feature_version,
            model_version: e.model_version,
            git_commit: e.git_commit,
            mlflow_run_id: e.mlflow_run_id,
            description: e.description,
            created_at: e.created_at,
          }}
        />
        <h3>Metrics</h3>
        <KeyValues values={e.metrics} />
      </details>
      <h2>Runs</h2>
      <div className="controls">
        <FilterBox error={invalidFilter} />
        <select aria-label="status" value={status} onChange={(ev) => update({ status: ev.target.value, offset: null })}>
          <option value="">any status</option>
          {["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"].map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
      </div>
      {runs.error && !invalidFilter ? <ErrorBox error={runs.error} /> : null}
      {!runs.data && !runs.error ? (
        <Loading what="runs" />
      ) : rows.length === 0 && !runs.error ? (
        <Empty>{filter ? "No run matches the filter." : "This experiment has no runs yet."}</Empty>
      ) : rows.length > 0 ? (
        <>
          <RunTable runs={rows} runPath={experimentsSource.runPath} comparePath={experimentsSource.comparePath} />
          <Pager
            offset={offset}
            page={limit}
            total={runs.data?.total ?? 0}
            onOffset={(o) => update({ offset: o || null })}
          />
        </>
      ) : null}
    </section>
  );
}
