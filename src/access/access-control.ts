/**
 * Stages 2 and 5 of DESIGN §2 for multi-tenant access, and stage 9's ledger row:
 * who is calling (static `--api-key` keys or keys from the store), may they use this
 * model, do their limits admit the request — and one ledger row per request afterwards.
 */
import { ApiError } from "../protocol/errors.js";
import { hashSecret, sameHash } from "./keys.js";
import { keyStatus } from "./key-spec.js";
import type { LimitLease, RateLimiter, RateLimitState } from "./limiter.js";
import { rateLimitHeaders } from "./rate-limit-headers.js";
import type { AccessStore } from "./store.js";
import type { ApiKeyRecord, LedgerRow } from "./types.js";

/** Who a request runs as. `key` is null for static keys and for open (loopback, keyless) mode. */
export interface Principal {
  readonly key: ApiKeyRecord | null;
}

export interface Admitted {
  readonly lease: LimitLease | null;
  /** `x-ratelimit-*` headers for the response. */
  readonly headers: Record<string, string>;
}

export interface AccessControlOptions {
  readonly store: AccessStore;
  readonly limiter: RateLimiter;
  /** Keys from `--api-key` / `PARLEY_API_KEYS`: no limits, no ledger key id. */
  readonly staticKeys: readonly string[];
  readonly now?: () => number;
}

/** How long "does the store hold any key?" is cached; a key created in-process clears it. */
const HAS_KEYS_TTL_MS = 1000;

function bearer(authorization: string | undefined): string | null {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "");
  return match?.[1] ?? null;
}

const MISSING_KEY =
  "You didn't provide an API key. Provide it in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).";

export class AccessControl {
  readonly #store: AccessStore;
  readonly #limiter: RateLimiter;
  readonly #staticHashes: readonly string[];
  readonly #now: () => number;
  #hasKeys: { value: boolean; at: number } | undefined;

  constructor(options: AccessControlOptions) {
    this.#store = options.store;
    this.#limiter = options.limiter;
    this.#staticHashes = options.staticKeys.map(hashSecret);
    this.#now = options.now ?? Date.now;
  }

  get store(): AccessStore {
    return this.#store;
  }

  /** Call after creating a key in this process, so auth turns on at once. */
  keysChanged(): void {
    this.#hasKeys = undefined;
  }

  async #storeHasKeys(): Promise<boolean> {
    const now = this.#now();
    if (this.#hasKeys === undefined || now - this.#hasKeys.at > HAS_KEYS_TTL_MS) {
      this.#hasKeys = { value: await unavailableOnError("key store", () => this.#store.hasKeys()), at: now };
    }
    return this.#hasKeys.value;
  }

  /** Whether requests need a key: static keys are configured, or the store holds any key. */
  async authRequired(): Promise<boolean> {
    return this.#staticHashes.length > 0 || (await this.#storeHasKeys());
  }

  /** Stage 2: the principal, or 401 `invalid_api_key` (missing, unknown, revoked, expired). */
  async authenticate(authorization: string | undefined): Promise<Principal> {
    if (!(await this.authRequired())) return { key: null };
    const secret = bearer(authorization);
    if (secret === null) throw new ApiError("invalid_api_key", MISSING_KEY);
    const hash = hashSecret(secret);
    let isStatic = false;
    for (const known of this.#staticHashes) isStatic = sameHash(hash, known) || isStatic;
    if (isStatic) return { key: null };
    const record = await unavailableOnError("key store", () => this.#store.findKeyByHash(hash));
    if (record === undefined || !sameHash(record.hash, hash)) throw new ApiError("invalid_api_key", "Incorrect API key provided.");
    const status = keyStatus(record, this.#now());
    if (status === "revoked") throw new ApiError("invalid_api_key", `API key ${record.prefix}… has been revoked.`);
    if (status === "expired") throw new ApiError("invalid_api_key", `API key ${record.prefix}… expired at ${record.expiresAt?.toISOString()}.`);
    return { key: record };
  }

  /** Stage 4 for a key with an allow-list: a model outside it is indistinguishable from an unknown one. */
  checkModel(principal: Principal, model: string): void {
    const allowed = principal.key?.models;
    if (allowed !== undefined && allowed !== null && !allowed.includes(model)) {
      throw new ApiError("model_not_found", `The model '${model}' does not exist or you do not have access to it.`, { param: "model" });
    }
  }

  /** Stage 5: the key's limits; 429 with `Retry-After` and `x-ratelimit-*` when one is used up. */
  async admit(principal: Principal, reserveTokens: number, requestId: string): Promise<Admitted> {
    const key = principal.key;
    if (key === null) return { lease: null, headers: {} };
    const result = await unavailableOnError("rate-limit store", () =>
      this.#limiter.admit({ keyId: key.id, limits: key, reserveTokens, requestId, now: this.#now() }),
    );
    const headers = rateLimitHeaders(result.state);
    if (result.admitted) return { lease: result.lease, headers };
    throw refusal(result.reason, result.retryAfterMs, result.state, headers, result.budgetRemaining);
  }

  /** Stage 9: one ledger row; durable when the promise resolves. */
  record(row: LedgerRow): Promise<void> {
    return this.#store.appendLedger(row);
  }

  async close(): Promise<void> {
    await this.#limiter.close();
    await this.#store.close();
  }
}

/** A store that cannot be reached is a 503 for the client (the cause goes to the log), never a 500. */
async function unavailableOnError<T>(what: string, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    throw new ApiError("storage_unavailable", `Parley cannot reach its ${what} right now. Retry shortly.`, { cause: error });
  }
}

function refusal(
  reason: "requests" | "tokens" | "concurrency" | "budget",
  retryAfterMs: number | null,
  state: RateLimitState,
  headers: Record<string, string>,
  budgetRemaining: number | undefined,
): ApiError {
  const retryAfterSeconds = retryAfterMs === null ? undefined : Math.max(1, Math.ceil(retryAfterMs / 1000));
  if (reason === "budget") {
    const when = retryAfterSeconds === undefined ? "It does not renew." : `It renews in ${retryAfterSeconds} s.`;
    return new ApiError(
      "insufficient_quota",
      `This key's token budget is exhausted for the period: ${budgetRemaining ?? 0} tokens left, and the request reserves its max_tokens. ${when}`,
      { headers: { ...headers, "x-should-retry": "false" }, ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}) },
    );
  }
  const what =
    reason === "requests"
      ? `requests per minute (limit ${state.requests?.limit ?? "?"})`
      : reason === "tokens"
        ? `tokens per minute (limit ${state.tokens?.limit ?? "?"}; the request reserves its max_tokens)`
        : "concurrent requests";
  return new ApiError("rate_limit_exceeded", `Rate limit reached for ${what}. Please try again in ${retryAfterSeconds ?? 1}s.`, {
    headers,
    retryAfterSeconds: retryAfterSeconds ?? 1,
  });
}
