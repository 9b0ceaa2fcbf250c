// A table that renders only the rows in view (@tanstack/react-virtual): thousands of rows stay
// as fast as ten. Sorting is the caller's (server-side); selection is by row id.
import { useVirtualizer } from "@tanstack/react-virtual";
import { useRef, type ReactNode } from "react";

export interface TableColumn<T> {
  id: string;
  header: ReactNode;
  width?: number;
  render: (row: T) => ReactNode;
  sortable?: boolean;
}

const ROW_HEIGHT = 30;

export function VirtualTable<T>({
  rows,
  rowId,
  columns,
  sort,
  desc,
  onSort,
  selected,
  onSelect,
  height = 480,
  testId,
}: {
  rows: T[];
  rowId: (row: T) => string;
  columns: TableColumn<T>[];
  sort?: string | null;
  desc?: boolean;
  onSort?: (id: string) => void;
  selected?: string[];
  onSelect?: (id: string, on: boolean) => void;
  height?: number;
  testId?: string;
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 10,
    getItemKey: (index) => rowId(rows[index]),
  });
  const template = [
    ...(onSelect ? ["32px"] : []),
    ...columns.map((c) => (c.width ? `${c.width}px` : "minmax(110px, 1fr)")),
  ].join(" ");
  const chosen = new Set(selected ?? []);
  return (
    <div className="vtable" data-testid={testId} role="table">
      {/* The header scrolls with the rows (sticky), so columns stay aligned beside a scrollbar. */}
      <div ref={scroller} className="vbody" style={{ maxHeight: height }}>
        <div className="vrow vhead" role="row" style={{ gridTemplateColumns: template }}>
          {onSelect && <div role="columnheader" />}
          {columns.map((column) => (
            <div
              key={column.id}
              role="columnheader"
              data-column={column.id}
              className={column.sortable ? "sortable" : ""}
              aria-sort={sort === column.id ? (desc ? "descending" : "ascending") : undefined}
              onClick={column.sortable && onSort ? () => onSort(column.id) : undefined}
            >
              {column.header}
              {sort === column.id ? (desc ? " ▼" : " ▲") : ""}
            </div>
          ))}
        </div>
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {virtualizer.getVirtualItems().map((item) => {
            const row = rows[item.index];
            const id = rowId(row);
            return (
              <div
                key={item.key}
                role="row"
                data-row-id={id}
                className={`vrow${chosen.has(id) ? " selected" : ""}`}
                style={{
                  gridTemplateColumns: template,
                  position: "absolute",
                  top: 0,
                  left: 0,
                  right: 0,
                  height: ROW_HEIGHT,
                  transform: `translateY(${item.start}px)`,
                }}
              >
                {onSelect && (
                  <div role="cell">
                    <input
                      type="checkbox"
                      aria-label={`select ${id}`}
                      checked={chosen.has(id)}
                      onChange={(event) => onSelect(id, event.target.checked)}
                    />
                  </div>
                )}
                {columns.map((column) => (
                  <div key={column.id} role="cell" data-column={column.id}>
                    {column.render(row)}
                  </div>
                ))}
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}
