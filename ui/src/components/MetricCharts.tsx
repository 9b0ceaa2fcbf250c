// Metric-history charts with their settings in the URL: x axis (step or time), log scale,
// smoothing and zoom. A zoom re-queries its range at full resolution: a step range as it is, a
// time range as the steps it covers in each run's history (series.timeToSteps).
import { keepPreviousData, useQueries, type QueryClient } from "@tanstack/react-query";
import { MAX_POINTS, type RunSource } from "../api/sources";
import { readBool, readList, readRange, useUrlState } from "../lib/url";
import { timeToSteps, type Point } from "../lib/series";
import { ErrorBox } from "./States";
import { HistoryChart, type ChartSettings } from "./HistoryChart";

const NO_POINTS: Point[] = [];

export function readChartSettings(params: URLSearchParams): [ChartSettings, [number, number] | null] {
  const smoothing = Number(params.get("smooth") ?? 0);
  return [
    {
      axis: params.get("x") === "time" ? "time" : "step",
      log: readBool(params, "log"),
      smoothing: Number.isFinite(smoothing) ? Math.min(Math.max(smoothing, 0), 0.99) : 0,
    },
    readRange(params, "zoom"),
  ];
}

export function useChartSettings(): [ChartSettings, [number, number] | null] {
  const [params] = useUrlState();
  return readChartSettings(params);
}

export function ChartControls() {
  const [params, update] = useUrlState();
  const [settings, zoom] = useChartSettings();
  return (
    <div className="controls" data-testid="chart-controls">
      <label>
        x{" "}
        <select value={settings.axis} onChange={(e) => update({ x: e.target.value === "time" ? "time" : null, zoom: null })}>
          <option value="step">step</option>
          <option value="time">time</option>
        </select>
      </label>
      <label>
        <input type="checkbox" checked={settings.log} onChange={(e) => update({ log: e.target.checked })} /> log scale
      </label>
      <label>
        smoothing{" "}
        <input
          type="range"
          min={0}
          max={0.99}
          step={0.01}
          value={settings.smoothing}
          onChange={(e) => update({ smooth: Number(e.target.value) || null })}
        />{" "}
        {settings.smoothing.toFixed(2)}
      </label>
      {zoom && (
        <button type="button" onClick={() => update({ zoom: null })}>
          reset zoom
        </button>
      )}
      {params.get("zoom") && !zoom && <span className="error">invalid zoom in the URL</span>}
    </div>
  );
}

/** The query of one run's history of `key` over `range` (null: all of it) at the charts'
 * resolution: MetricCharts reads it, prefetchHistories starts it early, under one key. */
export function historyQuery(
  source: RunSource,
  id: string,
  key: string,
  range: [number, number] | null,
) {
  return {
    queryKey: [source.key, "history", id, key, range],
    queryFn: () => source.history(id, key, MAX_POINTS, range),
  };
}

/** Starts the history requests of the charts that `params` (the URL's query) names in
 * `charts=` for `runIds`, so that they run beside the run's request instead of after it: the
 * charts then find them in flight or cached. Each is the first query its chart makes: the zoom
 * as a step range, or the whole history (a time zoom's overview). A key the run lacks costs one
 * wasted request whose error is dropped (the charts never ask for it). */
export function prefetchHistories(
  client: QueryClient,
  source: RunSource,
  runIds: string[],
  params: URLSearchParams,
): void {
  const [settings, zoom] = readChartSettings(params);
  const range = settings.axis === "time" ? null : zoom;
  for (const key of readList(params, "charts")) {
    for (const id of runIds) void client.prefetchQuery(historyQuery(source, id, key, range));
  }
}

/** One chart per metric key; each overlays the histories of `runs`. */
export function MetricCharts({
  source,
  runs,
  keys,
  live,
}: {
  source: RunSource;
  runs: { id: string; label: string }[];
  keys: string[];
  live: boolean;
}) {
  const [, update] = useUrlState();
  const [settings, zoom] = useChartSettings();
  const pairs = keys.flatMap((key) => runs.map((run) => ({ key, run })));
  const history = (id: string, key: string, range: [number, number] | null) => ({
    ...historyQuery(source, id, key, range),
    refetchInterval: live ? 5000 : (false as const),
    // While a zoom re-queries, the previous points stay drawn.
    placeholderData: keepPreviousData,
  });
  // The API ranges over steps: a time zoom goes by each run's whole history (the same query
  // as the unzoomed chart's, usually cached) to find the steps it covers.
  const timeZoom = settings.axis === "time" ? zoom : null;
  const overviews = useQueries({
    queries: pairs.map(({ key, run }) => ({ ...history(run.id, key, null), enabled: !!timeZoom })),
  });
  const ranges = pairs.map((_, i) => {
    if (!timeZoom) return zoom;
    const points = overviews[i].data?.points;
    return points ? timeToSteps(points, timeZoom) : null;
  });
  const results = useQueries({
    queries: pairs.map(({ key, run }, i) => ({
      ...history(run.id, key, ranges[i]),
      enabled: !timeZoom || overviews[i].data !== undefined,
    })),
  });
  const onZoom = (next: [number, number] | null) =>
    update({ zoom: next ? next.map((v) => String(+v.toPrecision(12))) : null });
  return (
    <div className="charts">
      {keys.map((key) => {
        const mine = pairs
          .map((pair, i) => ({ pair, result: results[i] }))
          .filter(({ pair }) => pair.key === key);
        const error = mine.find(({ result }) => result.error)?.result.error;
        return (
          <div key={key}>
            {error ? <ErrorBox error={error} /> : null}
            <HistoryChart
              title={key}
              settings={settings}
              zoom={zoom}
              onZoom={onZoom}
              series={mine.map(({ pair, result }) => ({
                label: pair.run.label,
                points: result.data?.points ?? NO_POINTS,
              }))}
            />
          </div>
        );
      })}
    </div>
  );
}
