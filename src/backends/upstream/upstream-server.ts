/**
 * One upstream server of a pool: its pooled HTTP connections (undici), its circuit breaker,
 * what it has in flight, how fast it has been, and its active health check.
 */
import { Pool, type Dispatcher } from "undici";
import type { UpstreamHealth, UpstreamServerConfig, UpstreamTimeouts } from "../../config/model-file.js";
import { CircuitBreaker, type BreakerState } from "./circuit-breaker.js";
import { redact } from "./upstream-failure.js";

/** Latencies remembered for the admin view's percentiles. */
const RECENT = 128;

export interface UpstreamView {
  readonly url: string;
  readonly weight: number;
  readonly state: BreakerState;
  /** Why it is not in use, when it is not; cleared by a success. */
  readonly last_error: string | null;
  readonly consecutive_failures: number;
  /** When an ejected upstream gets its next trial (ISO time), else null. */
  readonly retry_at: string | null;
  readonly in_flight: number;
  readonly requests: number;
  readonly failures: number;
  readonly last_check: { readonly at: string; readonly ok: boolean } | null;
  /** Time to first token (streaming) or to the whole answer, over the last requests, in ms. */
  readonly latency_ms: { readonly p50: number | null; readonly p90: number | null; readonly samples: number };
}

export class UpstreamServer {
  readonly url: string;
  readonly weight: number;
  readonly breaker: CircuitBreaker;
  /** Path of the chat endpoint on the origin, e.g. `/v1/chat/completions`. */
  readonly chatPath: string;
  readonly #apiKey: string | undefined;
  readonly #pool: Pool;
  readonly #healthPath: string;
  readonly #health: UpstreamHealth;
  #inFlight = 0;
  #requests = 0;
  #failures = 0;
  #lastError: string | null = null;
  #lastCheck: { at: number; ok: boolean } | null = null;
  /** Until when a 429 asked to be left alone. */
  #coolUntil = 0;
  readonly #latencies: number[] = [];
  #checking = false;

  constructor(config: UpstreamServerConfig, timeouts: UpstreamTimeouts, health: UpstreamHealth) {
    this.url = config.url;
    this.weight = config.weight;
    this.#apiKey = config.apiKey;
    this.#health = health;
    const base = new URL(config.url);
    const basePath = base.pathname.replace(/\/+$/, "");
    this.chatPath = `${basePath}/chat/completions`;
    this.#healthPath = health.path ?? `${basePath}/models`;
    this.breaker = new CircuitBreaker(health);
    // Our own timers bound each phase (first token, idle, total); undici's only the connect.
    this.#pool = new Pool(base.origin, { connect: { timeout: timeouts.connectMs }, headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 10_000 });
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get secrets(): readonly string[] {
    return this.#apiKey === undefined ? [] : [this.#apiKey];
  }

  /** In rotation now: its breaker lets a request through and no 429 asked to wait. */
  available(now = Date.now()): boolean {
    return now >= this.#coolUntil && this.breaker.available(now);
  }

  /** Until when a 429 asked to be left alone (ms since the epoch), if that is still ahead. */
  coolingUntil(now = Date.now()): number | null {
    return this.#coolUntil > now ? this.#coolUntil : null;
  }

  /** Load relative to capacity, for least-outstanding choices. */
  load(): number {
    return this.#inFlight / this.weight;
  }

  headers(): Record<string, string> {
    const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream, application/json" };
    if (this.#apiKey !== undefined) headers.authorization = `Bearer ${this.#apiKey}`;
    return headers;
  }

  /** Sends a chat completion request; the caller owns the body and must consume or destroy it. */
  async post(body: string, signal: AbortSignal, requestId?: string): Promise<Dispatcher.ResponseData> {
    const headers = this.headers();
    if (requestId !== undefined) headers["x-request-id"] = requestId;
    return this.#pool.request({ method: "POST", path: this.chatPath, headers, body, signal });
  }

  begin(): void {
    this.#inFlight += 1;
    this.#requests += 1;
    this.breaker.attempt();
  }

  end(): void {
    this.#inFlight -= 1;
  }

  succeeded(latencyMs: number): void {
    this.breaker.success();
    this.#lastError = null;
    this.#latencies.push(latencyMs);
    if (this.#latencies.length > RECENT) this.#latencies.shift();
  }

  failed(message: string, unhealthy: boolean, retryAfterMs?: number): void {
    this.#failures += 1;
    this.#lastError = redact(message, this.secrets);
    if (unhealthy) this.breaker.failure();
    else this.breaker.settle();
    if (retryAfterMs !== undefined) this.#coolUntil = Math.max(this.#coolUntil, Date.now() + retryAfterMs);
  }

  /** An active check: GET the health path; 2xx passes. Overlapping checks are skipped. */
  async check(): Promise<boolean> {
    if (this.#checking) return this.#lastCheck?.ok ?? true;
    this.#checking = true;
    let ok = false;
    try {
      const response = await this.#pool.request({
        method: "GET",
        path: this.#healthPath,
        headers: this.#apiKey === undefined ? {} : { authorization: `Bearer ${this.#apiKey}` },
        signal: AbortSignal.timeout(this.#health.timeoutMs),
      });
      await response.body.dump();
      ok = response.statusCode >= 200 && response.statusCode < 300;
      if (!ok) this.#lastError = `health check: HTTP ${response.statusCode}`;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      this.#lastError = redact(`health check: ${typeof code === "string" ? code : error instanceof Error ? error.message : String(error)}`, this.secrets);
    } finally {
      this.#checking = false;
    }
    this.#lastCheck = { at: Date.now(), ok };
    const state = this.breaker.state();
    if (ok && state !== "open") {
      if (state === "half_open" || this.breaker.consecutiveFailures > 0) this.breaker.success();
    } else if (!ok) {
      this.breaker.failure();
    }
    return ok;
  }

  view(now = Date.now()): UpstreamView {
    const sorted = [...this.#latencies].sort((a, b) => a - b);
    const at = (q: number) => (sorted.length === 0 ? null : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number));
    const retryAt = this.breaker.retryAt(now);
    return {
      url: this.url,
      weight: this.weight,
      state: this.breaker.state(now),
      last_error: this.#lastError,
      consecutive_failures: this.breaker.consecutiveFailures,
      retry_at: retryAt === null ? null : new Date(retryAt).toISOString(),
      in_flight: this.#inFlight,
      requests: this.#requests,
      failures: this.#failures,
      last_check: this.#lastCheck === null ? null : { at: new Date(this.#lastCheck.at).toISOString(), ok: this.#lastCheck.ok },
      latency_ms: { p50: at(0.5), p90: at(0.9), samples: sorted.length },
    };
  }

  async close(): Promise<void> {
    await this.#pool.destroy();
  }
}
