// The dashboard page: asks for the admin token (kept in sessionStorage), then shows
// GET /admin/v1/dashboard — live load, models, usage charts, recent requests — and
// refreshes it every few seconds while the page is visible.

import { getJson, renderError, ServerError, sessionSecret } from "./api.js";
import { colourRegistry, sparkline, stackedBarChart } from "./charts.js";
import { formatBucket, formatClock, formatCount, formatMs, formatRate } from "./format.js";

const TOKEN_STORAGE = "parley.adminToken";
const REFRESH_MS = 3000;
/** Tokens-per-second readings kept for the sparkline (about two minutes at 3 s). */
const TREND_LENGTH = 40;

const element = (id) => document.getElementById(id);
const tokenInput = element("admin-token");
const windowSelect = element("window");
const autoRefresh = element("auto-refresh");
const colourOfKey = colourRegistry();
const colourOfModel = colourRegistry();
const trend = [];
let timer = null;
let loading = false;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className !== undefined) td.className = className;
  return td;
}

function renderLoad(load) {
  const sequences = load.models.filter((model) => model.sequences !== null);
  const busy = sequences.reduce((sum, model) => sum + model.sequences.busy, 0);
  const total = sequences.reduce((sum, model) => sum + model.sequences.total, 0);
  element("load-running").textContent = formatCount(load.running);
  element("load-waiting").textContent = formatCount(load.waiting);
  element("load-sequences").textContent = sequences.length === 0 ? "—" : `${formatCount(busy)} / ${formatCount(total)}`;
  element("load-tps").textContent = formatRate(load.tokens_per_second);
  trend.push(load.tokens_per_second);
  if (trend.length > TREND_LENGTH) trend.shift();
  element("load-tps-trend").replaceChildren(sparkline(trend, `Tokens per second at the last ${trend.length} refreshes`));
}

function renderModels(models) {
  element("models")
    .querySelector("tbody")
    .replaceChildren(
      ...models.map((model) => {
        const row = document.createElement("tr");
        const name = cell(model.names.join(", "));
        const state = cell(model.state, `state state-${model.state}`);
        if (model.failure !== null) state.title = model.failure;
        const engine = model.engine === null ? "—" : `${model.engine.threads} ${model.engine.threads === 1 ? "thread" : "threads"} · ${formatCount(model.engine.context_size)} ctx · ${model.engine.parallel} parallel`;
        const sequences = model.sequences === null ? "—" : `${model.sequences.busy} / ${model.sequences.free}`;
        row.append(
          name,
          state,
          cell(formatCount(model.running), "number"),
          cell(formatCount(model.waiting), "number"),
          cell(sequences, "number"),
          cell(formatRate(model.tokens_per_second), "number"),
          cell(formatCount(model.generated_tokens), "number"),
          cell(engine),
        );
        return row;
      }),
    );
}

/** A key is named with its id (names need not be unique); a model by its name. */
const keyLabel = (series) => (series.name !== null && series.group.startsWith("key_") ? `${series.name} (${series.group})` : (series.name ?? series.group));
const modelLabel = (series) => series.name ?? series.group;

/** The last dashboard drawn, to redraw the charts at a new size. */
let lastDashboard = null;

function renderCharts(dashboard) {
  lastDashboard = dashboard;
  const { usage, window } = dashboard;
  const container = element("charts");
  const style = getComputedStyle(container);
  const columns = style.gridTemplateColumns.split(" ").length;
  const width = (container.clientWidth - (columns - 1) * (Number.parseFloat(style.columnGap) || 0)) / columns;
  const labels = usage.buckets.map((start) => formatBucket(start, window.bucket_seconds));
  const byKey = usage.by_key.map((series) => ({ ...series, name: keyLabel(series) }));
  const byModel = usage.by_model.map((series) => ({ ...series, name: modelLabel(series) }));
  const chart = (title, series, field, colourOf) =>
    stackedBarChart({
      title,
      labels,
      colourOf,
      width,
      format: formatCount,
      series: series.map((entry) => ({ name: entry.name, group: entry.group, values: entry[field] })),
    });
  element("charts").replaceChildren(
    chart("Tokens by key", byKey, "total_tokens", colourOfKey),
    chart("Requests by key", byKey, "requests", colourOfKey),
    chart("Tokens by model", byModel, "total_tokens", colourOfModel),
    chart("Requests by model", byModel, "requests", colourOfModel),
  );
  const minutes = window.bucket_seconds / 60;
  const bucket = minutes >= 1440 ? `${minutes / 1440} day` : minutes >= 60 ? `${minutes / 60} hour` : `${minutes} minute`;
  element("usage-range").textContent =
    `${new Date(window.since).toLocaleString()} – ${new Date(window.until).toLocaleString()}, in ${bucket} buckets. Tokens are prompt plus completion.`;
}

function renderRecent(recent) {
  element("recent")
    .querySelector("tbody")
    .replaceChildren(
      ...recent.map((request) => {
        const row = document.createElement("tr");
        row.dataset.requestId = request.request_id;
        const key = cell(request.key_name ?? request.key_id ?? "(no key)");
        if (request.key_id !== null) key.title = request.key_id;
        row.append(
          cell(formatClock(request.created_at)),
          cell(request.request_id, "mono"),
          key,
          cell(request.model ?? "—"),
          cell(String(request.status), request.status >= 400 ? "number bad" : "number"),
          cell(request.outcome, `outcome outcome-${request.outcome}`),
          cell(request.finish_reason ?? "—"),
          cell(formatCount(request.prompt_tokens), "number"),
          cell(formatCount(request.completion_tokens), "number"),
          cell(formatMs(request.time_to_first_token_ms), "number"),
          cell(formatMs(request.duration_ms), "number"),
        );
        return row;
      }),
    );
}

async function refresh() {
  if (loading) return;
  loading = true;
  try {
    const dashboard = await getJson(`/admin/v1/dashboard?window=${encodeURIComponent(windowSelect.value)}`, tokenInput.value.trim());
    element("error").hidden = true;
    renderLoad(dashboard.load);
    renderModels(dashboard.load.models);
    renderCharts(dashboard);
    renderRecent(dashboard.recent);
    element("updated").textContent = `Updated ${formatClock(dashboard.generated_at)}.`;
  } catch (error) {
    renderError(element("error"), error);
    element("updated").textContent = "Could not load the dashboard.";
    // A wrong or missing token will not fix itself: wait for a new one instead of retrying.
    if (error instanceof ServerError && (error.status === 401 || error.status === 403)) autoRefresh.checked = false;
  } finally {
    loading = false;
    schedule();
  }
}

function schedule() {
  clearTimeout(timer);
  timer = autoRefresh.checked && document.visibilityState === "visible" ? setTimeout(refresh, REFRESH_MS) : null;
}

function useToken() {
  sessionSecret.set(TOKEN_STORAGE, tokenInput.value.trim());
  element("token-status").textContent = tokenInput.value.trim() === "" ? "No token given." : "Token kept for this browser session.";
  autoRefresh.checked = true;
  void refresh();
}

element("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  useToken();
});
element("forget-token").addEventListener("click", () => {
  tokenInput.value = "";
  sessionSecret.set(TOKEN_STORAGE, "");
  element("token-status").textContent = "Token forgotten.";
  autoRefresh.checked = false;
  schedule();
  tokenInput.focus();
});
windowSelect.addEventListener("change", () => void refresh());
let resizing = null;
addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => lastDashboard !== null && renderCharts(lastDashboard), 150);
});
element("refresh").addEventListener("click", () => void refresh());
autoRefresh.addEventListener("change", () => (autoRefresh.checked ? void refresh() : schedule()));
document.addEventListener("visibilitychange", () => (document.visibilityState === "visible" ? void refresh() : schedule()));

tokenInput.value = sessionSecret.get(TOKEN_STORAGE);
if (tokenInput.value === "") {
  autoRefresh.checked = false;
  tokenInput.focus();
} else {
  void refresh();
}
