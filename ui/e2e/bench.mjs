// Browser figures for `make bench` (bench/ui.py starts the mesh and seeds the data): headless
// Debian chromium through playwright-core, fresh browser context per sample (no cached API
// answers). Prints one JSON object.
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS } from "./flags.mjs";

const BASE = process.env.BASE_URL;
const data = JSON.parse(process.env.BENCH_DATA);
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 5);

// Records, from inside the page, when the runs table first shows rows of a loaded page of 100.
function watchFirstRows() {
  const observer = new MutationObserver(() => {
    const rows = document.querySelectorAll('[data-testid="runs-table"] [data-row-id]').length;
    const pager = document.querySelector('[data-testid="pager"]')?.textContent ?? "";
    if (!window.__firstRows && rows > 0 && pager.includes("1–100 of")) {
      window.__firstRows = { at: performance.now(), rendered: rows, pager };
      observer.disconnect();
    }
  });
  document.addEventListener("DOMContentLoaded", () =>
    observer.observe(document.body, { childList: true, subtree: true, characterData: true }),
  );
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function sample(browser, url, setup, read) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  if (setup) await page.addInitScript(setup);
  try {
    await page.goto(url);
    return await read(page);
  } catch (error) {
    const shot = `${process.env.RESULTS ?? "/tmp"}/bench-failed.png`;
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    throw new Error(`${url}: ${error.message} (screenshot ${shot})`);
  } finally {
    await context.close();
  }
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: CHROMIUM_ARGS });
try {
  const runsUrl = `${BASE}/experiments/${data.experiment}`;
  const firstRows = [];
  let rendered = 0;
  for (let i = 0; i < SAMPLES + 1; i += 1) {
    const mark = await sample(browser, runsUrl, watchFirstRows, async (page) => {
      await page.waitForFunction(() => window.__firstRows, undefined, { timeout: 30000 });
      return page.evaluate(() => window.__firstRows);
    });
    if (i > 0) firstRows.push(mark.at); // the first sample warms the service's caches
    rendered = mark.rendered;
  }
  const chartUrl = `${BASE}/runs/${data.historyRun}?charts=${data.historyKey}`;
  const charts = [];
  for (let i = 0; i < SAMPLES + 1; i += 1) {
    const mark = await sample(browser, chartUrl, null, async (page) => {
      const selector = `figure[data-chart="${data.historyKey}"]`;
      await page.waitForFunction((s) => document.querySelector(s)?.dataset.drawnAt, selector, { timeout: 30000 });
      return page.evaluate(
        ({ selector, key }) => {
          const figure = document.querySelector(selector);
          const resources = performance.getEntriesByType("resource");
          const entry = resources.find((e) => e.name.includes(`/metrics/${key}/history`));
          const run = resources.find((e) => /\/api\/v1\/experiments\/runs\/[^/]+$/.test(e.name));
          const scripts = resources.filter((e) => e.initiatorType === "script" || e.name.endsWith(".js"));
          const nav = performance.getEntriesByType("navigation")[0];
          return {
            htmlEnd: nav.responseEnd,
            scriptsEnd: Math.max(0, ...scripts.map((e) => e.responseEnd)),
            domContentLoaded: nav.domContentLoadedEventEnd,
            runRequestStart: run?.startTime ?? Number.NaN,
            runResponseEnd: run?.responseEnd ?? Number.NaN,
            drawnAt: Number(figure.dataset.drawnAt),
            points: Number(figure.dataset.points),
            requestStart: entry.startTime,
            responseEnd: entry.responseEnd,
            transferSize: entry.transferSize,
            bodySize: entry.encodedBodySize,
          };
        },
        { selector, key: data.historyKey },
      );
    });
    if (i > 0) charts.push(mark);
  }
  console.log(
    JSON.stringify({
      firstRowsMs: median(firstRows),
      firstRowsSamples: firstRows,
      rowsRendered: rendered,
      chartDrawnMs: median(charts.map((c) => c.drawnAt)),
      chartFromResponseMs: median(charts.map((c) => c.drawnAt - c.responseEnd)),
      historyRequestMs: median(charts.map((c) => c.responseEnd - c.requestStart)),
      // The page's start: HTML in, scripts in, DOMContentLoaded, the run's and the history's
      // requests started and answered (ms from the navigation's start, medians).
      timeline: Object.fromEntries(
        ["htmlEnd", "scriptsEnd", "domContentLoaded", "runRequestStart", "runResponseEnd", "requestStart", "responseEnd", "drawnAt"].map(
          (name) => [name, Math.round(median(charts.map((c) => c[name])))],
        ),
      ),
      chartPoints: charts[0].points,
      historyTransferBytes: charts[0].transferSize,
      historyBodyBytes: charts[0].bodySize,
    }),
  );
} finally {
  await browser.close();
}
