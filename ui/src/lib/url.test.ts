import { describe, expect, it } from "vitest";
import { applyPatch, readBool, readInt, readList, readRange } from "./url";

describe("URL state", () => {
  it("sets, lists and removes keys", () => {
    const next = applyPatch(new URLSearchParams("q=a&offset=50"), {
      q: "",
      sel: ["r1", "r2"],
      diff: true,
      offset: null,
      smooth: 0.6,
    });
    expect(next.toString()).toBe("sel=r1%2Cr2&diff=1&smooth=0.6");
    expect(readList(next, "sel")).toEqual(["r1", "r2"]);
    expect(readBool(next, "diff")).toBe(true);
    expect(applyPatch(next, { sel: [], diff: false }).toString()).toBe("smooth=0.6");
  });

  it("reads integers and ranges defensively", () => {
    const params = new URLSearchParams("offset=-3&limit=x&zoom=10,2&ok=1.5,9");
    expect(readInt(params, "offset", 0)).toBe(0);
    expect(readInt(params, "limit", 100)).toBe(100);
    expect(readRange(params, "zoom")).toBeNull();
    expect(readRange(params, "ok")).toEqual([1.5, 9]);
    expect(readRange(params, "missing")).toBeNull();
  });
});
