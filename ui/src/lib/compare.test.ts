import { describe, expect, it } from "vitest";
import { metricRows, paramRows, toNumber } from "./compare";

describe("comparison tables", () => {
  it("takes the best from the API's field, never recomputing it", () => {
    const rows = metricRows(
      {
        sharpe: { values: { a: 1.2, b: 1.9 }, best_run_id: "b", direction: "MAXIMIZE" },
        loss: { values: { a: 0.1, b: "NaN" }, best_run_id: "a", direction: "MINIMIZE" },
        none: { values: { a: null, b: null }, best_run_id: null, direction: "MINIMIZE" },
      },
      (entry) => entry.best_run_id,
    );
    expect(rows.map((r) => [r.key, r.best])).toEqual([
      ["loss", "a"],
      ["none", null],
      ["sharpe", "b"],
    ]);
    expect(Number.isNaN(rows[0].values.b)).toBe(true);
  });

  it("only differing keeps the params that vary", () => {
    const diff = {
      lr: { values: { a: "0.1", b: "0.01" }, varies: true },
      model: { values: { a: "lgbm", b: "lgbm" }, varies: false },
      seed: { values: { a: "1", b: null }, varies: true },
    };
    expect(paramRows(diff, false).map((r) => r.key)).toEqual(["lr", "model", "seed"]);
    expect(paramRows(diff, true).map((r) => r.key)).toEqual(["lr", "seed"]);
  });

  it("reads proto3 JSON numbers", () => {
    expect(toNumber(1.5)).toBe(1.5);
    expect(toNumber("Infinity")).toBe(Infinity);
    expect(toNumber(null)).toBeNull();
    expect(toNumber("abc")).toBeNull();
  });
});
