import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { displayPrefix, generateSecret, hashSecret, newKeyId, sameHash, SECRET_PREFIX } from "../../src/access/keys.js";
import { keyStatus, keyView, parseExpiry, parseKeySpec } from "../../src/access/key-spec.js";
import { parseUsageQuery } from "../../src/access/usage-query.js";
import { ApiError } from "../../src/protocol/errors.js";

const NOW = Date.parse("2026-11-25T12:00:00Z");

function rejects(input: unknown, param: string | null, message: RegExp): void {
  assert.throws(
    () => parseKeySpec(input, NOW),
    (error: unknown) => error instanceof ApiError && error.status === 400 && error.param === param && message.test(error.message),
  );
}

describe("secrets", () => {
  test("are long, random, prefixed, and stored only as a hash", () => {
    const a = generateSecret();
    const b = generateSecret();
    assert.notEqual(a, b);
    assert.ok(a.startsWith(SECRET_PREFIX) && a.length >= 40);
    assert.match(hashSecret(a), /^[0-9a-f]{64}$/);
    assert.ok(sameHash(hashSecret(a), hashSecret(a)));
    assert.ok(!sameHash(hashSecret(a), hashSecret(b)));
    assert.ok(!sameHash(hashSecret(a), ""));
    assert.equal(displayPrefix(a), a.slice(0, 10));
    assert.match(newKeyId(), /^key_[0-9a-f]{16}$/);
  });
});

describe("key specs", () => {
  test("every limit, with defaults of no limit", () => {
    assert.deepEqual(parseKeySpec({ name: "alice" }, NOW), {
      name: "alice", models: null, rpm: null, tpm: null, maxConcurrent: null, budgetTokens: null, budgetPeriod: null, expiresAt: null,
    });
    const spec = parseKeySpec(
      { name: " bob ", models: ["a", "b"], rpm: 60, tpm: 1000, max_concurrent: 2, budget_tokens: 5000, budget_period: "month", expires_at: "2027-01-31" },
      NOW,
    );
    assert.equal(spec.name, "bob");
    assert.deepEqual(spec.models, ["a", "b"]);
    assert.equal(spec.maxConcurrent, 2);
    assert.equal(spec.expiresAt?.toISOString(), "2027-01-31T00:00:00.000Z");
  });

  test("names with quotes or SQL are kept verbatim", () => {
    assert.equal(parseKeySpec({ name: `O'Brien "x"; DROP TABLE keys; --` }, NOW).name, `O'Brien "x"; DROP TABLE keys; --`);
  });

  test("bad input names its field", () => {
    rejects({ name: "" }, "name", /1 to 200/);
    rejects({ name: "x".repeat(201) }, "name", /1 to 200/);
    rejects({ name: "a\nb" }, "name", /control characters/);
    rejects({ name: 5 }, "name", /string/);
    rejects({ name: "a", rpm: -5 }, "rpm", /positive integer/);
    rejects({ name: "a", rpm: 0 }, "rpm", /positive integer/);
    rejects({ name: "a", tpm: 1.5 }, "tpm", /positive integer/);
    rejects({ name: "a", max_concurrent: "3" }, "max_concurrent", /positive integer/);
    rejects({ name: "a", rpm: 1e15 }, "rpm", /up to/);
    rejects({ name: "a", budget_tokens: 10 }, "budget_period", /'budget_tokens' and 'budget_period' go together/);
    rejects({ name: "a", budget_period: "week", budget_tokens: 10 }, "budget_period", /'day', 'month' or 'total'/);
    rejects({ name: "a", models: [] }, "models", /non-empty array/);
    rejects({ name: "a", models: ["ok", ""] }, "models[1]", /non-empty model name/);
    rejects({ name: "a", expires_at: "tomorrow" }, "expires_at", /expected a real date/);
    rejects({ name: "a", expires_at: "2027-13-45" }, "expires_at", /expected a real date/);
    rejects({ name: "a", expires_at: "2099-02-30" }, "expires_at", /expected a real date/);
    rejects({ name: "a", expires_at: "2099-01-01T25:00:00Z" }, "expires_at", /expected a real date/);
    rejects({ name: "a", expires_at: "2020-01-01" }, "expires_at", /in the future/);
    rejects({ name: "a", rmp: 5 }, "rmp", /Unknown field 'rmp'/);
    assert.throws(() => parseKeySpec([], NOW), /JSON object/);
  });

  test("expiry accepts instants with offsets", () => {
    assert.equal(parseExpiry("2027-01-31T12:00:00+02:00", NOW)?.toISOString(), "2027-01-31T10:00:00.000Z");
  });

  test("status and view never show the hash", () => {
    const record = {
      ...parseKeySpec({ name: "a", expires_at: "2026-12-01" }, NOW),
      id: "key_0123456789abcdef", prefix: "sk-pl-abcd", hash: "f".repeat(64), createdAt: new Date(NOW), revokedAt: null,
    };
    assert.equal(keyStatus(record, NOW), "active");
    assert.equal(keyStatus(record, Date.parse("2026-12-02T00:00:00Z")), "expired");
    assert.equal(keyStatus({ ...record, revokedAt: new Date(NOW) }, NOW), "revoked");
    assert.ok(!JSON.stringify(keyView(record, NOW)).includes("f".repeat(64)));
  });
});

describe("usage queries", () => {
  test("look-backs, dates and groupings", () => {
    const query = parseUsageQuery({ since: "7d", until: "2026-11-26", by: "model", key: "key_1", model: "m" }, NOW);
    assert.equal(query.since?.toISOString(), "2026-11-18T12:00:00.000Z");
    assert.equal(query.until?.toISOString(), "2026-11-26T00:00:00.000Z");
    assert.equal(query.groupBy, "model");
    assert.equal(parseUsageQuery({}, NOW).groupBy, "none");
    assert.equal(parseUsageQuery({ since: "30m" }, NOW).since?.toISOString(), "2026-11-25T11:30:00.000Z");
  });

  test("bad filters are 400s naming the parameter", () => {
    assert.throws(() => parseUsageQuery({ by: "week" }, NOW), (e: unknown) => e instanceof ApiError && e.param === "by");
    assert.throws(() => parseUsageQuery({ since: "yesterday" }, NOW), (e: unknown) => e instanceof ApiError && e.param === "since");
    assert.throws(() => parseUsageQuery({ since: "2026-02-30" }, NOW), (e: unknown) => e instanceof ApiError && e.param === "since");
    assert.throws(() => parseUsageQuery({ since: "1d", until: "2d" }, NOW), (e: unknown) => e instanceof ApiError && e.param === "until");
  });
});
