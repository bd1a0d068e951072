import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { ApiError, ERROR_CODES, toApiError } from "../../src/protocol/errors.js";
import { PROJECT_ROOT } from "../helpers/models.js";

test("docs/errors.md and the error table agree, code for code", () => {
  const doc = readFileSync(path.join(PROJECT_ROOT, "docs/errors.md"), "utf8");
  const rows = [...doc.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \| ([a-z_]+) \|/gm)].map((match) => [match[1], Number(match[2]), match[3]]);
  const table = Object.entries(ERROR_CODES).map(([code, spec]) => [code, spec.status, spec.type]);
  assert.deepEqual(rows, table);
});

test("an ApiError renders the one envelope", () => {
  const error = new ApiError("invalid_value", "Bad.", { param: "top_p" });
  assert.deepEqual(error.toBody(), { error: { message: "Bad.", type: "invalid_request_error", param: "top_p", code: "invalid_value" } });
  assert.equal(error.status, 400);
});

test("503s carry a retry delay", () => {
  assert.equal(new ApiError("server_overloaded", "Full.").retryAfterSeconds, 1);
  assert.equal(new ApiError("server_overloaded", "Full.", { retryAfterSeconds: 7 }).retryAfterSeconds, 7);
});

test("anything else becomes internal_error without its message", () => {
  const error = toApiError(new Error("secret path /etc/x"));
  assert.equal(error.code, "internal_error");
  assert.ok(!error.message.includes("/etc/x"));
});
