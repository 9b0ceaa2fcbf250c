// Every view and its path. Part 2 (models, datasets, tasks, studies) adds entries to `ROUTES`
// and `NAV`; the gateway answers index.html for each first segment (gateway/envoy_config.py
// UI_ROUTE_PREFIXES), so a deep link loads.
import type { QueryClient } from "@tanstack/react-query";
import type { ReactElement } from "react";
import { matchPath } from "react-router-dom";
import { experimentsSource, trackingSource } from "./api/sources";
import { CompareView } from "./components/CompareTables";
import { prefetchRunPage, RunView } from "./components/RunView";
import { Empty } from "./components/States";
import { Artifacts } from "./views/Artifacts";
import { ExperimentPage } from "./views/Experiment";
import { ExperimentsPage } from "./views/Experiments";
import { TrackingPage } from "./views/Tracking";

export const ROUTES: { path: string; element: ReactElement }[] = [
  { path: "/", element: <ExperimentsPage /> },
  { path: "/experiments", element: <ExperimentsPage /> },
  { path: "/experiments/:id", element: <ExperimentPage /> },
  {
    path: "/runs/:id",
    element: <RunView source={experimentsSource} artifacts={(id) => <Artifacts runId={id} />} />,
  },
  { path: "/compare", element: <CompareView source={experimentsSource} /> },
  { path: "/tracking", element: <TrackingPage /> },
  { path: "/tracking/runs/:id", element: <RunView source={trackingSource} /> },
  { path: "/tracking/compare", element: <CompareView source={trackingSource} /> },
  { path: "*", element: <Empty>No such page.</Empty> },
];

export const NAV: { to: string; label: string }[] = [
  { to: "/experiments", label: "Experiments" },
  { to: "/tracking", label: "Tracking" },
];

/** Starts the requests of the page that `location` opens before the app first renders, when
 * its URL names them all: a run page's run and its charts' histories (a deep link or a reload
 * then waits for neither the scripts' first render nor the run's answer to ask for its charts). */
export function prefetchLocation(client: QueryClient, location: { pathname: string; search: string }): void {
  const params = new URLSearchParams(location.search);
  for (const [pattern, source] of [
    ["/runs/:id", experimentsSource],
    ["/tracking/runs/:id", trackingSource],
  ] as const) {
    const id = matchPath(pattern, location.pathname)?.params.id;
    if (id) prefetchRunPage(client, source, id, params);
  }
}
