// The tracking façade (MLflow runs): runs by run_type and strategy_id with the same table,
// run view and comparison as the registry.
import { useQuery } from "@tanstack/react-query";
import { ApiError, api, unwrap } from "../api/client";
import { epoch, trackingSource } from "../api/sources";
import { FilterBox, RunTable, type TableRun } from "../components/RunTable";
import { LIVE_MS } from "../components/RunView";
import { Empty, ErrorBox, Loading } from "../components/States";
import { orderBy } from "../lib/columns";
import { toNumber } from "../lib/compare";
import { readBool, readList, useUrlState } from "../lib/url";

export function TrackingPage() {
  const [params, update] = useUrlState();
  const runType = params.get("run_type") ?? "";
  const strategy = params.get("strategy") ?? "";
  const filter = params.get("filter") ?? "";
  const order = orderBy(params.get("sort"), readBool(params, "desc"));
  // Page tokens are opaque: the URL keeps the trail of them so "previous" and reloads work.
  const trail = readList(params, "pages");
  const token = trail[trail.length - 1] ?? "";
  const runs = useQuery({
    queryKey: ["tracking", "runs", runType, strategy, filter, order, token],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/tracking/runs", {
          params: {
            query: {
              run_type: runType || undefined,
              strategy_id: strategy || undefined,
              filter: filter || undefined,
              order_by: order ? [order] : undefined,
              limit: 100,
              page_token: token || undefined,
            },
          },
        }),
      ),
    placeholderData: (previous) => previous,
    refetchInterval: (q) =>
      q.state.data?.runs?.some((r) => String(r.status) === "RUNNING") ? LIVE_MS : false,
    retry: (count, error) => !(error instanceof ApiError && error.status < 500) && count < 2,
  });
  const rows: TableRun[] = (runs.data?.runs ?? []).map((run) => ({
    id: run.run_id ?? "",
    name: run.run_name ?? "",
    status: String(run.status ?? ""),
    startTime: epoch(run.start_time),
    params: run.params ?? {},
    tags: run.tags ?? {},
    metrics: Object.fromEntries(
      Object.entries(run.metrics ?? {}).map(([k, v]) => [k, toNumber(v) ?? Number.NaN]),
    ),
  }));
  const invalid = runs.error instanceof ApiError && runs.error.status === 400 ? runs.error : null;
  const next = runs.data?.next_page_token ?? "";
  return (
    <section data-testid="tracking">
      <h1>Tracking runs (MLflow)</h1>
      <div className="controls">
        <input
          aria-label="run type"
          placeholder="run_type (training, backtest…)"
          defaultValue={runType}
          onKeyDown={(e) => e.key === "Enter" && update({ run_type: e.currentTarget.value.trim(), pages: null })}
        />
        <input
          aria-label="strategy filter"
          placeholder="strategy_id"
          defaultValue={strategy}
          onKeyDown={(e) => e.key === "Enter" && update({ strategy: e.currentTarget.value.trim(), pages: null })}
        />
        <FilterBox error={invalid} />
      </div>
      {runs.error && !invalid ? <ErrorBox error={runs.error} /> : null}
      {!runs.data && !runs.error ? (
        <Loading what="runs" />
      ) : rows.length === 0 && !runs.error ? (
        <Empty>No MLflow run matches.</Empty>
      ) : rows.length > 0 ? (
        <>
          <RunTable runs={rows} runPath={trackingSource.runPath} comparePath={trackingSource.comparePath} />
          <div className="pager">
            <button type="button" disabled={trail.length === 0} onClick={() => update({ pages: trail.slice(0, -1) })}>
              ‹ previous
            </button>
            <span>page {trail.length + 1}</span>
            <button type="button" disabled={!next} onClick={() => update({ pages: [...trail, next] })}>
              next ›
            </button>
          </div>
        </>
      ) : null}
    </section>
  );
}
