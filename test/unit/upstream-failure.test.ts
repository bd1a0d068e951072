import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { UpstreamProtocolError } from "../../src/backends/upstream/sse-reader.js";
import { classifyError, parseRetryAfter, redact, statusFailure, UpstreamFailure } from "../../src/backends/upstream/upstream-failure.js";
import { UPSTREAM_FIXTURES_DIR } from "../helpers/fake-upstream.js";

const options = { secrets: [] as string[], maxRetryAfterMs: 2000 };
const fixture = (name: string) => readFileSync(path.join(UPSTREAM_FIXTURES_DIR, name), "utf8");

test("redact removes URLs, addresses with ports and localhost", () => {
  const cases: Array<[string, string]> = [
    ["fetch http://10.0.0.5:8000/v1/chat/completions failed", "10.0.0.5"],
    ["see https://gpu-3.internal.example:8443/v1?key=abc", "gpu-3.internal"],
    ["connect ECONNREFUSED 10.1.2.3:8000", "10.1.2.3"],
    ["bound to 192.168.0.7", "192.168.0.7"],
    ["listening on [::1]:8000", "::1"],
    ["peer [fe80::1ab:cdef]:9000 closed", "fe80"],
    ["peer [2001:db8::7] closed", "2001:db8"],
    ["call localhost:11434 now", "11434"],
    ["LOCALHOST refused", "LOCALHOST"],
  ];
  for (const [message, leaked] of cases) {
    const redacted = redact(message);
    assert.ok(!redacted.includes(leaked), `${message} → ${redacted}`);
    assert.ok(redacted.includes("[upstream]"), `${message} → ${redacted}`);
  }
  // The words around an address stay.
  assert.equal(redact("connect ECONNREFUSED 10.1.2.3:8000 (retrying)"), "connect ECONNREFUSED [upstream] (retrying)");
});

test("redact removes bearer tokens and the given secrets wherever they appear", () => {
  assert.equal(redact("sent Authorization: Bearer sk-live-abc123 and failed"), "sent Authorization: Bearer [redacted] and failed");
  assert.equal(redact("bearer abc.def"), "bearer [redacted]");
  const redacted = redact("key=tok-SECRET-99; again:tok-SECRET-99!", ["tok-SECRET-99"]);
  assert.ok(!redacted.includes("SECRET"), redacted);
  assert.equal(redacted, "key=[redacted]; again:[redacted]!");
  // Secrets too short to be told apart from ordinary text are left alone (no mangling every "a").
  assert.equal(redact("a cat sat", ["a"]), "a cat sat");
});

test("redact leaves a message without addresses or secrets as it is", () => {
  const message = "This model's maximum context length is 4096 tokens. However, you requested 4608 tokens (4096 in the messages, 512 in the completion).";
  assert.equal(redact(message), message);
});

test("redact caps the message length", () => {
  const redacted = redact("x".repeat(2000));
  assert.equal(redacted, `${"x".repeat(500)}…`);
  assert.equal(redact("y".repeat(500)), "y".repeat(500));
});

test("redact leaves array indexes such as messages[0] alone", () => {
  // `\[[0-9a-f:]+\]` (meant for bracketed IPv6) also matches "[0]", "[1]", "[cafe]".
  assert.equal(redact("Invalid value for messages[1].role"), "Invalid value for messages[1].role");
});

test("redact removes IPv6 addresses without brackets, as Node writes them", () => {
  // Node's own connect errors read "connect ECONNREFUSED ::1:8000".
  for (const message of ["connect ECONNREFUSED ::1:8000", "connect ETIMEDOUT 2001:db8::5:8000", "from fe80::1ab:cdef"]) {
    const redacted = redact(message);
    assert.ok(!/[0-9a-f]*::[0-9a-f]/i.test(redacted), `${message} → ${redacted}`);
  }
});

test("Retry-After as seconds", () => {
  assert.equal(parseRetryAfter("3"), 3000);
  assert.equal(parseRetryAfter(" 0 "), 0);
  assert.equal(parseRetryAfter("1.5"), 1500);
  assert.equal(parseRetryAfter(["2", "9"]), 2000);
});

test("Retry-After as an HTTP date, relative to now", () => {
  const now = Date.parse("Wed, 21 Oct 2025 07:28:00 GMT");
  assert.equal(parseRetryAfter("Wed, 21 Oct 2025 07:28:30 GMT", now), 30_000);
  // A date already past means now.
  assert.equal(parseRetryAfter("Wed, 21 Oct 2025 07:27:00 GMT", now), 0);
});

test("Retry-After absent or unreadable is undefined", () => {
  for (const value of [undefined, "", "  ", "soon", "5s", "1e3", "0x10", "Infinity", []]) {
    assert.equal(parseRetryAfter(value), undefined, JSON.stringify(value));
  }
});

test("Retry-After garbage that V8's lenient date parser accepts is unreadable, not now", () => {
  const now = Date.parse("Wed, 21 Oct 2025 07:28:00 GMT");
  for (const value of ["-1", "foo 12", "1 2"]) assert.equal(parseRetryAfter(value, now), undefined, value);
});

test("400 saying the context is too long, in each server's words → context_length_exceeded on messages, not retried", () => {
  for (const name of ["vllm.error.json", "vllm.error-nested.json", "sglang.error.json", "llamacpp.error.json"]) {
    const failure = statusFailure(400, fixture(name), undefined, options);
    assert.equal(failure.apiError.code, "context_length_exceeded", name);
    assert.equal(failure.apiError.status, 400, name);
    assert.equal(failure.apiError.param, "messages", name);
    assert.equal(failure.retryable, false, name);
    assert.equal(failure.unhealthy, false, name);
    assert.match(failure.apiError.message, /4096/, name);
  }
});

test("TGI's 422 'tokens + max_new_tokens must be <=' → context_length_exceeded", () => {
  const failure = statusFailure(422, fixture("tgi.error.json"), undefined, options);
  assert.equal(failure.apiError.code, "context_length_exceeded");
  assert.equal(failure.apiError.param, "messages");
  assert.equal(failure.retryable, false);
});

test("TGI's other context-length 422, '`inputs` must have less than N tokens', is recognised", () => {
  // TGI's validation.rs InputLength error, sent when the prompt alone exceeds --max-input-tokens.
  const body = JSON.stringify({ error: "Input validation error: `inputs` must have less than 4096 tokens. Given: 5000", error_type: "validation" });
  assert.equal(statusFailure(422, body, undefined, options).apiError.code, "context_length_exceeded");
});

test("other 400 and 422 answers → upstream_bad_request with the upstream's message, not retried, not unhealthy", () => {
  const tgi = statusFailure(422, JSON.stringify({ error: "Input validation error: `temperature` must be strictly positive", error_type: "validation" }), undefined, options);
  const vllm = statusFailure(400, JSON.stringify({ object: "error", message: "best_of must be 1 when using greedy sampling", type: "BadRequestError", param: null, code: 400 }), undefined, options);
  const fastapi = statusFailure(422, JSON.stringify({ detail: [{ loc: ["body", "messages"], msg: "field required", type: "missing" }] }), undefined, options);
  for (const failure of [tgi, vllm, fastapi]) {
    assert.equal(failure.apiError.code, "upstream_bad_request");
    assert.equal(failure.apiError.status, 400);
    assert.equal(failure.apiError.param, null);
    assert.equal(failure.retryable, false);
    assert.equal(failure.unhealthy, false);
  }
  assert.match(tgi.apiError.message, /temperature.*strictly positive/);
  assert.match(vllm.apiError.message, /best_of must be 1/);
  assert.match(fastapi.apiError.message, /HTTP 422/);
});

test("401, 403 and 404 → try another upstream, count against this one, and tell the client upstream_error", () => {
  for (const status of [401, 403, 404]) {
    const failure = statusFailure(status, JSON.stringify({ error: { message: "nope" } }), undefined, options);
    assert.equal(failure.retryable, true, String(status));
    assert.equal(failure.unhealthy, true, String(status));
    assert.equal(failure.apiError.code, "upstream_error", String(status));
    assert.equal(failure.apiError.status, 502, String(status));
    assert.equal(failure.kind, "status");
  }
  assert.match(statusFailure(401, "", undefined, options).apiError.message, /api_key/);
  assert.match(statusFailure(404, fixture("ollama.error-not-found.json"), undefined, options).apiError.message, /upstream_model/);
});

test("5xx → retryable and unhealthy, with the upstream's message; 408 → retryable but not unhealthy", () => {
  for (const status of [500, 502, 503, 504]) {
    const failure = statusFailure(status, fixture("ollama.error.json"), undefined, options);
    assert.equal(failure.retryable, true, String(status));
    assert.equal(failure.unhealthy, true, String(status));
    assert.equal(failure.apiError.code, "upstream_error", String(status));
    assert.match(failure.apiError.message, new RegExp(`HTTP ${status}: model requires more system memory`));
  }
  const timeout = statusFailure(408, "Request Timeout", undefined, options);
  assert.equal(timeout.retryable, true);
  assert.equal(timeout.unhealthy, false);
});

test("a plain-text or empty error body still gives a message", () => {
  assert.match(statusFailure(502, "<html><body>502 Bad Gateway</body></html>\n", undefined, options).apiError.message, /502 Bad Gateway/);
  assert.match(statusFailure(503, "", undefined, options).apiError.message, /HTTP 503/);
});

test("other statuses → not retried", () => {
  for (const status of [405, 409, 418]) assert.equal(statusFailure(status, "", undefined, options).retryable, false, String(status));
});

test("the client's message never carries the upstream's address or key", () => {
  const body = JSON.stringify({ error: { message: "proxy http://10.0.0.5:8000/v1 rejected key sk-upstream-key-123 from 172.16.0.2:51234" } });
  const failure = statusFailure(500, body, undefined, { secrets: ["sk-upstream-key-123"], maxRetryAfterMs: 2000 });
  for (const text of [failure.apiError.message, failure.message]) {
    assert.ok(!text.includes("10.0.0.5"), text);
    assert.ok(!text.includes("sk-upstream-key-123"), text);
    assert.ok(!text.includes("172.16.0.2"), text);
  }
});

test("429 with a short Retry-After → retry elsewhere, not unhealthy, server_overloaded with its delay", () => {
  const failure = statusFailure(429, JSON.stringify({ error: { message: "busy" } }), "1", options);
  assert.equal(failure.retryable, true);
  assert.equal(failure.unhealthy, false);
  assert.equal(failure.retryAfterMs, 1000);
  assert.equal(failure.apiError.code, "server_overloaded");
  assert.equal(failure.apiError.status, 503);
  assert.equal(failure.apiError.retryAfterSeconds, 1);
  // At the limit still counts as short; a fraction of a second rounds up.
  assert.equal(statusFailure(429, "", "2", options).retryable, true);
  assert.equal(statusFailure(429, "", "1.2", options).apiError.retryAfterSeconds, 2);
});

test("429 with a long Retry-After → not retried, and the client is told to wait that long", () => {
  const failure = statusFailure(429, "", "30", options);
  assert.equal(failure.retryable, false);
  assert.equal(failure.unhealthy, false);
  assert.equal(failure.retryAfterMs, 30_000);
  assert.equal(failure.apiError.code, "server_overloaded");
  assert.equal(failure.apiError.retryAfterSeconds, 30);
});

test("429 without Retry-After → retried elsewhere, this upstream left alone for a second", () => {
  const failure = statusFailure(429, "Too Many Requests", undefined, options);
  assert.equal(failure.retryable, true);
  assert.equal(failure.retryAfterMs, 1000);
  assert.equal(failure.apiError.retryAfterSeconds, 1);
});

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

test("classifyError: refused or unresolvable connections are connect failures", () => {
  for (const code of ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "UND_ERR_CONNECT_TIMEOUT"]) {
    const failure = classifyError(withCode(`connect ${code} 10.0.0.5:8000`, code), null);
    assert.equal(failure.kind, "connect", code);
    assert.equal(failure.retryable, true, code);
    assert.equal(failure.unhealthy, true, code);
    assert.equal(failure.apiError.code, "upstream_error", code);
    assert.ok(!failure.apiError.message.includes("10.0.0.5"), failure.apiError.message);
  }
});

test("classifyError: a broken connection is a reset, whatever its message says", () => {
  const reset = classifyError(withCode("read ECONNRESET", "ECONNRESET"), null);
  assert.equal(reset.kind, "reset");
  assert.equal(reset.retryable, true);
  assert.equal(reset.unhealthy, true);
  assert.equal(reset.apiError.code, "upstream_error");
  assert.match(reset.message, /ECONNRESET/);
  const hangUp = classifyError(new Error("other side closed 10.0.0.5:8000"), null);
  assert.equal(hangUp.kind, "reset");
  assert.ok(!hangUp.apiError.message.includes("10.0.0.5"), hangUp.apiError.message);
  assert.equal(classifyError("a string was thrown", null).kind, "reset");
  assert.equal(classifyError(null, null).kind, "reset");
});

test("classifyError: our own timer firing is a timeout, whatever the error", () => {
  const failure = classifyError(withCode("This operation was aborted", "ABORT_ERR"), "no first token within 60000 ms");
  assert.equal(failure.kind, "timeout");
  assert.equal(failure.retryable, true);
  assert.equal(failure.apiError.code, "upstream_timeout");
  assert.equal(failure.apiError.status, 504);
  assert.match(failure.apiError.message, /no first token within 60000 ms/);
  assert.equal(classifyError(withCode("refused", "ECONNREFUSED"), "connect took too long").kind, "timeout");
});

test("classifyError: a protocol error is a protocol failure; an UpstreamFailure passes through unchanged", () => {
  const protocol = classifyError(new UpstreamProtocolError("the upstream sent a stream event that is not JSON"), null);
  assert.equal(protocol.kind, "protocol");
  assert.equal(protocol.apiError.code, "upstream_error");
  assert.match(protocol.apiError.message, /not JSON/);
  const original = statusFailure(503, "", undefined, options);
  assert.equal(classifyError(original, "timer"), original);
  assert.ok(original instanceof UpstreamFailure);
});

test("redact removes host.name:port outside a URL, and leaves times and counts alone", () => {
  assert.equal(redact("dial tcp gpu-3.internal:8000: i/o timeout"), "dial tcp [upstream]: i/o timeout");
  assert.equal(redact("at 12:30:45, Given: 3900 tokens"), "at 12:30:45, Given: 3900 tokens");
});
