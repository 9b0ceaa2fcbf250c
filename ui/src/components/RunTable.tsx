// A page of runs as a virtualized table: the caller's fixed columns, then the picked params,
// metrics and tags; sortable headers (the API sorts), selection feeding Compare.
import { useState, type ReactNode } from "react";
import { Link } from "react-router-dom";
import { availableColumns, cell, formatValue, parseColumn, type RunLike } from "../lib/columns";
import { MAX_COMPARE } from "../lib/compare";
import { readBool, readList, useUrlState } from "../lib/url";
import { VirtualTable, type TableColumn } from "./VirtualTable";
import { errorMessage } from "../lib/text";

// Without `cols` in the URL: the first metrics, by name.
const DEFAULT_METRIC_COLUMNS = 5;

export interface TableRun extends RunLike {
  id: string;
  name: string;
  status: string;
  startTime: number | null;
}

export function RunTable({
  runs,
  runPath,
  comparePath,
}: {
  runs: TableRun[];
  runPath: (id: string) => string;
  comparePath: (ids: string[]) => string;
}) {
  const [params, update] = useUrlState();
  const selected = readList(params, "sel");
  const sort = params.get("sort");
  const desc = readBool(params, "desc");
  const available = availableColumns(runs);
  const picked = params.has("cols")
    ? readList(params, "cols").map(parseColumn).filter((c) => c !== null)
    : available.filter((c) => c.kind === "metrics").slice(0, DEFAULT_METRIC_COLUMNS);
  const columns: TableColumn<TableRun>[] = [
    {
      id: "attributes.run_name",
      header: "name",
      width: 200,
      sortable: true,
      render: (run) => <Link to={runPath(run.id)}>{run.name || run.id.slice(0, 12)}</Link>,
    },
    {
      id: "attributes.status",
      header: "status",
      width: 100,
      sortable: true,
      render: (run) => <span className={`status ${run.status}`}>{run.status}</span>,
    },
    {
      id: "attributes.start_time",
      header: "started",
      width: 170,
      sortable: true,
      render: (run) => (run.startTime ? new Date(run.startTime).toISOString().slice(0, 19).replace("T", " ") : ""),
    },
    ...picked.map((column) => ({
      id: column.id,
      header: column.id,
      sortable: true,
      render: (run: TableRun) => formatValue(cell(run, column)),
    })),
  ];
  const onSort = (id: string) =>
    update({ sort: id, desc: sort === id ? !desc : true, offset: null, page: null });
  const select = (id: string, on: boolean) =>
    update({ sel: on ? [...selected, id].slice(-MAX_COMPARE) : selected.filter((s) => s !== id) });
  return (
    <div>
      <div className="controls">
        <ColumnPicker
          available={available.map((c) => c.id)}
          picked={picked.map((c) => c.id)}
          onChange={(cols) => update({ cols: cols.length ? cols : "-" })}
        />
        <Link
          className={`button${selected.length < 2 ? " disabled" : ""}`}
          aria-disabled={selected.length < 2}
          data-testid="compare-link"
          to={selected.length >= 2 ? comparePath(selected) : "#"}
        >
          Compare ({selected.length})
        </Link>
        {selected.length > 0 && (
          <button type="button" onClick={() => update({ sel: null })}>
            clear selection
          </button>
        )}
      </div>
      <VirtualTable
        testId="runs-table"
        rows={runs}
        rowId={(run) => run.id}
        columns={columns}
        sort={sort}
        desc={desc}
        onSort={onSort}
        selected={selected}
        onSelect={select}
      />
    </div>
  );
}

function ColumnPicker({
  available,
  picked,
  onChange,
}: {
  available: string[];
  picked: string[];
  onChange: (cols: string[]) => void;
}): ReactNode {
  const [open, setOpen] = useState(false);
  const all = Array.from(new Set([...picked, ...available]));
  return (
    <div className="picker">
      <button type="button" onClick={() => setOpen(!open)} aria-expanded={open}>
        Columns ({picked.length})
      </button>
      {open && (
        <div className="picker-menu" role="group" aria-label="columns">
          {all.length === 0 && <span>no params, metrics or tags yet</span>}
          {all.map((id) => (
            <label key={id}>
              <input
                type="checkbox"
                checked={picked.includes(id)}
                onChange={(e) => onChange(e.target.checked ? [...picked, id] : picked.filter((p) => p !== id))}
              />{" "}
              {id}
            </label>
          ))}
        </div>
      )}
    </div>
  );
}

/** The filter box: the MLflow filter language; the API's error for an invalid one shows here. */
export function FilterBox({ error }: { error: unknown }) {
  const [params, update] = useUrlState();
  const filter = params.get("filter") ?? "";
  return (
    <div className="filter">
      <input
        key={filter}
        aria-label="filter"
        className={error ? "invalid" : ""}
        placeholder="metrics.sharpe > 1 and params.model = 'lightgbm'"
        defaultValue={filter}
        onKeyDown={(e) => {
          if (e.key === "Enter") update({ filter: e.currentTarget.value.trim(), offset: null, page: null });
        }}
      />
      {error ? (
        <div className="error filter-error" role="alert" data-testid="filter-error">
          {errorMessage(error)}
        </div>
      ) : null}
    </div>
  );
}
