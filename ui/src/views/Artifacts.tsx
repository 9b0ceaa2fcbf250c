// A run's artifacts: the list, and downloads fetched with the session's tenant or token (a
// plain link would not carry them).
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { useUrlState } from "../lib/url";
import { api, authHeaders, toApiError, unwrap } from "../api/client";
import { Empty, ErrorBox, Loading } from "../components/States";

export function Artifacts({ runId }: { runId: string }) {
  const [error, setError] = useState<unknown>(null);
  const [params, update] = useUrlState();
  const dir = params.get("adir") ?? "";
  const query = useQuery({
    queryKey: ["experiments", "artifacts", runId, dir],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/experiments/runs/{run_id}/artifacts", {
          params: { path: { run_id: runId }, query: { path: dir || undefined } },
        }),
      ),
  });
  const download = async (path: string) => {
    setError(null);
    // By hand: the path's slashes stay separators (a typed path parameter would encode them).
    const segments = path.split("/").map(encodeURIComponent).join("/");
    const response = await fetch(
      `/api/v1/experiments/runs/${encodeURIComponent(runId)}/artifacts/${segments}`,
      { headers: authHeaders() },
    );
    if (!response.ok) {
      const body = await response.text();
      setError(toApiError(response.status, parseJson(body)));
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = path.split("/").pop() ?? path;
    link.click();
    URL.revokeObjectURL(url);
  };
  const artifacts = query.data?.artifacts ?? [];
  return (
    <div data-testid="artifacts">
      <h2>
        Artifacts{dir ? ` in ${dir}/` : ""}{" "}
        {dir && (
          <button type="button" className="link" onClick={() => update({ adir: dir.split("/").slice(0, -1).join("/") })}>
            ↑ up
          </button>
        )}
      </h2>
      <ErrorBox error={query.error ?? error} />
      {query.isLoading ? (
        <Loading what="artifacts" />
      ) : artifacts.length === 0 ? (
        <Empty>no artifacts</Empty>
      ) : (
        <table className="grid">
          <tbody>
            {artifacts.map((a) => (
              <tr key={a.path}>
                <td>
                  {a.is_dir ? (
                    <button type="button" className="link" onClick={() => update({ adir: a.path })}>
                      {a.path}/
                    </button>
                  ) : (
                    a.path
                  )}
                </td>
                <td>{a.is_dir ? "" : `${Number(a.size_bytes ?? 0).toLocaleString()} B`}</td>
                <td>
                  {!a.is_dir && (
                    <button type="button" onClick={() => void download(a.path ?? "")}>
                      download
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
