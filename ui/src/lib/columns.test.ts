import { describe, expect, it } from "vitest";
import { availableColumns, formatValue, orderBy, parseColumn } from "./columns";

describe("run columns", () => {
  it("parses column ids and rejects others", () => {
    expect(parseColumn("metrics.val_acc")).toEqual({ id: "metrics.val_acc", kind: "metrics", key: "val_acc" });
    expect(parseColumn("params.a.b")?.key).toBe("a.b");
    expect(parseColumn("attributes.x")).toBeNull();
    expect(parseColumn("metrics.")).toBeNull();
  });

  it("offers every key, metrics first, MLflow's system tags hidden", () => {
    const columns = availableColumns([
      { metrics: { b: 1 }, params: { lr: "1" }, tags: { "mlflow.user": "x", fold: "k" } },
      { metrics: { a: 2 } },
    ]);
    expect(columns.map((c) => c.id)).toEqual(["metrics.a", "metrics.b", "params.lr", "tags.fold"]);
  });

  it("writes MLflow order-by clauses, quoting odd keys", () => {
    expect(orderBy("metrics.sharpe", true)).toBe("metrics.sharpe DESC");
    expect(orderBy("params.my param", false)).toBe("params.`my param` ASC");
    expect(orderBy(null, true)).toBeUndefined();
  });

  it("formats numbers compactly", () => {
    expect(formatValue(3)).toBe("3");
    expect(formatValue(0.123456789)).toBe("0.123457");
    expect(formatValue(1.5e-7)).toBe("1.5000e-7");
    expect(formatValue(undefined)).toBe("");
  });
});
