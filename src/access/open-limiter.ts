/** Opens the configured rate limiter: Redis when a URL is given, else process memory. */
import { Redis } from "ioredis";
import type { BudgetSeed, RateLimiter } from "./limiter.js";
import { MemoryLimiter } from "./memory-limiter.js";
import { RedisLimiter } from "./redis-limiter.js";

export interface OpenLimiterOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`); unset keeps counters in memory. */
  readonly redisUrl?: string;
  readonly budgetSeed: BudgetSeed;
  /** Prefix of every Redis key. Defaults to `parley:`. */
  readonly keyPrefix?: string;
  /** How long to wait for Redis to answer PING at start. Defaults to 5 s. */
  readonly connectTimeoutMs?: number;
}

/** Connects and PINGs first, so that a wrong URL fails at start, not on the first request. */
export async function openLimiter(options: OpenLimiterOptions): Promise<RateLimiter> {
  const { redisUrl, budgetSeed } = options;
  if (redisUrl === undefined) return new MemoryLimiter({ budgetSeed });
  const shown = redactUrl(redisUrl);
  const timeoutMs = options.connectTimeoutMs ?? 5_000;
  let redis: Redis;
  try {
    redis = new Redis(redisUrl, {
      lazyConnect: true,
      connectTimeout: timeoutMs,
      // A request fails fast while Redis is away instead of queueing behind a reconnect.
      maxRetriesPerRequest: 1,
      retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
    });
  } catch (error) {
    throw new Error(`REDIS_URL ${shown} is not a valid Redis URL: ${scrub(error, redisUrl)}`);
  }
  // Reported through failing commands; the handler keeps it from being an unhandled event.
  let lastError: unknown;
  redis.on("error", (error: unknown) => {
    lastError = error;
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    await Promise.race([redis.connect().then(() => redis.ping()), timeout]);
  } catch (error) {
    redis.disconnect();
    // ioredis rejects with "Connection is closed"; the cause (refused, WRONGPASS) came as an event.
    throw new Error(`cannot reach Redis at ${shown}: ${scrub(lastError ?? error, redisUrl)}`);
  } finally {
    clearTimeout(timer);
  }
  return new RedisLimiter(redis, { budgetSeed, ...(options.keyPrefix !== undefined ? { keyPrefix: options.keyPrefix } : {}) });
}

/** The URL with its password replaced by `***`; a URL that does not parse is not shown at all. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparseable URL)";
  }
}

/** An error's message with the URL's password cut out, whatever the driver put in it. */
function scrub(error: unknown, url: string): string {
  let message = (error instanceof Error ? error.message : String(error)).split(url).join(redactUrl(url));
  let password = "";
  try {
    password = new URL(url).password;
  } catch {
    return message;
  }
  for (const secret of [password, safeDecode(password)]) {
    if (secret.length > 0) message = message.split(secret).join("***");
  }
  return message;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
