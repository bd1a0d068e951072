/** OpenAI's `x-ratelimit-*` response headers, from a limiter's state. */
import type { RateLimitState } from "./limiter.js";

/** The headers of the limits that are set; none for a key without request or token limits. */
export function rateLimitHeaders(state: RateLimitState): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, part] of [["requests", state.requests], ["tokens", state.tokens]] as const) {
    if (part === null) continue;
    headers[`x-ratelimit-limit-${name}`] = String(part.limit);
    headers[`x-ratelimit-remaining-${name}`] = String(part.remaining);
    headers[`x-ratelimit-reset-${name}`] = formatResetDuration(part.resetMs);
  }
  return headers;
}

/**
 * A duration as OpenAI writes it (Go's `time.Duration` format, to the millisecond):
 * `120ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`; `0s` for nothing. Rounds up to a whole ms, so
 * a wait is never reported shorter than it is.
 */
export function formatResetDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) return "0s";
  const total = Math.ceil(ms);
  if (total < 1000) return `${total}ms`;
  const hours = Math.floor(total / 3_600_000);
  const minutes = Math.floor((total % 3_600_000) / 60_000);
  const millis = total % 60_000;
  const seconds = `${Math.floor(millis / 1000)}${millis % 1000 === 0 ? "" : `.${String(millis % 1000).padStart(3, "0").replace(/0+$/, "")}`}s`;
  if (hours > 0) return `${hours}h${minutes}m${seconds}`;
  if (minutes > 0) return `${minutes}m${seconds}`;
  return seconds;
}
