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

/** The step range to re-query for a zoom on the time axis (seconds), from the points drawn
 * before it: the steps of the points inside the window, widened to the last point before it
 * and the first after it, so that the range holds every logged point of the window even where
 * the drawn points are a downsampled few. The API ranges over steps only (its pyramid of
 * buckets is by step), and steps grow with time in a history. Null without points to go by. */
export function timeToSteps(points: Point[], range: [number, number]): [number, number] | null {
  let low = Infinity;
  let high = -Infinity;
  let before: Point | null = null;
  let after: Point | null = null;
  for (const point of points) {
    const time = xOf(point, "time");
    if (time < range[0]) {
      if (!before || time > xOf(before, "time")) before = point;
    } else if (time > range[1]) {
      if (!after || time < xOf(after, "time")) after = point;
    } else {
      low = Math.min(low, point.step);
      high = Math.max(high, point.step);
    }
  }
  if (before) low = Math.min(low, before.step);
  if (after) high = Math.max(high, after.step);
  return low <= high ? [low, high] : null;
}

/** Aligns several series on the union of their x values (uPlot wants one x array); missing
 * values are null so lines do not invent points. */
export function align(series: { x: number[]; y: number[] }[]): (number | null)[][] {
  const xs = Array.from(new Set(series.flatMap((s) => s.x))).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = series.map((s) => {
    const column = new Array<number | null>(xs.length).fill(null);
    s.x.forEach((x, i) => {
      column[index.get(x)!] = Number.isFinite(s.y[i]) ? s.y[i] : null;
    });
    return column;
  });
  return [xs, ...columns];
}
