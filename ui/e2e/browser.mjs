// End-to-end checks of the web UI in Debian's chromium (playwright-core; no browser is ever
// downloaded). Run by tests/ui/test_browser.py, which starts the mesh and creates the data:
// BASE_URL, CHROMIUM, RESULTS (screenshots) and E2E_DATA (ids) come from there.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS } from "./flags.mjs";

const BASE = process.env.BASE_URL;
const RESULTS = process.env.RESULTS;
const data = JSON.parse(process.env.E2E_DATA);

async function api(method, path, body, tenant = data.tenant) {
  const response = await fetch(BASE + path, {
    method,
    headers: { "content-type": "application/json", "x-tenant-id": tenant },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Whether the chart's canvas has drawn pixels (a series line, not only a blank area). */
async function canvasInk(page, selector) {
  return page.$eval(selector, (canvas) => {
    const context = canvas.getContext("2d");
    const { data: pixels } = context.getImageData(0, 0, canvas.width, canvas.height);
    let ink = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const [r, b, a] = [pixels[i], pixels[i + 2], pixels[i + 3]];
      // The first series' stroke is blue (#1f77b4): count strongly blue pixels only.
      if (a > 0 && b > 120 && b - r > 60) ink += 1;
    }
    return ink;
  });
}

const steps = [];
// Steps of the E2E_STEPS group: "open" (auth off, the default) or "jwt" (MLMESH_AUTH=jwt).
let group = "open";
const step = (name, body) => steps.push({ name, body, group });

step("set the tenant and list the experiments", async (page) => {
  await page.goto(BASE + "/");
  await page.getByLabel("tenant", { exact: true }).fill(data.tenant);
  await page.getByRole("button", { name: "Apply" }).click();
  await page.goto(`${BASE}/experiments?q=${data.prefix}`);
  const table = page.getByTestId("experiments-table");
  await table.getByText(`${data.prefix}-momentum`).waitFor();
  await table.getByText(`${data.prefix}-archivable`).waitFor();
  assert.equal(await table.locator("[data-row-id]").count(), 2);
  await page.getByLabel("strategy filter").fill(`${data.prefix}-S2`);
  await page.getByLabel("strategy filter").press("Enter");
  await page.waitForURL(/strategy=/);
  await table.getByText(`${data.prefix}-momentum`).waitFor({ state: "detached" });
  assert.equal(await table.locator("[data-row-id]").count(), 1);
  await page.screenshot({ path: `${RESULTS}/experiments.png`, fullPage: true });
});

step("open an experiment: its runs, a filter, an invalid filter", async (page) => {
  await page.goto(`${BASE}/experiments?q=${data.prefix}`);
  await page.getByRole("link", { name: `${data.prefix}-momentum` }).click();
  await page.waitForURL(`**/experiments/${data.experiment}`);
  const rows = page.getByTestId("runs-table").locator("[data-row-id]");
  await rows.first().waitFor();
  assert.equal(await rows.count(), 3);
  const started = await page
    .getByTestId("runs-table")
    .locator('[role="cell"][data-column="attributes.start_time"]')
    .allTextContents();
  assert.ok(started.every((t) => /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(t)), `start times ${started}`);
  const filter = "metrics.sharpe > 1";
  const expected = await api(
    "GET",
    `/api/v1/experiments/runs?experiment_id=${data.experiment}&filter=${encodeURIComponent(filter)}`,
  );
  assert.equal(expected.body.runs.length, 2);
  await page.getByLabel("filter").fill(filter);
  await page.getByLabel("filter").press("Enter");
  await page.waitForURL(/filter=/);
  await page.waitForFunction(
    () => document.querySelectorAll('[data-testid="runs-table"] [data-row-id]').length === 2,
  );
  const shown = await rows.evaluateAll((els) => els.map((el) => el.dataset.rowId).sort());
  assert.deepEqual(shown, expected.body.runs.map((r) => r.id).sort());
  const invalid = "metrics.sharpe >>> 1";
  const error = await api(
    "GET",
    `/api/v1/experiments/runs?experiment_id=${data.experiment}&filter=${encodeURIComponent(invalid)}`,
  );
  assert.equal(error.status, 400);
  await page.getByLabel("filter").fill(invalid);
  await page.getByLabel("filter").press("Enter");
  const box = page.getByTestId("filter-error");
  await box.waitFor();
  assert.equal((await box.textContent()).trim(), error.body.message);
  await page.screenshot({ path: `${RESULTS}/invalid-filter.png`, fullPage: true });
});

step("sort runs on the server by a metric, both ways", async (page) => {
  await page.goto(`${BASE}/experiments/${data.experiment}?cols=metrics.sharpe,params.lr`);
  const header = page.getByTestId("runs-table").locator('[role="columnheader"][data-column="metrics.sharpe"]');
  const order = () =>
    page.getByTestId("runs-table").locator("[data-row-id]").evaluateAll((els) => els.map((e) => e.dataset.rowId));
  for (const direction of ["DESC", "ASC"]) {
    await header.click();
    await page.waitForURL(direction === "DESC" ? /desc=1/ : (url) => !url.search.includes("desc=1"));
    await page.waitForFunction((d) => document.querySelector('[data-column="metrics.sharpe"][aria-sort]')?.getAttribute("aria-sort") === d, direction === "DESC" ? "descending" : "ascending");
    const expected = await api(
      "GET",
      `/api/v1/experiments/runs?experiment_id=${data.experiment}&order_by=${encodeURIComponent(`metrics.sharpe ${direction}`)}`,
    );
    assert.equal(expected.status, 200);
    const ids = expected.body.runs.map((r) => r.id);
    await page.waitForFunction(
      (want) =>
        JSON.stringify([...document.querySelectorAll('[data-testid="runs-table"] [data-row-id]')].map((e) => e.dataset.rowId)) ===
        JSON.stringify(want),
      ids,
    );
    assert.deepEqual(await order(), ids);
    const sharpe = expected.body.runs.map((r) => r.metrics.sharpe);
    assert.deepEqual(sharpe, [...sharpe].sort((a, b) => (direction === "DESC" ? b - a : a - b)));
  }
});

step("pick a column", async (page) => {
  await page.goto(`${BASE}/experiments/${data.experiment}`);
  await page.getByRole("button", { name: /Columns/ }).click();
  await page.getByRole("group", { name: "columns" }).getByLabel("params.lr").check();
  await page.waitForURL(/cols=/);
  const header = page.getByTestId("runs-table").locator('[role="columnheader"][data-column="params.lr"]');
  await header.waitFor();
  const cells = await page
    .getByTestId("runs-table")
    .locator('[role="cell"][data-column="params.lr"]')
    .allTextContents();
  assert.deepEqual(cells.sort(), ["0.001", "0.01", "0.1"]);
});

step("open a run: details, artifacts, a drawn chart", async (page) => {
  await page.goto(`${BASE}/experiments/${data.experiment}`);
  await page.getByRole("link", { name: "run-0" }).click();
  await page.waitForURL(`**/runs/${data.runs[0]}`);
  await page.getByTestId("run").waitFor();
  await page.getByTestId("artifacts").getByRole("button", { name: "reports/" }).click();
  await page.waitForURL(/adir=reports/);
  const download = page.waitForEvent("download");
  await page.getByTestId("artifacts").getByRole("button", { name: "download" }).click();
  const file = await download;
  assert.equal(file.suggestedFilename(), "report.json");
  const chunks = [];
  for await (const chunk of await file.createReadStream()) chunks.push(chunk);
  assert.equal(Buffer.concat(chunks).toString(), '{"ok": true}');
  const chart = page.locator('figure[data-chart="loss"]');
  await chart.waitFor();
  await page.waitForFunction(
    () => Number(document.querySelector('figure[data-chart="loss"]')?.dataset.points) > 0,
  );
  const ink = await canvasInk(page, 'figure[data-chart="loss"] canvas');
  assert.ok(ink > 200, `the loss chart's canvas is blank (${ink} series pixels)`);
  await page.getByLabel("log scale").check();
  await page.waitForURL(/log=1/);
  await page.screenshot({ path: `${RESULTS}/run.png`, fullPage: true });
});

step("a run's deep link asks for its chart's history beside the run, once", async (page) => {
  const asked = [];
  const record = (request) => {
    if (request.url().includes("/metrics/loss/history")) asked.push(request.url());
  };
  page.on("request", record);
  try {
    await page.goto(`${BASE}/runs/${data.runs[0]}?charts=loss`);
    await page.waitForFunction(() => document.querySelector('figure[data-chart="loss"]')?.dataset.drawnAt);
    const order = await page.evaluate(() => {
      const resources = performance.getEntriesByType("resource");
      const run = resources.find((e) => /\/api\/v1\/experiments\/runs\/[^/?]+$/.test(e.name));
      const history = resources.find((e) => e.name.includes("/metrics/loss/history"));
      return { runEnd: run.responseEnd, historyStart: history.startTime };
    });
    // Started from the URL, not after the run's answer named the metric; and the chart read
    // the prefetched query (same key), so no second request.
    assert.ok(order.historyStart < order.runEnd, JSON.stringify(order));
    assert.equal(asked.length, 1, asked.join("\n"));
  } finally {
    page.off("request", record);
  }
});

step("zoom re-queries the step range; a RUNNING run refreshes and keeps zoom and scroll", async (page) => {
  const chart = page.locator('figure[data-chart="loss"]');
  const zoomed = page.waitForRequest((r) => r.url().includes("/metrics/loss/history") && r.url().includes("start_step=20") && r.url().includes("end_step=80"));
  await page.goto(`${BASE}/runs/${data.liveRun}?charts=loss&zoom=20,80`);
  await zoomed;
  await page.waitForFunction(() => document.querySelector('figure[data-chart="loss"]')?.dataset.points === "61");
  assert.equal(await chart.getAttribute("data-x-min"), "20");
  assert.equal(await chart.getAttribute("data-x-max"), "80");
  await page.getByText("● live").waitFor();
  await page.evaluate(() => window.scrollTo(0, 120));
  const scrolled = await page.evaluate(() => window.scrollY);
  // A new point inside the zoomed range arrives with the next refresh.
  const logged = await api("POST", `/api/v1/experiments/runs/${data.liveRun}/log-batch`, {
    metrics: [{ key: "loss", value: 5, step: 50 }, { key: "loss", value: 0.001, step: 300 }],
  });
  assert.equal(logged.status, 200);
  await page.waitForFunction(
    () => document.querySelector('figure[data-chart="loss"]')?.dataset.points === "62",
    undefined,
    { timeout: 20000 },
  );
  assert.match(page.url(), /zoom=20%2C80|zoom=20,80/);
  assert.equal(await chart.getAttribute("data-x-min"), "20");
  assert.equal(await page.evaluate(() => window.scrollY), scrolled);
  // Double-click resets the zoom; a drag on the chart zooms into its middle.
  await page.locator('figure[data-chart="loss"] .u-over').dblclick();
  await page.waitForURL((url) => !url.search.includes("zoom="));
  await page.waitForFunction(() => document.querySelector('figure[data-chart="loss"]')?.dataset.points === "202");
  const box = await page.locator('figure[data-chart="loss"] .u-over').boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width * 0.25, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, y, { steps: 5 });
  await page.mouse.up();
  await page.waitForURL(/zoom=/);
  const [low, high] = new URL(page.url()).searchParams.get("zoom").split(",").map(Number);
  assert.ok(low > 50 && low < 100 && high > 130 && high < 170, `zoom ${low}..${high}`);
  await page.screenshot({ path: `${RESULTS}/zoomed.png`, fullPage: true });
});

step("a time zoom re-queries the steps it covers at full resolution", async (page) => {
  // Seconds 1000..1100 of the equity history (one point a second): steps 1000..1100, which
  // the 1,000-point overview of 3,000 points only draws a few of.
  const start = data.equityStartMs / 1000;
  const window = [start + 1000, start + 1100];
  const zoomed = page.waitForRequest(
    (r) => r.url().includes("/metrics/equity/history") && r.url().includes("start_step="),
  );
  await page.goto(`${BASE}/runs/${data.liveRun}?charts=equity&x=time&zoom=${window.join(",")}`);
  const query = new URL((await zoomed).url()).searchParams;
  const [low, high] = [Number(query.get("start_step")), Number(query.get("end_step"))];
  // The window's steps, widened at most to the overview's neighbouring points (a bucket of 12).
  assert.ok(low <= 1000 && low >= 985 && high >= 1100 && high <= 1115, `steps ${low}..${high}`);
  await page.waitForFunction(
    (count) => Number(document.querySelector('figure[data-chart="equity"]')?.dataset.points) === count,
    high - low + 1,
  );
  const chart = page.locator('figure[data-chart="equity"]');
  assert.equal(Number(await chart.getAttribute("data-x-min")), window[0]);
  assert.equal(Number(await chart.getAttribute("data-x-max")), window[1]);
});

step("compare three runs: best values, only differing, deep-link reload", async (page) => {
  await page.goto(`${BASE}/experiments/${data.experiment}`);
  for (const id of data.runs) await page.getByLabel(`select ${id}`).check();
  await page.getByTestId("compare-link").click();
  await page.waitForURL(/\/compare\?runs=/);
  const truth = await api("POST", "/api/v1/experiments/runs/compare", { run_ids: data.runs });
  assert.equal(truth.status, 200);
  const checkBest = async () => {
    await page.getByTestId("compare-metrics").waitFor();
    for (const [key, diff] of Object.entries(truth.body.metric_diff)) {
      const best = diff.best_run_id;
      assert.equal(typeof best, "string", `the API names a best run for ${key}`);
      const cells = page.locator(`[data-testid="compare-metrics"] tr[data-metric="${key}"] td.best`);
      assert.equal(await cells.count(), 1, `one best cell for ${key}`);
      assert.equal(await cells.first().getAttribute("data-run-id"), best, `best of ${key}`);
    }
  };
  await checkBest();
  const params = page.getByTestId("compare-params").locator("tr[data-param]");
  assert.deepEqual((await params.evaluateAll((els) => els.map((e) => e.dataset.param))).sort(), ["lr", "model"]);
  await page.getByTestId("only-differing").check();
  await page.waitForURL(/diff=1/);
  await page.waitForFunction(
    () => document.querySelectorAll('[data-testid="compare-params"] tr[data-param]').length === 1,
  );
  assert.deepEqual(await params.evaluateAll((els) => els.map((e) => e.dataset.param)), ["lr"]);
  await page.getByLabel("metric to chart").selectOption("loss");
  await page.waitForFunction(
    () => Number(document.querySelector('figure[data-chart="loss"]')?.dataset.points) >= 3,
  );
  await page.screenshot({ path: `${RESULTS}/compare.png`, fullPage: true });
  const url = page.url();
  await page.reload();
  assert.equal(page.url(), url);
  await checkBest();
  assert.equal(await page.getByTestId("only-differing").isChecked(), true);
  assert.equal(await params.count(), 1);
});

step("archive and restore an experiment", async (page) => {
  await page.goto(`${BASE}/experiments?q=${data.prefix}-archivable`);
  const row = page.locator(`[data-row-id="${data.other}"]`);
  await row.getByRole("button", { name: "Archive" }).click();
  await row.waitFor({ state: "detached" });
  assert.equal((await api("GET", `/api/v1/experiments/${data.other}`)).body.lifecycle_stage, "deleted");
  await page.getByLabel("lifecycle").selectOption("deleted");
  await page.waitForURL(/stage=deleted/);
  await row.getByRole("button", { name: "Restore" }).click();
  await row.waitFor({ state: "detached" });
  assert.equal((await api("GET", `/api/v1/experiments/${data.other}`)).body.lifecycle_stage, "active");
});

step("compare experiment records: the best value per metric in its direction", async (page) => {
  await page.goto(`${BASE}/experiments?q=${data.prefix}`);
  await page.getByLabel(`select ${data.experiment}`).check();
  await page.getByLabel(`select ${data.other}`).check();
  await page.getByRole("button", { name: "Compare records (2)" }).click();
  await page.waitForURL(/cmp=1/);
  const table = page.getByTestId("record-comparison");
  await table.waitFor();
  const truth = await api("POST", "/api/v1/experiments/compare", [data.experiment, data.other]);
  assert.equal(truth.status, 200);
  assert.deepEqual(Object.keys(truth.body.metric_diff).sort(), ["mse", "sharpe"]);
  for (const [key, diff] of Object.entries(truth.body.metric_diff)) {
    const best = table.locator(`tr[data-metric="${key}"] td.best`);
    assert.equal(await best.count(), 1);
    assert.equal(await best.getAttribute("data-id"), diff.best_id, `best of ${key}`);
  }
  // sharpe is maximized, mse minimized: the two experiments win one each.
  assert.notEqual(truth.body.metric_diff.sharpe.best_id, truth.body.metric_diff.mse.best_id);
});

step("create an experiment from the list", async (page) => {
  await page.goto(`${BASE}/experiments?q=${data.prefix}-created`);
  await page.getByText("No active experiments match.").waitFor();
  await page.getByRole("button", { name: "New experiment" }).click();
  const form = page.getByRole("form", { name: "new experiment" });
  await form.locator('input[name="name"]').fill(`${data.prefix}-created`);
  await form.locator('input[name="strategy_id"]').fill("S9");
  await form.getByRole("button", { name: "Create" }).click();
  await page.getByTestId("experiments-table").getByText(`${data.prefix}-created`).waitFor();
  const listed = await api("GET", `/api/v1/experiments?search=${data.prefix}-created`);
  assert.equal(listed.body.total, 1);
  assert.equal(listed.body.experiments[0].strategy_id, "S9");
  // The same name again is the API's 409, shown at the form.
  await page.getByRole("button", { name: "New experiment" }).click();
  await form.locator('input[name="name"]').fill(`${data.prefix}-created`);
  await form.getByRole("button", { name: "Create" }).click();
  await form.getByRole("alert").waitFor();
  assert.match(await form.getByRole("alert").textContent(), /already exists/);
});

step("switch tenant: the other tenant's data disappears", async (page) => {
  await page.goto(`${BASE}/experiments?q=${data.prefix}`);
  const table = page.getByTestId("experiments-table");
  await table.getByText(`${data.prefix}-momentum`).waitFor();
  await page.getByLabel("tenant", { exact: true }).fill(data.otherTenant);
  await page.getByRole("button", { name: "Apply" }).click();
  await table.getByText(`${data.prefix}-other-tenant`).waitFor();
  assert.equal(await table.getByText(`${data.prefix}-momentum`).count(), 0);
  // The first tenant's run is another tenant's now: the API's 403 shows as its message.
  await page.goto(`${BASE}/runs/${data.runs[0]}`);
  const alert = page.getByRole("alert");
  await alert.waitFor();
  const denied = await api("GET", `/api/v1/experiments/runs/${data.runs[0]}`, undefined, data.otherTenant);
  assert.equal(denied.status, 403);
  assert.equal((await alert.textContent()).trim(), denied.body.message);
});

group = "jwt";

step("with auth on, the page loads, the 401 says so, and a token shows its tenant", async (page) => {
  await page.goto(`${BASE}/experiments`);
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.textContent(), /^401 Unauthenticated: .*\(set a valid token\)$/);
  await page.getByLabel("token", { exact: true }).fill(data.token);
  await page.getByRole("button", { name: "Apply" }).click();
  await page.getByTestId("experiments-table").getByText(data.name).waitFor();
  assert.equal(await page.getByRole("alert").count(), 0);
  await page.screenshot({ path: `${RESULTS}/jwt.png`, fullPage: true });
});

group = "tracking";

step("tracking: runs by run_type, sorted by the API, another tenant's run absent", async (page) => {
  await page.goto(`${BASE}/tracking?run_type=training&cols=metrics.mse,params.lr`);
  const rows = page.getByTestId("runs-table").locator("[data-row-id]");
  await rows.first().waitFor();
  const listed = await api("GET", "/api/v1/tracking/runs?run_type=training&limit=100", undefined, "default");
  assert.equal(listed.status, 200);
  const shown = await rows.evaluateAll((els) => els.map((e) => e.dataset.rowId));
  assert.deepEqual(shown, listed.body.runs.map((r) => r.run_id));
  assert.ok(shown.includes(data.trainA) && !shown.includes(data.acme));
  await page.getByTestId("runs-table").locator('[role="columnheader"][data-column="metrics.mse"]').click();
  await page.waitForURL(/sort=metrics.mse/);
  const sorted = await api(
    "GET",
    `/api/v1/tracking/runs?run_type=training&limit=100&order_by=${encodeURIComponent("metrics.mse DESC")}`,
    undefined,
    "default",
  );
  const want = sorted.body.runs.map((r) => r.run_id);
  await page.waitForFunction(
    (ids) =>
      JSON.stringify([...document.querySelectorAll('[data-testid="runs-table"] [data-row-id]')].map((e) => e.dataset.rowId)) ===
      JSON.stringify(ids),
    want,
  );
  await page.screenshot({ path: `${RESULTS}/tracking.png`, fullPage: true });
});

step("tracking: a run's history chart, then two runs compared", async (page) => {
  await page.goto(`${BASE}/tracking/runs/${data.trainA}?charts=mse`);
  await page.waitForFunction(() => Number(document.querySelector('figure[data-chart="mse"]')?.dataset.points) === 10);
  const ink = await canvasInk(page, 'figure[data-chart="mse"] canvas');
  assert.ok(ink > 100, `the mse chart's canvas is blank (${ink} series pixels)`);
  await page.goto(`${BASE}/tracking/compare?runs=${data.trainA},${data.trainB}`);
  await page.getByTestId("compare-metrics").waitFor();
  const truth = await api("POST", "/api/v1/tracking/runs/compare", { run_ids: [data.trainA, data.trainB] }, "default");
  assert.equal(truth.status, 200);
  for (const [key, diff] of Object.entries(truth.body.metric_diff)) {
    const cells = page.locator(`[data-testid="compare-metrics"] tr[data-metric="${key}"] td.best`);
    assert.equal(await cells.first().getAttribute("data-run-id"), diff.best_run_id, `best of ${key}`);
  }
  await page.getByTestId("only-differing").check();
  const params = await page
    .getByTestId("compare-params")
    .locator("tr[data-param]")
    .evaluateAll((els) => els.map((e) => e.dataset.param));
  assert.deepEqual(params, ["lr"]);
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: CHROMIUM_ARGS,
  headless: true,
});
let failed = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  const wanted = process.env.E2E_STEPS ?? "open";
  for (const { name, body } of steps.filter((s) => s.group === wanted)) {
    try {
      await body(page);
      console.log(`ok - ${name}`);
    } catch (error) {
      failed += 1;
      console.log(`not ok - ${name}\n  ${String(error?.stack ?? error).replaceAll("\n", "\n  ")}`);
      const slug = name.replace(/\W+/g, "-").slice(0, 40);
      await page.screenshot({ path: `${RESULTS}/failed-${slug}.png`, fullPage: true }).catch(() => {});
    }
  }
  if (errors.length) {
    failed += 1;
    console.log(`not ok - no page errors\n  ${errors.join("\n  ")}`);
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
