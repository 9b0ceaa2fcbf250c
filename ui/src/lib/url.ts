// View state lives in the URL's query string: a reload or a shared link restores it.
import { useCallback } from "react";
import { useSearchParams } from "react-router-dom";

export type Patch = Record<string, string | number | boolean | string[] | null | undefined>;

/** Applies `patch` to `params`: null, undefined, "", false and [] remove a key. */
export function applyPatch(params: URLSearchParams, patch: Patch): URLSearchParams {
  const next = new URLSearchParams(params);
  for (const [key, value] of Object.entries(patch)) {
    if (value === null || value === undefined || value === "" || value === false) {
      next.delete(key);
    } else if (Array.isArray(value)) {
      if (value.length === 0) next.delete(key);
      else next.set(key, value.join(","));
    } else {
      next.set(key, value === true ? "1" : String(value));
    }
  }
  return next;
}

export function readList(params: URLSearchParams, key: string): string[] {
  const raw = params.get(key);
  return raw ? raw.split(",").filter((item) => item !== "") : [];
}

export function readInt(params: URLSearchParams, key: string, fallback: number): number {
  const value = Number.parseInt(params.get(key) ?? "", 10);
  return Number.isFinite(value) && value >= 0 ? value : fallback;
}

export function readBool(params: URLSearchParams, key: string): boolean {
  return params.get(key) === "1";
}

/** A numeric range "a,b" (zoom), or null. */
export function readRange(params: URLSearchParams, key: string): [number, number] | null {
  const parts = readList(params, key).map(Number);
  if (parts.length !== 2 || !parts.every(Number.isFinite) || parts[0] >= parts[1]) return null;
  return [parts[0], parts[1]];
}

/** The query string as state; `update` replaces the history entry unless `push` is asked. */
export function useUrlState(): [URLSearchParams, (patch: Patch, push?: boolean) => void] {
  const [params, setParams] = useSearchParams();
  const update = useCallback(
    (patch: Patch, push = false) =>
      setParams((current) => applyPatch(current, patch), { replace: !push }),
    [setParams],
  );
  return [params, update];
}
