/**
 * Why one attempt on one upstream failed, and what follows from it: whether another upstream
 * may be tried, whether it counts against this upstream's health, and the error the client
 * gets if no attempt succeeds. Messages shown to clients never carry the upstream's address
 * or credentials: {@link redact} removes URLs, host:port pairs, IP addresses and known secrets.
 */
import { ApiError } from "../../protocol/errors.js";
import { upstreamErrorMessage } from "./normalise.js";

export type FailureKind = "connect" | "reset" | "timeout" | "status" | "protocol";

export class UpstreamFailure extends Error {
  override readonly name = "UpstreamFailure";
  constructor(
    readonly kind: FailureKind,
    message: string,
    /** Another upstream may be tried (only ever before the client got a byte). */
    readonly retryable: boolean,
    /** Counts toward ejecting this upstream. */
    readonly unhealthy: boolean,
    /** What the client is told when this is the last failure. */
    readonly apiError: ApiError,
    /** For a 429: how long this upstream asked to be left alone, in ms. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

const MAX_MESSAGE = 500;

/** Removes what would tell a client where upstreams live or how Parley logs in to them. */
export function redact(message: string, secrets: readonly string[] = []): string {
  let text = message;
  for (const secret of secrets) if (secret.length >= 4) text = text.split(secret).join("[redacted]");
  text = text
    .replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi, "[upstream]")
    // Bracketed IPv6 (with a colon inside, so `messages[1]` is left alone), then bare IPv6
    // as Node writes it (`ECONNREFUSED ::1:8000`), leaving times such as 12:30:45.
    .replace(/\[[0-9a-f]*:[0-9a-f:.]*(%[\w.]+)?\](:\d+)?/gi, "[upstream]")
    .replace(/(?<![\w:.])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,8}(%[\w.]+)?(?![\w:])/gi, (run) => (run.includes("::") || run.split(":").length > 4 ? "[upstream]" : run))
    .replace(/\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b/g, "[upstream]")
    .replace(/\blocalhost(:\d+)?\b/gi, "[upstream]")
    // host.name:port outside a URL
    .replace(/\b[a-z0-9-]+(\.[a-z0-9-]+)+:\d{1,5}\b/gi, "[upstream]")
    .replace(/\b(Bearer\s+)\S+/gi, "$1[redacted]");
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text;
}

/** `Retry-After` as seconds or an HTTP date, in ms; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined || raw.trim() === "") return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(raw)) return Math.round(Number(raw) * 1000);
  // Every HTTP-date form names a month and gives hh:mm:ss; Date.parse alone accepts "-1".
  if (!/[a-z]{3}\b.*\b\d{1,2}:\d{2}:\d{2}\b/i.test(raw)) return undefined;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** How vLLM, SGLang, TGI, llama-server, Ollama and OpenAI word "the prompt does not fit". */
const CONTEXT_LENGTH = /context length|context window|maximum context|too many tokens|exceeds? the (available )?context|prompt is too long|input.*too long|n_ctx|tokens \+ `?max_new_tokens`? must be <=|`?inputs`? must have less than \d+ tokens/i;

const failed = (detail: string) => new ApiError("upstream_error", `The upstream inference server failed: ${detail}`);

/** An HTTP answer other than 200 from an upstream's chat completions endpoint. */
export function statusFailure(status: number, body: string, retryAfter: string | string[] | undefined, options: { secrets: readonly string[]; maxRetryAfterMs: number }): UpstreamFailure {
  let parsed: unknown = body;
  try {
    parsed = JSON.parse(body);
  } catch {
    // Plain text bodies are fine: their text is the message.
  }
  const said = redact(upstreamErrorMessage(parsed) ?? `HTTP ${status}`, options.secrets);
  const message = `HTTP ${status}: ${said}`;
  if (status === 429) {
    const waitMs = parseRetryAfter(retryAfter);
    const seconds = waitMs === undefined ? 1 : Math.max(1, Math.ceil(waitMs / 1000));
    const overloaded = new ApiError("server_overloaded", "The upstream inference servers are overloaded; retry after the time in Retry-After.", { retryAfterSeconds: seconds });
    const retryable = waitMs === undefined || waitMs <= options.maxRetryAfterMs;
    return new UpstreamFailure("status", message, retryable, false, overloaded, waitMs ?? 1000);
  }
  if (status === 400 || status === 413 || status === 422) {
    // The request itself is at fault: every upstream would say the same.
    const code = CONTEXT_LENGTH.test(said) ? "context_length_exceeded" : "upstream_bad_request";
    const apiError = new ApiError(code, `The upstream inference server rejected the request: ${said}`, { param: code === "context_length_exceeded" ? "messages" : null });
    return new UpstreamFailure("status", message, false, false, apiError);
  }
  if (status === 401 || status === 403) {
    return new UpstreamFailure("status", message, true, true, failed("it refused Parley's credentials (check the upstream api_key)."));
  }
  if (status === 404) {
    return new UpstreamFailure("status", message, true, true, failed("it does not serve this model (check upstream_model)."));
  }
  if (status === 408 || status >= 500) {
    return new UpstreamFailure("status", message, true, status !== 408, failed(`HTTP ${status}: ${said}`));
  }
  return new UpstreamFailure("status", message, false, false, failed(`HTTP ${status}: ${said}`));
}

/** A failure below HTTP: the connection could not be made, broke, or went silent. */
export function transportFailure(kind: "connect" | "reset" | "timeout" | "protocol", detail: string): UpstreamFailure {
  const apiError =
    kind === "timeout"
      ? new ApiError("upstream_timeout", `The upstream inference server timed out: ${detail}.`)
      : failed(kind === "connect" ? "it could not be reached." : kind === "reset" ? "the connection broke." : `${detail}.`);
  return new UpstreamFailure(kind, `${kind}: ${detail}`, true, true, apiError);
}

/** Classifies what undici (or our own timers) threw for one attempt. */
export function classifyError(error: unknown, timedOut: string | null): UpstreamFailure {
  if (error instanceof UpstreamFailure) return error;
  if (timedOut !== null) return transportFailure("timeout", timedOut);
  const code = (error as { code?: unknown } | null)?.code;
  const text = error instanceof Error ? error.message : String(error);
  if (code === "ECONNREFUSED" || code === "UND_ERR_CONNECT_TIMEOUT" || code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EHOSTUNREACH") {
    return transportFailure("connect", String(code));
  }
  if (error instanceof Error && error.name === "UpstreamProtocolError") return transportFailure("protocol", text);
  return transportFailure("reset", typeof code === "string" ? code : text);
}
