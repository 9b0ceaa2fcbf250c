import { describe, expect, it } from "vitest";
import { align, parsePoints, smooth, timeToSteps } from "./series";

describe("series", () => {
  it("parses int64 strings and NaN", () => {
    expect(parsePoints([{ step: "3", value: "NaN", timestamp: "1700000000000" }])).toEqual([
      { step: 3, value: Number.NaN, timestamp: 1700000000000 },
    ]);
  });

  it("smooths with a debiased moving average and leaves NaN alone", () => {
    expect(smooth([1, 2, 3], 0)).toEqual([1, 2, 3]);
    const out = smooth([2, Number.NaN, 2, 2], 0.9);
    expect(out[0]).toBeCloseTo(2); // debiased: no pull towards 0 at the start
    expect(Number.isNaN(out[1])).toBe(true);
    expect(out[3]).toBeCloseTo(2);
    const step = smooth([0, 0, 0, 10], 0.5);
    expect(step[3]).toBeGreaterThan(0);
    expect(step[3]).toBeLessThan(10);
  });

  it("aligns series on the union of their x values with gaps as null", () => {
    expect(
      align([
        { x: [0, 2], y: [1, 3] },
        { x: [1, 2], y: [5, Number.NaN] },
      ]),
    ).toEqual([
      [0, 1, 2],
      [1, null, 3],
      [null, 5, null],
    ]);
  });

  it("maps a time zoom to the steps that hold every point of the window", () => {
    // Drawn points every 10 steps, one second apart: the logged points between them are
    // not drawn, so the range reaches the drawn neighbours outside the window.
    const points = [0, 1, 2, 3, 4].map((i) => ({ step: i * 10, value: i, timestamp: 1000 * i }));
    expect(timeToSteps(points, [1.5, 2.5])).toEqual([10, 30]);
    expect(timeToSteps(points, [1, 3])).toEqual([0, 40]);
    // Nothing drawn inside: still the steps between the neighbours.
    expect(timeToSteps(points, [1.2, 1.8])).toEqual([10, 20]);
    // Open at either end of the history.
    expect(timeToSteps(points, [-5, 0.5])).toEqual([0, 10]);
    expect(timeToSteps(points, [3.5, 99])).toEqual([30, 40]);
    expect(timeToSteps([], [0, 1])).toBeNull();
  });
});
