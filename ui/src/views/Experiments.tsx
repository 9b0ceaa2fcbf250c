// The experiments list: paged, searchable, lifecycle and strategy filters, create, archive and
// restore, and the comparison of experiment records (best value per metric in its direction).
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api, unwrap, type Experiment } from "../api/client";
import { Empty, ErrorBox, Loading } from "../components/States";
import { VirtualTable, type TableColumn } from "../components/VirtualTable";
import { formatValue } from "../lib/columns";
import { MAX_COMPARE, MIN_COMPARE, metricRows } from "../lib/compare";
import { readBool, readInt, readList, useUrlState } from "../lib/url";
import { field } from "../lib/text";

const PAGE = 50;

export function ExperimentsPage() {
  const [params, update] = useUrlState();
  const search = params.get("q") ?? "";
  const stage = params.get("stage") === "deleted" ? "deleted" : "active";
  const strategy = params.get("strategy") ?? "";
  const offset = readInt(params, "offset", 0);
  const selected = readList(params, "sel");
  const client = useQueryClient();
  const list = useQuery({
    queryKey: ["experiments", "list", search, stage, strategy, offset],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/experiments", {
          params: {
            query: {
              search: search || undefined,
              lifecycle_stage: stage,
              strategy_id: strategy || undefined,
              offset,
              limit: PAGE,
            },
          },
        }),
      ),
    placeholderData: (previous) => previous,
  });
  const lifecycle = useMutation({
    mutationFn: async ({ id, archive }: { id: string; archive: boolean }) =>
      archive
        ? unwrap(api.DELETE("/api/v1/experiments/{experiment_id}", { params: { path: { experiment_id: id } } }))
        : unwrap(
            api.POST("/api/v1/experiments/{experiment_id}/restore", {
              params: { path: { experiment_id: id } },
              body: {},
            }),
          ),
    onSuccess: () => client.invalidateQueries({ queryKey: ["experiments"] }),
  });
  const experiments = list.data?.experiments ?? [];
  const total = list.data?.total ?? 0;
  const select = (id: string, on: boolean) =>
    update({ sel: on ? [...selected, id].slice(-MAX_COMPARE) : selected.filter((s) => s !== id) });
  const columns: TableColumn<Experiment>[] = [
    {
      id: "name",
      header: "name",
      render: (e) => <Link to={`/experiments/${e.id}`}>{e.name}</Link>,
    },
    { id: "strategy", header: "strategy", width: 140, render: (e) => e.strategy_id },
    {
      id: "metrics",
      header: "metrics",
      render: (e) =>
        Object.entries(e.metrics ?? {})
          .map(([k, v]) => `${k}=${formatValue(v)}`)
          .join(" "),
    },
    { id: "created", header: "created", width: 190, render: (e) => String(e.created_at ?? "").slice(0, 19) },
    {
      id: "actions",
      header: "",
      width: 90,
      render: (e) => (
        <button
          type="button"
          onClick={() => lifecycle.mutate({ id: e.id ?? "", archive: stage === "active" })}
        >
          {stage === "active" ? "Archive" : "Restore"}
        </button>
      ),
    },
  ];
  return (
    <section data-testid="experiments">
      <h1>Experiments</h1>
      <div className="controls">
        <input
          type="search"
          placeholder="search names"
          aria-label="search experiments"
          defaultValue={search}
          onKeyDown={(e) => {
            if (e.key === "Enter") update({ q: e.currentTarget.value, offset: null });
          }}
        />
        <input
          placeholder="strategy id"
          aria-label="strategy filter"
          defaultValue={strategy}
          onKeyDown={(e) => {
            if (e.key === "Enter") update({ strategy: e.currentTarget.value, offset: null });
          }}
        />
        <select
          aria-label="lifecycle"
          value={stage}
          onChange={(e) => update({ stage: e.target.value === "deleted" ? "deleted" : null, offset: null, sel: null })}
        >
          <option value="active">active</option>
          <option value="deleted">archived</option>
        </select>
        <button
          type="button"
          disabled={selected.length < MIN_COMPARE}
          onClick={() => update({ cmp: true }, true)}
        >
          Compare records ({selected.length})
        </button>
      </div>
      <CreateExperiment />
      <ErrorBox error={lifecycle.error} />
      {list.error ? (
        <ErrorBox error={list.error} />
      ) : !list.data ? (
        <Loading what="experiments" />
      ) : experiments.length === 0 ? (
        <Empty>No {stage === "deleted" ? "archived" : "active"} experiments match.</Empty>
      ) : (
        <>
          <VirtualTable
            testId="experiments-table"
            rows={experiments}
            rowId={(e) => e.id ?? ""}
            columns={columns}
            selected={selected}
            onSelect={select}
          />
          <Pager offset={offset} page={PAGE} total={total} onOffset={(o) => update({ offset: o || null })} />
        </>
      )}
      {readBool(params, "cmp") && selected.length >= MIN_COMPARE && <RecordComparison ids={selected} />}
    </section>
  );
}

export function Pager({
  offset,
  page,
  total,
  onOffset,
}: {
  offset: number;
  page: number;
  total: number;
  onOffset: (offset: number) => void;
}) {
  return (
    <div className="pager" data-testid="pager">
      <button type="button" disabled={offset === 0} onClick={() => onOffset(Math.max(offset - page, 0))}>
        ‹ previous
      </button>
      <span>
        {total === 0 ? 0 : offset + 1}–{Math.min(offset + page, total)} of {total}
      </span>
      <button type="button" disabled={offset + page >= total} onClick={() => onOffset(offset + page)}>
        next ›
      </button>
    </div>
  );
}

function CreateExperiment() {
  const client = useQueryClient();
  const [open, setOpen] = useState(false);
  const create = useMutation({
    mutationFn: (body: { name?: string; strategy_id?: string; description?: string }) =>
      unwrap(api.POST("/api/v1/experiments", { body: body as never })),
    onSuccess: () => {
      setOpen(false);
      return client.invalidateQueries({ queryKey: ["experiments"] });
    },
  });
  if (!open) {
    return (
      <button type="button" onClick={() => setOpen(true)}>
        New experiment
      </button>
    );
  }
  const submit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const value = (key: string) => field(form, key) || undefined;
    create.mutate({ name: value("name"), strategy_id: value("strategy_id"), description: value("description") });
  };
  return (
    <form className="create" onSubmit={submit} aria-label="new experiment">
      <input name="name" placeholder="name (generated if empty)" />
      <input name="strategy_id" placeholder="strategy id" />
      <input name="description" placeholder="description" />
      <button type="submit" disabled={create.isPending}>
        Create
      </button>
      <button type="button" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorBox error={create.error} />
    </form>
  );
}

function RecordComparison({ ids }: { ids: string[] }) {
  const query = useQuery({
    queryKey: ["experiments", "compare", ids],
    queryFn: () => unwrap(api.POST("/api/v1/experiments/compare", { body: ids })),
  });
  if (query.error) return <ErrorBox error={query.error} />;
  if (!query.data) return <Loading what="comparison" />;
  const experiments = query.data.experiments ?? [];
  const rows = metricRows(query.data.metric_diff, (entry) => entry.best_id);
  return (
    <section data-testid="record-comparison">
      <h2>Record comparison</h2>
      {rows.length === 0 ? (
        <Empty>These experiments record no metrics.</Empty>
      ) : (
        <table className="grid">
          <thead>
            <tr>
              <th>metric</th>
              <th>direction</th>
              {experiments.map((e) => (
                <th key={e.id}>{e.name}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map((row) => (
              <tr key={row.key} data-metric={row.key}>
                <th>{row.key}</th>
                <td>{row.direction.toLowerCase()}</td>
                {experiments.map((e) => (
                  <td key={e.id} data-id={e.id} className={row.best === e.id ? "best" : ""}>
                    {formatValue(row.values[e.id ?? ""])}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
