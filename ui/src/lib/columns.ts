// Run-table columns: "metrics.sharpe", "params.lr", "tags.model" (as in the filter language).
import { text } from "./text";

export type Kind = "metrics" | "params" | "tags";

export interface Column {
  id: string;
  kind: Kind;
  key: string;
}

export function parseColumn(id: string): Column | null {
  const dot = id.indexOf(".");
  const kind = id.slice(0, dot);
  const key = id.slice(dot + 1);
  if (dot < 0 || !key || !["metrics", "params", "tags"].includes(kind)) return null;
  return { id, kind: kind as Kind, key };
}

export interface RunLike {
  metrics?: Record<string, number | string>;
  params?: Record<string, string>;
  tags?: Record<string, string>;
}

export function cell(run: RunLike, column: Column): string | number | undefined {
  return run[column.kind]?.[column.key];
}

/** Every column the runs offer, metrics first, each kind sorted. */
export function availableColumns(runs: RunLike[]): Column[] {
  const seen: Record<Kind, Set<string>> = {
    metrics: new Set(),
    params: new Set(),
    tags: new Set(),
  };
  for (const run of runs) {
    for (const kind of ["metrics", "params", "tags"] as Kind[]) {
      for (const key of Object.keys(run[kind] ?? {})) {
        if (!key.startsWith("mlflow.")) seen[kind].add(key);
      }
    }
  }
  return (["metrics", "params", "tags"] as Kind[]).flatMap((kind) =>
    [...seen[kind]].sort().map((key) => ({ id: `${kind}.${key}`, kind, key })),
  );
}

/** The MLflow order-by clause for a sort column, e.g. `metrics.sharpe DESC`. */
export function orderBy(sort: string | null, desc: boolean): string | undefined {
  if (!sort) return undefined;
  const quoted = sort.replace(/^(metrics|params|tags|attributes)\.(.*[^\w.].*)$/, "$1.`$2`");
  return `${quoted} ${desc ? "DESC" : "ASC"}`;
}

export function formatValue(value: unknown): string {
  if (value === undefined || value === null) return "";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return String(value);
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(4) : value.toPrecision(6);
  }
  return text(value);
}
