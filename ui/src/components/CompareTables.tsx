// Side-by-side comparison of 2..10 runs: metrics with the API's best per metric highlighted,
// params with `varies` and an "only differing" toggle, an overlaid history chart.
import { useQuery } from "@tanstack/react-query";
import { Link } from "react-router-dom";
import type { RunSource } from "../api/sources";
import { MAX_COMPARE, MIN_COMPARE, paramRows } from "../lib/compare";
import { formatValue } from "../lib/columns";
import { readBool, readList, useUrlState } from "../lib/url";
import { ChartControls, MetricCharts } from "./MetricCharts";
import { Empty, ErrorBox, Loading } from "./States";

export function CompareView({ source }: { source: RunSource }) {
  const [params, update] = useUrlState();
  const ids = readList(params, "runs");
  const onlyDiffering = readBool(params, "diff");
  const valid = ids.length >= MIN_COMPARE && ids.length <= MAX_COMPARE;
  const query = useQuery({
    queryKey: [source.key, "compare", ids],
    queryFn: () => source.compare(ids),
    enabled: valid,
  });
  if (!valid) {
    return (
      <Empty>
        Select {MIN_COMPARE} to {MAX_COMPARE} runs to compare (the URL&apos;s <code>runs</code> lists{" "}
        {ids.length}).
      </Empty>
    );
  }
  if (query.error) return <ErrorBox error={query.error} />;
  if (!query.data) return <Loading what="comparison" />;
  const result = query.data;
  const runs = result.runs;
  const metricKeys = Object.keys(result.metricDiff).sort();
  const chartMetric = params.get("metric") ?? metricKeys[0] ?? "";
  const names = Object.fromEntries(runs.map((r) => [r.id, r.name || r.id.slice(0, 8)]));
  const params_ = paramRows(result.paramDiff, onlyDiffering);
  return (
    <section className="compare" data-testid="compare">
      <h1>Compare {runs.length} runs</h1>
      <h2>Metrics</h2>
      <table className="grid" data-testid="compare-metrics">
        <thead>
          <tr>
            <th>metric</th>
            <th>direction</th>
            {runs.map((run) => (
              <th key={run.id} data-run-id={run.id}>
                <Link to={source.runPath(run.id)}>{names[run.id]}</Link>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {metricKeys.map((key) => {
            const diff = result.metricDiff[key];
            return (
              <tr key={key} data-metric={key}>
                <th>{key}</th>
                <td>{diff.direction.toLowerCase()}</td>
                {runs.map((run) => (
                  <td
                    key={run.id}
                    data-run-id={run.id}
                    className={diff.best === run.id ? "best" : ""}
                    title={diff.best === run.id ? "best" : undefined}
                  >
                    {formatValue(diff.values[run.id])}
                  </td>
                ))}
              </tr>
            );
          })}
        </tbody>
      </table>
      <h2>
        Params{" "}
        <label className="toggle">
          <input
            type="checkbox"
            data-testid="only-differing"
            checked={onlyDiffering}
            onChange={(e) => update({ diff: e.target.checked })}
          />{" "}
          only differing
        </label>
      </h2>
      {params_.length === 0 ? (
        <Empty>{onlyDiffering ? "no param differs" : "no params"}</Empty>
      ) : (
        <table className="grid" data-testid="compare-params">
          <thead>
            <tr>
              <th>param</th>
              {runs.map((run) => (
                <th key={run.id}>{names[run.id]}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {params_.map((row) => (
              <tr key={row.key} data-param={row.key} className={row.varies ? "varies" : ""}>
                <th>
                  {row.key} {row.varies && <span className="badge">varies</span>}
                </th>
                {runs.map((run) => (
                  <td key={run.id}>{row.values[run.id] ?? "—"}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>
        History{" "}
        <select
          aria-label="metric to chart"
          value={chartMetric}
          onChange={(e) => update({ metric: e.target.value, zoom: null })}
        >
          {metricKeys.map((key) => (
            <option key={key}>{key}</option>
          ))}
        </select>
      </h2>
      <ChartControls />
      {chartMetric && (
        <MetricCharts
          source={source}
          runs={runs.map((r) => ({ id: r.id, label: names[r.id] }))}
          keys={[chartMetric]}
          live={false}
        />
      )}
    </section>
  );
}
