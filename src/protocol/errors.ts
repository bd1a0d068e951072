/**
 * The one error envelope and the one table of error codes for the whole server.
 *
 * Every error Parley answers — 4xx, 5xx, and errors inside an SSE stream — is
 * `{"error": {"message", "type", "param", "code"}}` with a string `code` taken from
 * {@link ERROR_CODES}. `docs/errors.md` documents the same table; a unit test fails when
 * the two disagree.
 */

/** OpenAI's error `type` values that Parley uses. */
export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "insufficient_quota"
  | "server_error"
  | "overloaded_error";

interface ErrorCodeSpec {
  readonly status: number;
  readonly type: ErrorType;
  /** When the client should retry, in seconds: sets `Retry-After`. */
  readonly retryAfterSeconds?: number;
}

export const ERROR_CODES = {
  invalid_api_key: { status: 401, type: "authentication_error" },
  invalid_json: { status: 400, type: "invalid_request_error" },
  invalid_type: { status: 400, type: "invalid_request_error" },
  invalid_value: { status: 400, type: "invalid_request_error" },
  missing_required_parameter: { status: 400, type: "invalid_request_error" },
  unsupported_parameter: { status: 400, type: "invalid_request_error" },
  context_length_exceeded: { status: 400, type: "invalid_request_error" },
  upstream_bad_request: { status: 400, type: "invalid_request_error" },
  permission_denied: { status: 403, type: "permission_error" },
  model_not_found: { status: 404, type: "not_found_error" },
  not_found: { status: 404, type: "not_found_error" },
  request_too_large: { status: 413, type: "invalid_request_error" },
  unsupported_media_type: { status: 415, type: "invalid_request_error" },
  rate_limit_exceeded: { status: 429, type: "rate_limit_error" },
  insufficient_quota: { status: 429, type: "insufficient_quota" },
  server_overloaded: { status: 503, type: "overloaded_error", retryAfterSeconds: 1 },
  model_loading: { status: 503, type: "overloaded_error", retryAfterSeconds: 5 },
  model_unavailable: { status: 503, type: "server_error", retryAfterSeconds: 30 },
  server_shutting_down: { status: 503, type: "overloaded_error", retryAfterSeconds: 1 },
  storage_unavailable: { status: 503, type: "server_error", retryAfterSeconds: 5 },
  generation_failed: { status: 500, type: "server_error" },
  internal_error: { status: 500, type: "server_error" },
  upstream_error: { status: 502, type: "server_error" },
  upstream_timeout: { status: 504, type: "server_error" },
} as const satisfies Record<string, ErrorCodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: ErrorCode };
}

/** An error that Parley answers to the client as it is; anything else becomes `internal_error`. */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly param: string | null;
  readonly status: number;
  readonly type: ErrorType;
  readonly retryAfterSeconds: number | undefined;
  /** Extra response headers, e.g. `x-ratelimit-*` on a 429. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { param?: string | null; retryAfterSeconds?: number; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ApiError";
    const spec: ErrorCodeSpec = ERROR_CODES[code];
    this.code = code;
    this.param = options.param ?? null;
    this.status = spec.status;
    this.type = spec.type;
    this.retryAfterSeconds = options.retryAfterSeconds ?? spec.retryAfterSeconds;
    this.headers = options.headers ?? {};
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Wraps anything thrown into an ApiError without leaking internals to the client. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  return new ApiError("internal_error", "The server had an error while processing your request.");
}
