import { describe, expect, it } from "vitest";
import { epoch } from "./sources";

describe("timestamps", () => {
  it("reads RFC 3339 and int64 milliseconds alike", () => {
    expect(epoch("2026-12-01T15:58:37.250Z")).toBe(Date.UTC(2026, 11, 1, 15, 58, 37, 250));
    expect(epoch("1700000000000")).toBe(1700000000000);
    expect(epoch(1700000000000)).toBe(1700000000000);
    expect(epoch("2024")).toBe(2024);
    expect(epoch("0")).toBeNull();
    expect(epoch(undefined)).toBeNull();
    expect(epoch("not a time")).toBeNull();
  });
});
