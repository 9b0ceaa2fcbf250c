// Metric-history series for the charts: x values, smoothing.

export interface Point {
  step: number;
  value: number;
  timestamp: number;
}

/** int64 fields arrive as strings of digits (proto3 JSON); values may be "NaN". */
export function parsePoints(
  raw: { step?: string | number; value?: number | string; timestamp?: string | number }[] | undefined,
): Point[] {
  return (raw ?? []).map((p) => ({
    step: Number(p.step ?? 0),
    value: typeof p.value === "number" ? p.value : Number(p.value),
    timestamp: Number(p.timestamp ?? 0),
  }));
}

/** Exponential moving average with bias correction (weight 0: unchanged). NaN points stay NaN
 * and do not disturb the average. */
export function smooth(values: number[], weight: number): number[] {
  if (weight <= 0) return values.slice();
  const w = Math.min(weight, 0.999);
  let last = 0;
  let count = 0;
  return values.map((value) => {
    if (!Number.isFinite(value)) return value;
    last = last * w + (1 - w) * value;
    count += 1;
    return last / (1 - w ** count);
  });
}

/** x of a point on the chosen axis: step, or wall time in seconds (uPlot's time scale). */
export function xOf(point: Point, axis: "step" | "time"): number {
  return axis === "step" ? point.step : point.timestamp / 1000;
}

/** The step range a zoom on the x axis covers (for re-querying it at full resolution). */
export function stepRange(
  points: Point[],
  axis: "step" | "time",
  range: [number, number],
): [number, number] | null {
  if (axis === "step") return [Math.floor(range[0]), Math.ceil(range[1])];
  const steps = points
    .filter((p) => xOf(p, axis) >= range[0] && xOf(p, axis) <= range[1])
    .map((p) => p.step);
  if (steps.length === 0) return null;
  return [Math.min(...steps), Math.max(...steps)];
}

/** Aligns several series on the union of their x values (uPlot wants one x array); missing
 * values are null so lines do not invent points. */
export function align(series: { x: number[]; y: number[] }[]): (number | null)[][] {
  const xs = Array.from(new Set(series.flatMap((s) => s.x))).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = series.map((s) => {
    const column: (number | null)[] = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => {
      column[index.get(x)!] = Number.isFinite(s.y[i]) ? s.y[i] : null;
    });
    return column;
  });
  return [xs, ...columns];
}
