// Every view and its path. Part 2 (models, datasets, tasks, studies) adds entries to `ROUTES`
// and `NAV`; the gateway answers index.html for each first segment (gateway/envoy_config.py
// UI_ROUTE_PREFIXES), so a deep link loads.
import type { ReactElement } from "react";
import { experimentsSource, trackingSource } from "./api/sources";
import { CompareView } from "./components/CompareTables";
import { RunView } from "./components/RunView";
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
