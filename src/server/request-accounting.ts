/**
 * Stage 9 of DESIGN §2 for a chat completion: exactly one usage-ledger row and one log
 * line per authenticated request, whatever its outcome, and the settlement of the key's
 * token reservation. A completed response calls `commit()` before its last byte, so its
 * row is durable (and its reservation settled) before the client has the whole answer,
 * and `finish()` after it, so the metrics and the log line stay off the client's wait;
 * every other path calls `finish()` in a `finally`.
 */
import type { FastifyRequest } from "fastify";
import type { AccessControl } from "../access/access-control.js";
import type { LimitLease } from "../access/limiter.js";
import type { LedgerOutcome, LedgerRow } from "../access/types.js";
import type { ApiError } from "../protocol/errors.js";
import type { Metrics } from "../telemetry/metrics.js";

export interface Tokens {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
}

const NO_TOKENS: Tokens = { promptTokens: 0, completionTokens: 0, cachedTokens: 0 };

export class RequestAccounting {
  readonly #request: FastifyRequest;
  readonly #access: AccessControl;
  readonly #metrics: Metrics;
  readonly #createdAt = new Date();
  readonly #started = performance.now();
  #model: string | null = null;
  #status = 200;
  #outcome: LedgerOutcome = "completed";
  #finishReason: string | null = null;
  #tokens: Tokens = NO_TOKENS;
  #timeToFirstTokenMs: number | null = null;
  #lastDeltaAt: number | null = null;
  #lease: LimitLease | null = null;
  #committed: Promise<LedgerRow> | undefined;
  #finished: Promise<void> | undefined;

  constructor(request: FastifyRequest, access: AccessControl, metrics: Metrics) {
    this.#request = request;
    this.#access = access;
    this.#metrics = metrics;
  }

  set model(model: string) {
    this.#model = model;
  }

  set lease(lease: LimitLease | null) {
    this.#lease = lease;
  }

  /** A piece of generated text went out: the first sets time to first token, the rest inter-token latency. */
  markDelta(): void {
    const now = performance.now();
    if (this.#lastDeltaAt === null) this.#timeToFirstTokenMs = Math.round(now - this.#started);
    else this.#metrics.observeInterToken(this.#model ?? "", (now - this.#lastDeltaAt) / 1000);
    this.#lastDeltaAt = now;
  }

  /** Tokens consumed so far (prompt as evaluated, completion as generated). */
  set tokens(tokens: Tokens) {
    this.#tokens = tokens;
  }

  completed(finishReason: string, tokens: Tokens): void {
    this.#outcome = "completed";
    this.#finishReason = finishReason;
    this.#tokens = tokens;
  }

  abandoned(): void {
    this.#outcome = "abandoned";
    this.#status = 499;
  }

  /** Refused (4xx, 429, 503) or failed (5xx) — before or during generation. */
  failed(error: ApiError): void {
    this.answered(error.status);
  }

  /** Answered with an error status; 5xx other than 503 is the server's failure. */
  answered(status: number): void {
    this.#status = status;
    this.#outcome = status >= 500 && status !== 503 ? "failed" : "rejected";
  }

  /** Cut short by the server at the shutdown drain deadline (`status` as answered). */
  stopped(status: number): void {
    this.#outcome = "stopped";
    this.#status = status;
  }

  /** In-stream failure after the 200 was sent. */
  failedMidStream(): void {
    this.#outcome = "failed";
  }

  get outcome(): LedgerOutcome {
    return this.#outcome;
  }

  /** Writes the ledger row and settles the reservation; idempotent. The outcome is fixed from here on. */
  commit(): Promise<void> {
    return this.#commit().then(() => undefined);
  }

  /** `commit()`, then the metrics and the log line; idempotent. */
  finish(): Promise<void> {
    this.#finished ??= this.#commit().then((row) => this.#report(row));
    return this.#finished;
  }

  #commit(): Promise<LedgerRow> {
    this.#committed ??= this.#write();
    return this.#committed;
  }

  async #write(): Promise<LedgerRow> {
    const row: LedgerRow = {
      requestId: this.#request.id,
      keyId: this.#request.principal?.key?.id ?? null,
      model: this.#model,
      promptTokens: this.#tokens.promptTokens,
      completionTokens: this.#tokens.completionTokens,
      cachedTokens: this.#tokens.cachedTokens,
      status: this.#status,
      outcome: this.#outcome,
      finishReason: this.#finishReason,
      timeToFirstTokenMs: this.#timeToFirstTokenMs,
      durationMs: Math.round(performance.now() - this.#started),
      createdAt: this.#createdAt,
    };
    this.#request.accounted = true;
    const used = row.promptTokens + row.completionTokens;
    try {
      await this.#access.record(row);
    } catch (error) {
      // The response still goes out; the row is kept in the log so no usage is lost.
      this.#request.log.error({ err: error, ledgerRow: row }, "usage ledger write failed");
    }
    try {
      await this.#lease?.settle(used);
    } catch (error) {
      this.#request.log.error({ err: error }, "rate-limit settlement failed");
    }
    return row;
  }

  #report(row: LedgerRow): void {
    this.#metrics.observeChat({ route: this.#request.routeOptions.url ?? this.#request.url, ...row });
    const { requestId: _id, createdAt: _at, ...fields } = row;
    this.#request.log.info({ route: this.#request.url, ...fields }, "chat completion");
  }
}
