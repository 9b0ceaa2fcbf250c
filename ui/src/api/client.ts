// The API client: typed by the OpenAPI document the gateway serves (openapi-typescript), the
// same origin as the UI; the tenant or token of the session rides on every request.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Experiment = Schemas["mlmesh.experiments.v1.Experiment"];
export type Run = Schemas["mlmesh.experiments.v1.Run"];
export type TrackingRun = Schemas["mlmesh.tracking.v1.Run"];
export type TrackingRunSummary = Schemas["mlmesh.tracking.v1.RunSummary"];

const TENANT_KEY = "mlmesh.tenant";
const TOKEN_KEY = "mlmesh.token";

export interface Credentials {
  tenant: string;
  token: string;
}

export function loadCredentials(): Credentials {
  return {
    tenant: localStorage.getItem(TENANT_KEY) ?? "",
    token: sessionStorage.getItem(TOKEN_KEY) ?? "",
  };
}

let credentials: Credentials = { tenant: "", token: "" };

export function setCredentials(next: Credentials): void {
  credentials = next;
  if (next.tenant) localStorage.setItem(TENANT_KEY, next.tenant);
  else localStorage.removeItem(TENANT_KEY);
  if (next.token) sessionStorage.setItem(TOKEN_KEY, next.token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The session's headers: with auth on, the gateway takes the tenant from the token and
 * drops x-tenant-id. */
export function authHeaders(): Record<string, string> {
  if (credentials.token) return { authorization: `Bearer ${credentials.token}` };
  if (credentials.tenant) return { "x-tenant-id": credentials.tenant };
  return {};
}

const auth: Middleware = {
  onRequest({ request }) {
    for (const [name, value] of Object.entries(authHeaders())) request.headers.set(name, value);
    return request;
  },
};

export const api = createClient<paths>({ baseUrl: "" });
api.use(auth);

/** An API error: the google.rpc.Status the gateway answered, with its HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason: string = "",
  ) {
    super(message);
  }
}

type Status = Schemas["google.rpc.Status"];

export function toApiError(status: number, body: unknown): ApiError {
  const rpc = (typeof body === "object" && body !== null ? body : {}) as Status;
  const info = (rpc.details ?? []).find((d) => String(d["@type"] ?? "").endsWith("ErrorInfo"));
  const reason = String((info as { reason?: string } | undefined)?.reason ?? "");
  let message = rpc.message || (typeof body === "string" && body) || `HTTP ${status}`;
  if (status === 401) message = `401 Unauthenticated: ${message} (set a valid token)`;
  return new ApiError(status, message, reason);
}

/** The data of an openapi-fetch call, or its error thrown as ApiError. */
export async function unwrap<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw toApiError(response.status, error);
  return data as T;
}
