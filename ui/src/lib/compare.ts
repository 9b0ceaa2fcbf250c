// What the compare views show, from the API's comparison responses.

export interface MetricDiffLike {
  values?: Record<string, unknown>;
  best_value?: unknown;
  direction?: string;
}

export interface ParamDiffLike {
  values?: Record<string, string | null | undefined>;
  varies?: boolean;
}

/** Rows of a metric table: key, each id's value, and the id the API says is best. */
export interface MetricRow {
  key: string;
  values: Record<string, number | null>;
  best: string | null;
  direction: string;
}

/** One row per metric, sorted by key. `bestOf` reads the response's best id field (`best_run_id`
 * for runs, `best_id` for experiment records); the UI never recomputes the winner. */
export function metricRows<D extends MetricDiffLike>(
  diff: Record<string, D> | undefined,
  bestOf: (entry: D) => unknown,
): MetricRow[] {
  return Object.entries(diff ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, entry]) => ({
      key,
      values: Object.fromEntries(
        Object.entries(entry.values ?? {}).map(([id, value]) => [id, toNumber(value)]),
      ),
      best: typeof bestOf(entry) === "string" ? (bestOf(entry) as string) : null,
      direction: entry.direction ?? "",
    }));
}

/** Param rows sorted by key; with `onlyDiffering`, only those whose values vary. */
export function paramRows(
  diff: Record<string, ParamDiffLike> | undefined,
  onlyDiffering: boolean,
): { key: string; values: Record<string, string | null>; varies: boolean }[] {
  return Object.entries(diff ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, entry]) => ({
      key,
      values: Object.fromEntries(
        Object.entries(entry.values ?? {}).map(([id, value]) => [id, value ?? null]),
      ),
      varies: Boolean(entry.varies),
    }))
    .filter((row) => !onlyDiffering || row.varies);
}

/** Proto3 JSON prints NaN/Infinity as strings and may omit nulls. */
export function toNumber(value: unknown): number | null {
  if (typeof value === "number") return value;
  if (value === "NaN") return Number.NaN;
  if (value === "Infinity") return Number.POSITIVE_INFINITY;
  if (value === "-Infinity") return Number.NEGATIVE_INFINITY;
  return null;
}

export const MIN_COMPARE = 2;
export const MAX_COMPARE = 10;
