// The two run APIs behind the same components: the experiments registry and the tracking
// façade over MLflow. Each adapter turns its responses into the shapes the views draw.
import { api, unwrap } from "./client";
import { parsePoints, type Point } from "../lib/series";
import { toNumber } from "../lib/compare";
import { text } from "../lib/text";

export interface RunDetail {
  id: string;
  name: string;
  status: string;
  startTime: number | null;
  endTime: number | null;
  experimentId: string;
  artifactUri: string;
  params: Record<string, string>;
  tags: Record<string, string>;
  metrics: Record<string, number | null>;
}

export interface History {
  points: Point[];
  total: number;
}

export interface CompareResult {
  runs: { id: string; name: string }[];
  metricDiff: Record<
    string,
    { values: Record<string, number | null>; best: string | null; direction: string }
  >;
  paramDiff: Record<string, { values: Record<string, string | null>; varies: boolean }>;
}

export interface RunSource {
  key: "experiments" | "tracking";
  runPath: (id: string) => string;
  comparePath: (ids: string[]) => string;
  run: (id: string) => Promise<RunDetail>;
  history: (
    id: string,
    key: string,
    maxPoints: number,
    range: [number, number] | null,
  ) => Promise<History>;
  compare: (ids: string[]) => Promise<CompareResult>;
}

/** Chart resolution: about one point per pixel column, min/max buckets on the server. */
export const MAX_POINTS = 1000;

function numbers(values: Record<string, unknown> | undefined): Record<string, number | null> {
  return Object.fromEntries(Object.entries(values ?? {}).map(([k, v]) => [k, toNumber(v)]));
}

function rangeQuery(range: [number, number] | null) {
  return range
    ? { start_step: String(Math.floor(range[0])), end_step: String(Math.ceil(range[1])) }
    : {};
}

/** A metric's history from either API: both take the same query and answer the same shape. */
function historyLoader(
  path:
    | "/api/v1/experiments/runs/{run_id}/metrics/{key}/history"
    | "/api/v1/tracking/runs/{run_id}/metrics/{key}/history",
): RunSource["history"] {
  return async (id, key, maxPoints, range) => {
    const response = await unwrap(
      api.GET(path, {
        params: {
          path: { run_id: id, key },
          query: { max_points: maxPoints, ...rangeQuery(range) },
        },
      }),
    );
    return { points: parsePoints(response.points), total: Number(response.total_points ?? 0) };
  };
}

/** Epoch milliseconds of an RFC 3339 timestamp or of an int64 of milliseconds (proto3 JSON
 * prints those as strings of digits); null when unset. */
export function epoch(value: string | number | null | undefined): number | null {
  if (value === null || value === undefined || value === "") return null;
  const number =
    typeof value === "number" || /^-?\d+$/.test(value) ? Number(value) : Date.parse(value);
  return Number.isFinite(number) && number > 0 ? number : null;
}

type DiffEntry = {
  values?: Record<string, unknown>;
  best_run_id?: unknown;
  direction?: string;
};

function diffs(
  metricDiff: Record<string, DiffEntry> | undefined,
  paramDiff: Record<string, { values?: Record<string, unknown>; varies?: boolean }> | undefined,
): Pick<CompareResult, "metricDiff" | "paramDiff"> {
  return {
    metricDiff: Object.fromEntries(
      Object.entries(metricDiff ?? {}).map(([key, entry]) => [
        key,
        {
          values: numbers(entry.values),
          // The API's winner in the metric's direction; the UI never recomputes it.
          best: typeof entry.best_run_id === "string" ? entry.best_run_id : null,
          direction: entry.direction ?? "",
        },
      ]),
    ),
    paramDiff: Object.fromEntries(
      Object.entries(paramDiff ?? {}).map(([key, entry]) => [
        key,
        {
          values: Object.fromEntries(
            Object.entries(entry.values ?? {}).map(([id, v]) => [id, v == null ? null : text(v)]),
          ),
          varies: Boolean(entry.varies),
        },
      ]),
    ),
  };
}

export const experimentsSource: RunSource = {
  key: "experiments",
  runPath: (id) => `/runs/${encodeURIComponent(id)}`,
  comparePath: (ids) => `/compare?runs=${ids.map(encodeURIComponent).join(",")}`,
  async run(id) {
    const run = await unwrap(
      api.GET("/api/v1/experiments/runs/{run_id}", { params: { path: { run_id: id } } }),
    );
    return {
      id: run.id ?? id,
      name: run.name ?? "",
      status: String(run.status ?? ""),
      startTime: epoch(run.start_time),
      endTime: epoch(run.end_time),
      experimentId: run.experiment_id ?? "",
      artifactUri: run.artifact_uri ?? "",
      params: run.params ?? {},
      tags: run.tags ?? {},
      metrics: numbers(run.metrics),
    };
  },
  history: historyLoader("/api/v1/experiments/runs/{run_id}/metrics/{key}/history"),
  async compare(ids) {
    const response = await unwrap(
      api.POST("/api/v1/experiments/runs/compare", { body: { run_ids: ids } }),
    );
    return {
      runs: (response.runs ?? []).map((r) => ({ id: r.run_id ?? "", name: r.name ?? "" })),
      ...diffs(response.metric_diff, response.param_diff),
    };
  },
};

export const trackingSource: RunSource = {
  key: "tracking",
  runPath: (id) => `/tracking/runs/${encodeURIComponent(id)}`,
  comparePath: (ids) => `/tracking/compare?runs=${ids.map(encodeURIComponent).join(",")}`,
  async run(id) {
    const run = await unwrap(
      api.GET("/api/v1/tracking/runs/{run_id}", { params: { path: { run_id: id } } }),
    );
    return {
      id: run.run_id ?? id,
      name: run.run_name ?? "",
      status: String(run.status ?? ""),
      startTime: epoch(run.start_time),
      endTime: epoch(run.end_time as string | undefined),
      experimentId: "",
      artifactUri: run.artifact_uri ?? "",
      params: run.params ?? {},
      tags: run.tags ?? {},
      metrics: numbers(run.metrics),
    };
  },
  history: historyLoader("/api/v1/tracking/runs/{run_id}/metrics/{key}/history"),
  async compare(ids) {
    const response = await unwrap(
      api.POST("/api/v1/tracking/runs/compare", { body: { run_ids: ids } }),
    );
    return {
      runs: (response.runs ?? []).map((r) => ({ id: r.run_id ?? "", name: r.run_name ?? "" })),
      ...diffs(response.metric_diff, response.param_diff),
    };
  },
};
