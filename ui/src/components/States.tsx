import type { ReactNode } from "react";
import { ApiError } from "../api/client";
import { errorMessage, text } from "../lib/text";

/** An API error as the google.rpc.Status message the gateway answered. */
export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const message = errorMessage(error);
  const status = error instanceof ApiError ? error.status : 0;
  return (
    <div className="error" role="alert" data-status={status}>
      {status === 404 ? "Not found: " : ""}
      {message}
    </div>
  );
}

export function Loading({ what = "" }: { what?: string }) {
  return <div className="loading" aria-busy="true">Loading{what ? ` ${what}` : ""}…</div>;
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

/** Loading, error or the content of one query. */
export function QueryState({
  isLoading,
  error,
  children,
}: {
  isLoading: boolean;
  error: unknown;
  children: ReactNode;
}) {
  if (error) return <ErrorBox error={error} />;
  if (isLoading) return <Loading />;
  return <>{children}</>;
}

export function KeyValues({ values }: { values: Record<string, unknown> | undefined }) {
  const entries = Object.entries(values ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (entries.length === 0) return <Empty>none</Empty>;
  return (
    <table className="kv">
      <tbody>
        {entries.map(([key, value]) => (
          <tr key={key}>
            <th>{key}</th>
            <td>{text(value)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
