import { randomBytes } from "node:crypto";

/** `cmpl-` followed by 32 lowercase hex digits, as in the seed's response. */
export function newCompletionId(): string {
  return `cmpl-${randomBytes(16).toString("hex")}`;
}

/** A request id for `x-request-id` when the client sent none (or an unusable one). */
export function newRequestId(): string {
  return `req-${randomBytes(12).toString("hex")}`;
}

const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:\-]{1,128}$/;

/**
 * The client's `x-request-id` is echoed only when it is short and made of safe
 * characters, so it can go into headers and log lines unescaped.
 */
export function acceptRequestId(header: string | string[] | undefined): string {
  const value = Array.isArray(header) ? header[0] : header;
  return value !== undefined && CLIENT_REQUEST_ID.test(value) ? value : newRequestId();
}
