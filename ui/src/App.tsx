import { QueryClient, QueryClientProvider, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { BrowserRouter, NavLink, Route, Routes } from "react-router-dom";
import { loadCredentials, setCredentials, type Credentials } from "./api/client";
import { NAV, prefetchLocation, ROUTES } from "./routes";
import { field } from "./lib/text";

const queries = new QueryClient({
  defaultOptions: { queries: { retry: 1, refetchOnWindowFocus: false, staleTime: 2000 } },
});
setCredentials(loadCredentials());
prefetchLocation(queries, window.location);

/** Tenant (x-tenant-id, auth off) or bearer token (MLMESH_AUTH=jwt) for every request. */
function Session() {
  const client = useQueryClient();
  const [current, setCurrent] = useState<Credentials>(loadCredentials());
  const apply = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const next = {
      tenant: field(form, "tenant"),
      token: field(form, "token"),
    };
    setCredentials(next);
    setCurrent(next);
    // Nothing cached for one tenant may show for another.
    void client.resetQueries();
  };
  return (
    <form className="session" onSubmit={apply} aria-label="session">
      <label>
        tenant <input name="tenant" aria-label="tenant" placeholder="default" defaultValue={current.tenant} />
      </label>
      <label>
        token <input name="token" aria-label="token" type="password" placeholder="(auth off)" defaultValue={current.token} />
      </label>
      <button type="submit">Apply</button>
      <span className="who" data-testid="tenant">
        {current.token ? "token" : current.tenant || "default"}
      </span>
    </form>
  );
}

export function App() {
  return (
    <QueryClientProvider client={queries}>
      <BrowserRouter>
        <header>
          <NavLink to="/" className="brand">
            mlmesh
          </NavLink>
          <nav>
            {NAV.map((item) => (
              <NavLink key={item.to} to={item.to}>
                {item.label}
              </NavLink>
            ))}
          </nav>
          <Session />
        </header>
        <main>
          <Routes>
            {ROUTES.map((route) => (
              <Route key={route.path} path={route.path} element={route.element} />
            ))}
          </Routes>
        </main>
      </BrowserRouter>
    </QueryClientProvider>
  );
}
