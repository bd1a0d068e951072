import { randomFillSync } from "node:crypto";

/**
 * Random bytes from the system's CSPRNG, drawn 4 KiB at a time and each used once: one
 * call into OpenSSL (and its fork check, a getpid syscall) per ~200 ids rather than per id.
 */
const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let used = POOL_BYTES;

function randomHex(bytes: number): string {
  if (used + bytes > POOL_BYTES) {
    randomFillSync(pool);
    used = 0;
  }
  const hex = pool.toString("hex", used, used + bytes);
  used += bytes;
  return hex;
}

/** `cmpl-` followed by 32 lowercase hex digits, as in the seed's response. */
export function newCompletionId(): string {
  return `cmpl-${randomHex(16)}`;
}

/** A request id for `x-request-id` when the client sent none (or an unusable one). */
export function newRequestId(): string {
  return `req-${randomHex(12)}`;
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
