// One uPlot canvas chart of one or more metric histories. The instance is kept across data
// refreshes (live RUNNING runs) so the zoom survives; drag-select zooms, double-click resets.
import { useEffect, useMemo, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { align, smooth, xOf, type Point } from "../lib/series";

export const COLORS = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

export interface ChartSeries {
  label: string;
  points: Point[];
}

export interface ChartSettings {
  axis: "step" | "time";
  log: boolean;
  smoothing: number;
}

export function HistoryChart({
  title,
  series,
  settings,
  zoom,
  onZoom,
  height = 240,
}: {
  title: string;
  series: ChartSeries[];
  settings: ChartSettings;
  zoom: [number, number] | null;
  onZoom: (range: [number, number] | null) => void;
  height?: number;
}) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const onZoomRef = useRef(onZoom);
  onZoomRef.current = onZoom;

  const data = useMemo(() => {
    const columns = series.map((s) => {
      const y = smooth(
        s.points.map((p) => p.value),
        settings.smoothing,
      );
      // A log scale cannot show values <= 0: they become gaps, not a broken axis.
      return {
        x: s.points.map((p) => xOf(p, settings.axis)),
        y: settings.log ? y.map((v) => (v > 0 ? v : Number.NaN)) : y,
      };
    });
    return align(columns) as uPlot.AlignedData;
  }, [series, settings.axis, settings.log, settings.smoothing]);

  // The chart's shape: a new instance only when it changes.
  const shape = `${settings.axis}|${settings.log}|${series.map((s) => s.label).join("\u0000")}`;
  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 300),
      height,
      scales: {
        x: { time: settings.axis === "time" },
        y: { distr: settings.log ? 3 : 1 },
      },
      series: [
        { label: settings.axis },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: true,
          // Dots where the view holds few points (a one-point series would be invisible).
          points: { show: (_u: uPlot, _s: number, i0: number, i1: number) => i1 - i0 < 60 },
        })),
      ],
      cursor: { drag: { x: true, y: false, setScale: false } },
      legend: { show: series.length > 1 },
      hooks: {
        // When the canvas last drew points (performance.now()): the browser benchmark's mark;
        // and the drawn x range, for tests and anyone inspecting the page (set here, where the
        // scales are final: a chart made with its data sets them on its first draw).
        draw: [
          (u) => {
            const figure = element.parentElement;
            if (!figure) return;
            if (u.data[0].length > 0) figure.dataset.drawnAt = String(performance.now());
            figure.dataset.xMin = String(u.scales.x.min);
            figure.dataset.xMax = String(u.scales.x.max);
          },
        ],
        setSelect: [
          (u) => {
            if (u.select.width > 3) {
              const min = u.posToVal(u.select.left, "x");
              const max = u.posToVal(u.select.left + u.select.width, "x");
              if (max > min) onZoomRef.current([min, max]);
            }
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          },
        ],
      },
    };
    const chart = new uPlot(options, data, element);
    plot.current = chart;
    const reset = () => onZoomRef.current(null);
    chart.over.addEventListener("dblclick", reset);
    const observer = new ResizeObserver(() =>
      chart.setSize({ width: Math.max(element.clientWidth, 300), height }),
    );
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.destroy();
      plot.current = null;
    };
    // Recreated on a new shape only; new data goes through setData below (the zoom stays).
    // eslint-disable-next-line react-hooks/exhaustive-deps -- the shape stands for its parts
  }, [shape, height]);

  useEffect(() => {
    const chart = plot.current;
    if (!chart) return;
    chart.setData(data, zoom === null);
    if (zoom) chart.setScale("x", { min: zoom[0], max: zoom[1] });
  }, [data, zoom, shape]);

  const total = series.reduce((sum, s) => sum + s.points.length, 0);
  return (
    <figure className="chart" data-chart={title} data-points={total}>
      <figcaption>
        {title}
        {zoom && (
          <button type="button" className="link" onClick={() => onZoom(null)}>
            reset zoom
          </button>
        )}
      </figcaption>
      {total === 0 && <div className="empty">no points</div>}
      <div ref={container} />
    </figure>
  );
}
