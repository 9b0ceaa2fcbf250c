// One run: status, times, params, tags, latest metrics, artifacts and history charts.
import { useQuery, type QueryClient } from "@tanstack/react-query";
import type { ReactNode } from "react";
import { Link, useParams } from "react-router-dom";
import { ApiError } from "../api/client";
import type { RunSource } from "../api/sources";
import { formatValue } from "../lib/columns";
import { readList, useUrlState } from "../lib/url";
import { ChartControls, MetricCharts, prefetchHistories } from "./MetricCharts";
import { Empty, ErrorBox, KeyValues, Loading } from "./States";

export const LIVE_MS = 5000;

export function formatTime(ms: number | null): string {
  return ms === null ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function runQuery(source: RunSource, id: string) {
  return { queryKey: [source.key, "run", id], queryFn: () => source.run(id) };
}

/** The requests of a run page, started from its URL before the app first renders (a deep link
 * or a reload): the run and the histories of the charts the URL names, side by side, under the
 * keys the page reads them by. */
export function prefetchRunPage(
  client: QueryClient,
  source: RunSource,
  id: string,
  params: URLSearchParams,
): void {
  void client.prefetchQuery(runQuery(source, id));
  prefetchHistories(client, source, [id], params);
}

export function RunView({ source, artifacts }: { source: RunSource; artifacts?: (id: string) => ReactNode }) {
  const { id = "" } = useParams();
  const [params, update] = useUrlState();
  const query = useQuery({
    ...runQuery(source, id),
    refetchInterval: (q) => (q.state.data?.status === "RUNNING" ? LIVE_MS : false),
  });
  if (query.error) {
    const notFound = query.error instanceof ApiError && query.error.status === 404;
    return (
      <section>
        <h1>{notFound ? "Run not found" : "Run"}</h1>
        <ErrorBox error={query.error} />
      </section>
    );
  }
  if (!query.data) return <Loading what="run" />;
  const run = query.data;
  const metricKeys = Object.keys(run.metrics).sort();
  const chosen = readList(params, "charts").filter((k) => metricKeys.includes(k));
  const keys = chosen.length > 0 ? chosen : metricKeys.slice(0, 4);
  const live = run.status === "RUNNING";
  const toggle = (key: string, on: boolean) =>
    update({ charts: on ? [...keys, key] : keys.filter((k) => k !== key) });
  return (
    <section className="run" data-testid="run" data-status={run.status}>
      <h1>
        {run.name || run.id} <span className={`status ${run.status}`}>{run.status}</span>
        {live && <span className="live" title={`refreshes every ${LIVE_MS / 1000} s`}> ● live</span>}
      </h1>
      <dl className="facts">
        <dt>id</dt>
        <dd>{run.id}</dd>
        {run.experimentId && (
          <>
            <dt>experiment</dt>
            <dd>
              <Link to={`/experiments/${run.experimentId}`}>{run.experimentId}</Link>
            </dd>
          </>
        )}
        <dt>started</dt>
        <dd>{formatTime(run.startTime)}</dd>
        <dt>ended</dt>
        <dd>{formatTime(run.endTime)}</dd>
        <dt>artifact root</dt>
        <dd>{run.artifactUri}</dd>
      </dl>
      <div className="columns">
        <div>
          <h2>Metrics (latest)</h2>
          {metricKeys.length === 0 ? (
            <Empty>no metrics</Empty>
          ) : (
            <table className="kv" data-testid="run-metrics">
              <tbody>
                {metricKeys.map((key) => (
                  <tr key={key}>
                    <th>
                      <label>
                        <input
                          type="checkbox"
                          aria-label={`chart ${key}`}
                          checked={keys.includes(key)}
                          onChange={(e) => toggle(key, e.target.checked)}
                        />{" "}
                        {key}
                      </label>
                    </th>
                    <td>{formatValue(run.metrics[key])}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <div>
          <h2>Params</h2>
          <KeyValues values={run.params} />
        </div>
        <div>
          <h2>Tags</h2>
          <KeyValues values={run.tags} />
        </div>
      </div>
      {artifacts?.(run.id)}
      <h2>History</h2>
      <ChartControls />
      {keys.length === 0 ? (
        <Empty>no metric to chart</Empty>
      ) : (
        <MetricCharts source={source} runs={[{ id: run.id, label: run.name || run.id }]} keys={keys} live={live} />
      )}
    </section>
  );
}
