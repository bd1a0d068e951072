/**
 * `GET /admin/v1/dashboard` (admin token, checked in the app's onRequest hook): what the
 * dashboard page shows in one call — usage over time by key and by model for a window,
 * live load per model, and the most recent requests from the usage ledger.
 *
 * Query: `window` one of 15m, 1h (default), 6h, 24h, 7d, 30d; `recent` how many ledger
 * rows, 0–100 (default 25).
 */
import type { FastifyInstance } from "fastify";
import type { AccessControl } from "../../access/access-control.js";
import type { LedgerRow } from "../../access/types.js";
import { parseUsageWindow, usageTimeline, USAGE_WINDOWS, type UsageSeries } from "../../access/usage-timeline.js";
import type { ModelRegistry } from "../../backends/registry.js";
import { ApiError } from "../../protocol/errors.js";
import { LiveLoad, type ModelLoad } from "../live-load.js";

export interface DashboardRouteOptions {
  readonly registry: ModelRegistry;
  readonly access: AccessControl;
}

export const DEFAULT_RECENT = 25;
export const MAX_RECENT = 100;

/** The usage group of requests made without a stored key (static keys, open mode). */
const NO_KEY = "(none)";
/** The usage group of requests refused before their model was read (e.g. a 400 on the body). */
const NO_MODEL_NAMES: ReadonlyMap<string, string> = new Map([["(none)", "no model"]]);

function singleString(query: Record<string, unknown>, name: string): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new ApiError("invalid_value", `Invalid '${name}': give it once, as a string.`, { param: name });
  return value;
}

function parseRecent(value: string | undefined): number {
  if (value === undefined) return DEFAULT_RECENT;
  const count = /^\d{1,3}$/.test(value) ? Number(value) : Number.NaN;
  if (!(count <= MAX_RECENT)) {
    throw new ApiError("invalid_value", `Invalid 'recent': expected an integer from 0 to ${MAX_RECENT}, got '${value.slice(0, 20)}'.`, {
      param: "recent",
    });
  }
  return count;
}

function seriesView(series: UsageSeries, names: ReadonlyMap<string, string>) {
  return {
    group: series.group,
    name: names.get(series.group) ?? null,
    requests: series.requests,
    prompt_tokens: series.promptTokens,
    completion_tokens: series.completionTokens,
    total_tokens: series.totalTokens,
  };
}

function modelView(load: ModelLoad) {
  return {
    id: load.id,
    names: load.names,
    state: load.state,
    failure: load.failure,
    running: load.running,
    waiting: load.waiting,
    sequences: load.sequences,
    engine: load.engine === null ? null : { threads: load.engine.threads, context_size: load.engine.contextSize, parallel: load.engine.parallel },
    generated_tokens: load.generatedTokens,
    tokens_per_second: load.tokensPerSecond === null ? null : Math.round(load.tokensPerSecond * 10) / 10,
  };
}

function requestView(row: LedgerRow, names: ReadonlyMap<string, string>) {
  return {
    request_id: row.requestId,
    created_at: row.createdAt.toISOString(),
    key_id: row.keyId,
    key_name: row.keyId === null ? null : (names.get(row.keyId) ?? null),
    model: row.model,
    status: row.status,
    outcome: row.outcome,
    finish_reason: row.finishReason,
    prompt_tokens: row.promptTokens,
    completion_tokens: row.completionTokens,
    cached_tokens: row.cachedTokens,
    total_tokens: row.promptTokens + row.completionTokens,
    time_to_first_token_ms: row.timeToFirstTokenMs,
    duration_ms: row.durationMs,
  };
}

export function registerDashboardRoutes(app: FastifyInstance, options: DashboardRouteOptions): void {
  const live = new LiveLoad(options.registry);
  live.start();
  app.addHook("onClose", async () => live.stop());

  app.get("/admin/v1/dashboard", async (request) => {
    const query = request.query as Record<string, unknown>;
    const window = parseUsageWindow(singleString(query, "window"));
    const recentCount = parseRecent(singleString(query, "recent"));
    const store = options.access.store;
    // As at admission, a store that cannot be reached is a 503 for the client, never a 500.
    const [timeline, recent, keys] = await Promise.all([usageTimeline(store, window), store.recentRequests(recentCount), store.listKeys()]).catch(
      (error: unknown) => {
        throw new ApiError("storage_unavailable", "Parley cannot reach its usage ledger right now. Retry shortly.", { cause: error });
      },
    );
    const keyNames = new Map(keys.map((key) => [key.id, key.name]));
    const seriesNames = new Map([...keyNames, [NO_KEY, "no key"]]);
    const models = live.snapshot();
    const tokensPerSecond = models.reduce((total, model) => total + (model.tokensPerSecond ?? 0), 0);
    return {
      object: "dashboard",
      generated_at: new Date().toISOString(),
      window: {
        name: window.name,
        since: timeline.since.toISOString(),
        until: timeline.until.toISOString(),
        bucket_seconds: window.bucketMs / 1000,
        available: USAGE_WINDOWS.map((choice) => choice.name),
      },
      usage: {
        buckets: timeline.bucketStarts.map((start) => start.toISOString()),
        by_key: timeline.byKey.map((series) => seriesView(series, seriesNames)),
        by_model: timeline.byModel.map((series) => seriesView(series, NO_MODEL_NAMES)),
      },
      load: {
        running: models.reduce((total, model) => total + model.running, 0),
        waiting: models.reduce((total, model) => total + model.waiting, 0),
        tokens_per_second: Math.round(tokensPerSecond * 10) / 10,
        models: models.map(modelView),
      },
      recent: recent.map((row) => requestView(row, keyNames)),
    };
  });
}
