/**
 * Multi-tenant access (issue 4) at the server: keys from the admin API and from
 * KeyService, authentication, every limit with its headers, exact admission under a burst,
 * and one usage-ledger row per request. One suite, run against each access configuration:
 * SQLite + memory counters always; PostgreSQL + memory counters and SQLite + Redis counters
 * when scripts/with-services.sh provides TEST_DATABASE_URL and TEST_REDIS_URL (skipped,
 * saying so, otherwise).
 *
 * Nothing here asserts how fast anything is. Where a limiter's counter refills with time,
 * the test either freezes the clock that admission sees (the server's AccessControl takes
 * an injected `now`), or bounds the refill by the time it measured itself.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { LedgerRow } from "../../src/access/types.js";
import { ModelRegistry } from "../../src/backends/registry.js";
import { SEED_RANGES } from "../../src/protocol/parameters.js";
import { buildServer } from "../../src/server/app.js";
import {
  ACCESS_TARGETS,
  ADMIN_TOKEN,
  QUICK_MODEL,
  SLOW_MAX_TOKENS,
  SLOW_MODEL,
  admin,
  chat,
  createKey,
  eventually,
  ledgerRows,
  oneRow,
  openStream,
  post,
  readStream,
  requestId,
  startAccessParley,
  type AccessDatabase,
  type AccessParley,
  type AccessTarget,
  type Usage,
} from "../helpers/access-parley.js";

interface Completion {
  choices: Array<{ finish_reason: string; message: { content: string } }>;
  usage: Usage;
}

interface Envelope {
  error: { message: string; type: string; param: string | null; code: string };
}

const TYPES: Record<string, string> = {
  invalid_api_key: "authentication_error",
  invalid_json: "invalid_request_error",
  invalid_type: "invalid_request_error",
  invalid_value: "invalid_request_error",
  permission_denied: "permission_error",
  model_not_found: "not_found_error",
  not_found: "not_found_error",
  request_too_large: "invalid_request_error",
  unsupported_media_type: "invalid_request_error",
  rate_limit_exceeded: "rate_limit_error",
  insufficient_quota: "insufficient_quota",
};

/** Asserts the one error envelope, its status, code and (when given) param; returns the body. */
function assertEnvelope(status: number, text: string, expected: { status: number; code: string; param?: string | null }, what = ""): Envelope {
  assert.equal(status, expected.status, `${what}: status ${status}, body ${text.slice(0, 300)}`);
  let body: Envelope;
  try {
    body = JSON.parse(text) as Envelope;
  } catch {
    assert.fail(`${what}: the error is not JSON: ${text.slice(0, 300)}`);
  }
  assert.deepEqual(Object.keys(body), ["error"], `${what}: ${text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(body.error.code, expected.code, `${what}: ${text.slice(0, 300)}`);
  assert.equal(body.error.type, TYPES[expected.code], `${what}: type`);
  assert.ok(body.error.message.length > 0 && body.error.message.length < 600, `${what}: a short message that says what is wrong (${body.error.message.length} chars)`);
  assert.ok(!body.error.message.includes("    at "), `${what}: no stack trace`);
  if (expected.param !== undefined) assert.equal(body.error.param, expected.param, `${what}: param`);
  return body;
}

async function expectApiError(response: Response, expected: { status: number; code: string; param?: string | null }, what = ""): Promise<Envelope> {
  const text = await response.text();
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/, `${what}: an error is a JSON body, never a stream`);
  assert.ok((response.headers.get("x-request-id") ?? "") !== "", `${what}: x-request-id on the error`);
  return assertEnvelope(response.status, text, expected, what);
}

/** A Go-style duration as OpenAI writes it (`600ms`, `20s`, `1.5s`, `1m0s`, `1h2m3s`), in ms; fails on any other form. */
function durationMs(text: string | null): number {
  assert.ok(text !== null, "the duration header is present");
  const millis = /^(\d+)ms$/.exec(text);
  if (millis !== null) return Number(millis[1]);
  const parts = /^(?:(\d+)h)?(?:(\d+)m)?(\d+(?:\.\d{1,3})?)s$/.exec(text);
  assert.ok(parts !== null, `'${text}' is a duration such as 1s or 6m0s`);
  if (parts[1] !== undefined) assert.ok(parts[2] !== undefined, `'${text}': hours come with minutes`);
  return Number(parts[1] ?? 0) * 3_600_000 + Number(parts[2] ?? 0) * 60_000 + Math.round(Number(parts[3]) * 1000);
}

function header(response: Response, name: string): string {
  const value = response.headers.get(name);
  assert.ok(value !== null, `header ${name} is present`);
  return value;
}

/** Refill of a per-minute bucket over `elapsedMs`, rounded up (the slack a real clock allows). */
const refill = (perMinute: number, elapsedMs: number): number => Math.ceil((elapsedMs * perMinute) / 60_000) + 1;

/** The first body of a completed non-streamed request, checked 200. */
async function completed(response: Response, what = ""): Promise<Completion> {
  const text = await response.text();
  assert.equal(response.status, 200, `${what}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as Completion;
}

const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");

function accessServerSuite(target: AccessTarget): void {
  if (target.skip !== undefined) {
    // A skipped test (not suite), so that the run's summary counts it as skipped.
    test(`access at the server: ${target.name}`, { skip: target.skip }, () => {});
    return;
  }

  describe(`access at the server: ${target.name}`, () => {
    let database: AccessDatabase;
    let parley: AccessParley;
    let url = "";
    /** Every secret issued in this suite: none may ever appear in a log line. */
    const secrets: string[] = [];
    const issue = async (limits: Parameters<typeof createKey>[1] = {}, name?: string) => {
      const key = await createKey(parley, limits, name);
      secrets.push(key.secret);
      return key;
    };

    before(async () => {
      database = await target.fresh();
      parley = await startAccessParley(database);
      url = parley.url;
    });
    after(async () => {
      parley?.clock.thaw();
      await parley?.close();
      await database?.dispose();
    });

    test("open on loopback while no key exists; once one does, a request without a valid key is 401 and leaves no ledger row", async () => {
      const open = await post(url, chat(), { id: requestId("open") });
      assert.equal(open.status, 200, "no key exists yet: the API is open on loopback");
      await open.body?.cancel();

      const key = await issue();
      const refused: string[] = [];
      const cases: Array<[string, Record<string, string>, RegExp]> = [
        ["no Authorization header", {}, /didn't provide an API key/],
        ["a key nobody issued", { authorization: "Bearer sk-pl-not-a-real-key-at-all-0000000000" }, /Incorrect API key/],
        ["Basic instead of Bearer", { authorization: `Basic ${key.secret}` }, /didn't provide an API key/],
        ["the admin token", { authorization: `Bearer ${ADMIN_TOKEN}` }, /Incorrect API key/],
      ];
      for (const [what, headers, message] of cases) {
        const id = requestId("unauthenticated");
        refused.push(id);
        const response = await post(url, chat(), { id, headers });
        const body = await expectApiError(response, { status: 401, code: "invalid_api_key", param: null }, what);
        assert.match(body.error.message, message, what);
        assert.equal(response.headers.get("x-request-id"), id);
      }
      const served = await post(url, chat(), { secret: key.secret });
      assert.equal(served.status, 200);
      await served.body?.cancel();
      assert.equal((await ledgerRows(parley.store, refused)).size, 0, "a 401 leaves no ledger row");
    });

    test("admin API: create (201, secret once), list and show (never the secret), rotate (same id, old secret 401), revoke (401)", async () => {
      const created = await admin(url, "POST", "/admin/v1/keys", { name: "alice", models: [QUICK_MODEL], rpm: 1000, tpm: 100000, max_concurrent: 8, budget_tokens: 1000000, budget_period: "month", expires_at: "2099-06-30" });
      assert.equal(created.status, 201, created.text);
      assert.deepEqual(Object.keys(created.body).sort(), ["key", "secret"]);
      const secret = created.body.secret as string;
      secrets.push(secret);
      assert.match(secret, /^sk-pl-[A-Za-z0-9_-]{40,}$/);
      const view = created.body.key as Record<string, unknown>;
      assert.match(String(view.id), /^key_[0-9a-f]{16}$/);
      assert.deepEqual(
        { ...view, id: "", created_at: "" },
        {
          id: "", name: "alice", prefix: secret.slice(0, 10), status: "active", models: [QUICK_MODEL], rpm: 1000, tpm: 100000,
          max_concurrent: 8, budget_tokens: 1000000, budget_period: "month", expires_at: "2099-06-30T00:00:00.000Z", created_at: "", revoked_at: null,
        },
      );
      const id = String(view.id);
      const hash = sha256(secret);

      const chatResponse = await post(url, chat(), { secret });
      await completed(chatResponse, "the new key works at once");

      const list = await admin(url, "GET", "/admin/v1/keys");
      assert.equal(list.status, 200);
      assert.equal(list.body.object, "list");
      assert.deepEqual(list.body.data.find((key: { id: string }) => key.id === id), view);
      const shown = await admin(url, "GET", `/admin/v1/keys/${id}`);
      assert.equal(shown.status, 200);
      assert.deepEqual(shown.body, view);
      for (const text of [list.text, shown.text]) {
        assert.ok(!text.includes(secret), "the secret is shown once, at creation");
        assert.ok(!text.includes(secret.slice(10)), "no part of the secret beyond its prefix");
        assert.ok(!text.includes(hash), "never the hash either");
      }

      const rotated = await admin(url, "POST", `/admin/v1/keys/${id}/rotate`);
      assert.equal(rotated.status, 200, rotated.text);
      const newSecret = rotated.body.secret as string;
      secrets.push(newSecret);
      assert.notEqual(newSecret, secret);
      assert.equal(rotated.body.key.id, id, "same id");
      assert.equal(rotated.body.key.prefix, newSecret.slice(0, 10));
      assert.deepEqual({ ...rotated.body.key, prefix: "" }, { ...view, prefix: "" }, "same limits, name and dates");
      const old = await post(url, chat(), { secret });
      await expectApiError(old, { status: 401, code: "invalid_api_key" }, "the old secret after rotation");
      await completed(await post(url, chat(), { secret: newSecret }), "the new secret");
      const afterRotation = await admin(url, "GET", `/admin/v1/keys/${id}`);
      assert.ok(!afterRotation.text.includes(newSecret) && !afterRotation.text.includes(secret));

      const revoked = await admin(url, "DELETE", `/admin/v1/keys/${id}`);
      assert.equal(revoked.status, 200, revoked.text);
      assert.equal(revoked.body.status, "revoked");
      assert.ok(!Number.isNaN(Date.parse(String(revoked.body.revoked_at))));
      const refused = await post(url, chat(), { secret: newSecret });
      const body = await expectApiError(refused, { status: 401, code: "invalid_api_key" }, "a revoked key");
      assert.match(body.error.message, /revoked/);
      assert.ok(!body.error.message.includes(newSecret), "the error does not echo the secret");

      const again = await admin(url, "POST", `/admin/v1/keys/${id}/revoke`);
      assert.equal(again.status, 200, "revoking again is idempotent");
      assert.equal(again.body.revoked_at, revoked.body.revoked_at, "and keeps the first revocation time");
      const before = await parley.store.listKeys();
      const rotateRevoked = await admin(url, "POST", `/admin/v1/keys/${id}/rotate`);
      assertEnvelope(rotateRevoked.status, rotateRevoked.text, { status: 400, code: "invalid_value", param: "id" }, "rotating a revoked key");
      assert.deepEqual(await parley.store.listKeys(), before, "a refused rotation changes nothing");
    });

    test("admin API auth: no token 401, an ordinary key or a wrong token 403, and no admin API without a configured token", async () => {
      const key = await issue();
      const before = await parley.store.listKeys();
      for (const [method, route] of [["GET", "/admin/v1/keys"], ["POST", "/admin/v1/keys"], ["GET", `/admin/v1/keys/${key.id}`], ["DELETE", `/admin/v1/keys/${key.id}`], ["POST", `/admin/v1/keys/${key.id}/rotate`], ["GET", "/admin/v1/usage"]] as const) {
        const body = method === "POST" && route === "/admin/v1/keys" ? { name: "intruder" } : undefined;
        const none = await admin(url, method, route, body, null);
        assertEnvelope(none.status, none.text, { status: 401, code: "invalid_api_key" }, `${method} ${route} without a token`);
        const ordinary = await admin(url, method, route, body, key.secret);
        assertEnvelope(ordinary.status, ordinary.text, { status: 403, code: "permission_denied" }, `${method} ${route} with an ordinary key`);
        const wrong = await admin(url, method, route, body, `${ADMIN_TOKEN}x`);
        assertEnvelope(wrong.status, wrong.text, { status: 403, code: "permission_denied" }, `${method} ${route} with a wrong token`);
      }
      assert.deepEqual(await parley.store.listKeys(), before, "nothing changed");
      await completed(await post(url, chat(), { secret: key.secret }), "the key was not revoked");

      // The same access store behind a server started without --admin-token.
      const app = buildServer({ registry: new ModelRegistry(), access: parley.access, ranges: SEED_RANGES, logger: false });
      const bare = await app.listen({ host: "127.0.0.1", port: 0 });
      try {
        for (const token of [ADMIN_TOKEN, key.secret, null]) {
          const response = await admin(bare, "GET", "/admin/v1/keys", undefined, token);
          const body = assertEnvelope(response.status, response.text, { status: 403, code: "permission_denied" }, "admin API without a configured token");
          assert.match(body.error.message, /--admin-token/);
        }
      } finally {
        await app.close();
      }
    });

    test("admin API auth holds for a percent-encoded path: an ordinary key can neither list nor create keys", async () => {
      // find-my-way decodes '%61' to 'a' when routing, so '/%61dmin/v1/keys' is the admin route.
      const key = await issue();
      const before = await parley.store.listKeys();
      const listed = await admin(url, "GET", "/%61dmin/v1/keys", undefined, key.secret);
      assert.ok(listed.status === 401 || listed.status === 403, `an ordinary key must not list keys through /%61dmin/...: got ${listed.status} ${listed.text.slice(0, 200)}`);
      const made = await admin(url, "POST", "/%61dmin/v1/keys", { name: "escalated" }, key.secret);
      assert.ok(made.status === 401 || made.status === 403, `an ordinary key must not create keys through /%61dmin/...: got ${made.status}`);
      assert.deepEqual((await parley.store.listKeys()).map((record) => record.id), before.map((record) => record.id), "no key was created");
    });

    test("admin API bad input: a clear 4xx error envelope naming the field, and nothing changes", async () => {
      const existing = await issue({}, "existing");
      type Case = [what: string, method: string, route: string, body: unknown, expected: { status: number; code: string; param?: string | null }, contentType?: string];
      const create = (what: string, body: unknown, param: string | null, code = "invalid_value", status = 400): Case => [what, "POST", "/admin/v1/keys", body, { status, code, param }];
      const cases: Case[] = [
        ["non-JSON (text/plain)", "POST", "/admin/v1/keys", "name=alice", { status: 415, code: "unsupported_media_type", param: null }, "text/plain"],
        create("malformed JSON", '{"name": "alice"', null, "invalid_json"),
        create("an empty body", "", null, "invalid_json"),
        create("a JSON array", "[]", null, "invalid_type"),
        create("JSON null", "null", null, "invalid_type"),
        create("a JSON string", '"alice"', null, "invalid_type"),
        create("a __proto__ key", '{"name": "alice", "__proto__": {"rpm": 1}}', null, "invalid_json"),
        create("no name", { rpm: 5 }, "name"),
        create("an empty name", { name: "" }, "name"),
        create("a blank name", { name: "   " }, "name"),
        create("a 10k-character name", { name: "n".repeat(10_000) }, "name"),
        create("a name with a NUL", { name: "ali\u0000ce" }, "name"),
        create("a name with a newline", { name: "alice\nbob" }, "name"),
        create("a numeric name", { name: 42 }, "name"),
        create("a negative rpm", { name: "x", rpm: -5 }, "rpm"),
        create("a zero rpm", { name: "x", rpm: 0 }, "rpm"),
        create("a fractional rpm", { name: "x", rpm: 1.5 }, "rpm"),
        create("an rpm given as a string", { name: "x", rpm: "5" }, "rpm"),
        create("an enormous rpm", { name: "x", rpm: 1e13 }, "rpm"),
        create("a negative tpm", { name: "x", tpm: -1 }, "tpm"),
        create("a negative max_concurrent", { name: "x", max_concurrent: -1 }, "max_concurrent"),
        create("a negative budget", { name: "x", budget_tokens: -1, budget_period: "day" }, "budget_tokens"),
        create("a budget without a period", { name: "x", budget_tokens: 5 }, "budget_period"),
        create("a period without a budget", { name: "x", budget_period: "day" }, "budget_tokens"),
        create("an unknown period", { name: "x", budget_tokens: 5, budget_period: "week" }, "budget_period"),
        create("an expiry that is not a date", { name: "x", expires_at: "tomorrow" }, "expires_at"),
        create("an expiry in the past", { name: "x", expires_at: "2020-01-01" }, "expires_at"),
        create("an expiry as a number", { name: "x", expires_at: 4102444800000 }, "expires_at"),
        create("an expiry with month 13", { name: "x", expires_at: "2099-13-01" }, "expires_at"),
        create("models that is not an array", { name: "x", models: QUICK_MODEL }, "models"),
        create("an empty models list", { name: "x", models: [] }, "models"),
        create("an empty model name", { name: "x", models: [""] }, "models[0]"),
        create("a numeric model name", { name: "x", models: [QUICK_MODEL, 7] }, "models[1]"),
        create("an unknown field", { name: "x", admin: true }, "admin"),
        create("a camelCase field", { name: "x", maxConcurrent: 2 }, "maxConcurrent"),
        create("a body over the limit", { name: "x".repeat(1024 * 1024 + 10) }, null, "request_too_large", 413),
      ];
      for (const bad of ["key_0000000000000000", "nope", "key_ABCDEF0123456789", "key_0123", "' OR '1'='1", "key_0000000000000000'; DROP TABLE keys; --", "k".repeat(90)]) {
        const route = `/admin/v1/keys/${encodeURIComponent(bad)}`;
        cases.push([`show ${bad.slice(0, 30)}`, "GET", route, undefined, { status: 404, code: "not_found" }]);
        cases.push([`revoke (DELETE) ${bad.slice(0, 30)}`, "DELETE", route, undefined, { status: 404, code: "not_found" }]);
        cases.push([`revoke (POST) ${bad.slice(0, 30)}`, "POST", `${route}/revoke`, undefined, { status: 404, code: "not_found" }]);
        cases.push([`rotate ${bad.slice(0, 30)}`, "POST", `${route}/rotate`, undefined, { status: 404, code: "not_found" }]);
      }
      const usage = (query: string, param: string): Case => [`usage ?${query.slice(0, 40)}`, "GET", `/admin/v1/usage?${query}`, undefined, { status: 400, code: "invalid_value", param }];
      cases.push(
        usage("by=week", "by"),
        usage("by=key%27%3B%20DROP%20TABLE%20ledger%3B--", "by"),
        usage("since=yesterday", "since"),
        usage("since=2027-13-45", "since"),
        usage("until=soon", "until"),
        usage("since=2024-03-10&until=2024-03-01", "until"),
        usage("key=a&key=b", "key"),
        usage("by=day&by=key", "by"),
      );

      const keysBefore = await parley.store.listKeys();
      const listBefore = (await admin(url, "GET", "/admin/v1/keys")).body.data.map((key: { id: string }) => key.id);
      for (const [what, method, route, body, expected, contentType] of cases) {
        const headers: Record<string, string> = { authorization: `Bearer ${ADMIN_TOKEN}` };
        if (body !== undefined) headers["content-type"] = contentType ?? "application/json";
        const response = await fetch(`${url}${route}`, {
          method,
          headers,
          ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
        });
        const text = await response.text();
        const envelope = assertEnvelope(response.status, text, expected, what);
        assert.ok(envelope.error.message.length < 400, `${what}: the message does not echo the whole input`);
      }
      assert.deepEqual(await parley.store.listKeys(), keysBefore, "no bad request changed a key");
      assert.deepEqual((await admin(url, "GET", "/admin/v1/keys")).body.data.map((key: { id: string }) => key.id), listBefore);
      await completed(await post(url, chat(), { secret: existing.secret }), "the existing key still works");
    });

    test("admin API: an impossible calendar date (Feb 30) is refused, not rolled over into March", async () => {
      const before = await parley.store.listKeys();
      const response = await admin(url, "POST", "/admin/v1/keys", { name: "x", expires_at: "2099-02-30" });
      if (response.status === 201) secrets.push(response.body.secret as string);
      assertEnvelope(response.status, response.text, { status: 400, code: "invalid_value", param: "expires_at" }, "expires_at 2099-02-30");
      assert.deepEqual(await parley.store.listKeys(), before);
    });

    test("admin API: names with quotes and SQL are stored verbatim and break nothing", async () => {
      const names = [`Robert'); DROP TABLE keys;--`, `"quoted" and 'single' and \`back\``, `x' OR '1'='1`, "名前 🔑 ünïcödé", "n".repeat(200)];
      const before = await parley.store.listKeys();
      const ids: string[] = [];
      for (const name of names) {
        const created = await admin(url, "POST", "/admin/v1/keys", { name });
        assert.equal(created.status, 201, created.text);
        secrets.push(created.body.secret as string);
        assert.equal(created.body.key.name, name);
        ids.push(created.body.key.id as string);
        const shown = await admin(url, "GET", `/admin/v1/keys/${created.body.key.id}`);
        assert.equal(shown.body.name, name);
        await completed(await post(url, chat(), { secret: created.body.secret as string }), `the key named ${name.slice(0, 20)} works`);
      }
      const afterwards = await parley.store.listKeys();
      assert.deepEqual(afterwards.slice(0, before.length), before, "every earlier key is intact");
      assert.deepEqual(afterwards.slice(before.length).map((record) => [record.id, record.name]), ids.map((id, index) => [id, names[index]]));
    });

    test("an expired key is 401 with a message that says so (the server's clock passes the expiry)", async () => {
      const expiresAt = new Date(Date.now() + 3_600_000);
      const issued = await parley.keys.create({ name: "expiring", models: null, rpm: null, tpm: null, maxConcurrent: null, budgetTokens: null, budgetPeriod: null, expiresAt });
      parley.access.keysChanged();
      secrets.push(issued.secret);
      await completed(await post(url, chat(), { secret: issued.secret }), "before its expiry");
      try {
        for (const at of [expiresAt.getTime(), expiresAt.getTime() + 86_400_000]) {
          parley.clock.freeze(at);
          const id = requestId("expired");
          const body = await expectApiError(await post(url, chat(), { secret: issued.secret, id }), { status: 401, code: "invalid_api_key" }, "expired");
          assert.match(body.error.message, /expired/);
          assert.ok(body.error.message.includes(expiresAt.toISOString()), "says when it expired");
          assert.ok(!body.error.message.includes(issued.secret));
          assert.equal((await ledgerRows(parley.store, [id])).size, 0, "a 401 leaves no ledger row");
        }
      } finally {
        parley.clock.thaw();
      }
      await completed(await post(url, chat(), { secret: issued.secret }), "the same key before its expiry again: it was the clock");
    });

    test("a key stored with an expiry 1.5 s ahead is refused (401, expired) once that time has passed", async () => {
      const expiresAt = new Date(Date.now() + 1500);
      const issued = await parley.keys.create({ name: "short-lived", models: null, rpm: null, tpm: null, maxConcurrent: null, budgetTokens: null, budgetPeriod: null, expiresAt });
      parley.access.keysChanged();
      secrets.push(issued.secret);
      await eventually("the expiry to pass", () => (Date.now() > expiresAt.getTime() + 20 ? true : undefined));
      const body = await expectApiError(await post(url, chat(), { secret: issued.secret }), { status: 401, code: "invalid_api_key" }, "expired");
      assert.match(body.error.message, /expired/);
      const shown = await admin(url, "GET", `/admin/v1/keys/${issued.record.id}`);
      assert.equal(shown.body.status, "expired");
    });

    test("rpm 3: three pass with exact x-ratelimit-* headers (JSON and SSE), the 4th is 429 with Retry-After", async () => {
      const key = await issue({ rpm: 3 });
      parley.clock.freeze();
      try {
        const expected = [["2", "20s"], ["1", "40s"], ["0", "1m0s"]];
        for (const [index, [remaining, reset]] of expected.entries()) {
          const stream = index === 1;
          const response = await post(url, chat({ stream }), { secret: key.secret });
          assert.equal(response.status, 200);
          if (stream) {
            assert.match(response.headers.get("content-type") ?? "", /text\/event-stream/);
            assert.ok((await readStream(response)).done, "the stream completed");
          } else {
            await response.json();
          }
          assert.equal(header(response, "x-ratelimit-limit-requests"), "3");
          assert.equal(header(response, "x-ratelimit-remaining-requests"), remaining, `remaining after request ${index + 1}`);
          assert.equal(header(response, "x-ratelimit-reset-requests"), reset, `reset after request ${index + 1}`);
          assert.equal(response.headers.get("x-ratelimit-limit-tokens"), null, "no token headers without a tpm limit");
        }
        for (const stream of [false, true]) {
          const refused = await post(url, chat({ stream }), { secret: key.secret });
          const retryAfter = refused.headers.get("retry-after");
          const body = await expectApiError(refused, { status: 429, code: "rate_limit_exceeded", param: null }, "the 4th request");
          assert.match(body.error.message, /requests per minute \(limit 3\)/);
          assert.equal(retryAfter, "20", "one request comes back 20 s later at 3 per minute");
          assert.equal(header(refused, "x-ratelimit-limit-requests"), "3");
          assert.equal(header(refused, "x-ratelimit-remaining-requests"), "0");
          assert.equal(header(refused, "x-ratelimit-reset-requests"), "1m0s");
          assert.equal(refused.headers.get("x-should-retry"), null, "a rate limit is worth retrying");
        }
        parley.clock.freeze(Date.now() + 20_000);
        await completed(await post(url, chat(), { secret: key.secret }), "20 s later one request is back");
      } finally {
        parley.clock.thaw();
      }
    });

    test("x-ratelimit-* headers on 200 responses, JSON and SSE, with the values of both buckets", async () => {
      const key = await issue({ rpm: 100, tpm: 10_000 });
      const first = await post(url, chat({ max_tokens: 4 }), { secret: key.secret });
      await completed(first);
      // A fresh bucket is full: the first admission's state is exact whatever the clock.
      assert.equal(header(first, "x-ratelimit-limit-requests"), "100");
      assert.equal(header(first, "x-ratelimit-remaining-requests"), "99");
      assert.equal(header(first, "x-ratelimit-reset-requests"), "600ms");
      assert.equal(header(first, "x-ratelimit-limit-tokens"), "10000");
      assert.equal(header(first, "x-ratelimit-remaining-tokens"), "9996");
      assert.equal(header(first, "x-ratelimit-reset-tokens"), "24ms");

      const started = Date.now();
      const streamed = await post(url, chat({ max_tokens: 4, stream: true, stream_options: { include_usage: true } }), { secret: key.secret });
      assert.equal(streamed.status, 200);
      const { done } = await readStream(streamed);
      assert.ok(done);
      const elapsed = Date.now() - started + 1000;
      assert.equal(header(streamed, "x-ratelimit-limit-requests"), "100");
      assert.equal(header(streamed, "x-ratelimit-limit-tokens"), "10000");
      const requestsLeft = Number(header(streamed, "x-ratelimit-remaining-requests"));
      assert.ok(requestsLeft >= 98 && requestsLeft <= 98 + refill(100, elapsed), `remaining requests ${requestsLeft}`);
      const tokensLeft = Number(header(streamed, "x-ratelimit-remaining-tokens"));
      assert.ok(tokensLeft <= 10_000 - 4 && tokensLeft >= 0, `remaining tokens ${tokensLeft}`);
      assert.ok(durationMs(streamed.headers.get("x-ratelimit-reset-requests")) <= 1200);
      assert.ok(durationMs(streamed.headers.get("x-ratelimit-reset-tokens")) <= 60_000);

      const unlimited = await issue();
      const plain = await post(url, chat(), { secret: unlimited.secret });
      await completed(plain);
      assert.equal([...plain.headers.keys()].filter((name) => name.startsWith("x-ratelimit-")).length, 0, "a key without rate limits gets no x-ratelimit headers");
    });

    test("tpm: a request's max_tokens is reserved while it is in flight, and settled to its actual tokens when it ends", async () => {
      const TPM = 100;
      const key = await issue({ tpm: TPM });
      const blockerKey = await issue();
      // Occupy slow-model's only sequence so that the key's first request waits, admitted, in the queue.
      const blocker = await openStream(url, { model: SLOW_MODEL, messages: [{ role: "user", content: "Go on." }], max_tokens: SLOW_MAX_TOKENS }, { secret: blockerKey.secret });
      // Admissions see a frozen clock: the bucket does not refill between them, so their headers are exact.
      // (Settlements still run on real time: the final check bounds that refill by the time measured.)
      const started = Date.now();
      parley.clock.freeze(started);
      try {
        const idA = requestId("tpm-a");
        const controllerA = new AbortController();
        const pendingA = post(url, { model: SLOW_MODEL, messages: [{ role: "user", content: "Hello" }], max_tokens: 60, stream: true }, { secret: key.secret, id: idA, signal: controllerA.signal }).catch((error: unknown) => error);
        await eventually("the first request to wait, admitted, in slow-model's queue", () => (parley.slow.activity().waiting === 1 ? true : undefined));

        const refused = await post(url, chat({ max_tokens: 60 }), { secret: key.secret });
        const retryAfter = refused.headers.get("retry-after");
        const body = await expectApiError(refused, { status: 429, code: "rate_limit_exceeded" }, "a second 60-token reservation");
        assert.match(body.error.message, /tokens per minute \(limit 100/);
        assert.equal(header(refused, "x-ratelimit-limit-tokens"), String(TPM));
        assert.equal(header(refused, "x-ratelimit-remaining-tokens"), "40", "the first request's 60 tokens are reserved");
        assert.equal(header(refused, "x-ratelimit-reset-tokens"), "36s", "60 tokens come back in 36 s at 100 per minute");
        assert.equal(retryAfter, "12", "the 20 tokens missing come back in 12 s");
        assert.equal(refused.headers.get("x-ratelimit-limit-requests"), null, "no request headers without an rpm limit");

        const small = await post(url, chat({ max_tokens: 8 }), { secret: key.secret });
        const smallBody = await completed(small, "a reservation that fits is admitted meanwhile");
        assert.equal(header(small, "x-ratelimit-remaining-tokens"), "32");

        // The first request gives up while still queued: its reservation settles to what it used (its prompt).
        controllerA.abort();
        await pendingA;
        const rowA = await oneRow(parley.store, idA);
        assert.equal(rowA.outcome, "abandoned");
        assert.equal(rowA.completionTokens, 0);
        await blocker.abort();
        await eventually("slow-model to go idle", () => (parley.slow.activity().running === 0 ? true : undefined));

        const next = await post(url, chat({ max_tokens: 8 }), { secret: key.secret });
        await completed(next);
        const elapsed = Date.now() - started;
        const used = rowA.promptTokens + rowA.completionTokens + smallBody.usage.total_tokens;
        const exact = TPM - used - 8;
        const left = Number(header(next, "x-ratelimit-remaining-tokens"));
        assert.ok(
          left >= exact && left <= exact + refill(TPM, elapsed),
          `after settlement ${left} tokens remain: ${TPM} - ${used} used - 8 reserved = ${exact}, plus at most ${refill(TPM, elapsed)} refilled in ${elapsed} ms`,
        );
        // Had nothing been settled, 100 - 60 - 8 - 8 = 24 would remain (plus refill).
      } finally {
        parley.clock.thaw();
      }
    });

    test("max_concurrent 2: two requests in flight hold both slots, a third is 429, and a slot frees when one is abandoned", async () => {
      const key = await issue({ maxConcurrent: 2 });
      const long = { model: SLOW_MODEL, messages: [{ role: "user", content: "Go on." }], max_tokens: SLOW_MAX_TOKENS };
      const first = await openStream(url, long, { secret: key.secret });
      const secondController = new AbortController();
      const second = post(url, { ...long, stream: true }, { secret: key.secret, signal: secondController.signal });
      second.catch(() => undefined);
      await eventually("the second request to wait in slow-model's queue", () => (parley.slow.activity().waiting === 1 ? true : undefined));

      for (const stream of [false, true]) {
        const refused = await post(url, chat({ stream }), { secret: key.secret });
        const retryAfter = refused.headers.get("retry-after");
        const body = await expectApiError(refused, { status: 429, code: "rate_limit_exceeded" }, "a third concurrent request");
        assert.match(body.error.message, /concurrent requests/);
        assert.equal(retryAfter, "1");
      }

      await first.abort();
      const secondResponse = await second;
      assert.equal(secondResponse.status, 200, "the second request runs once the first is gone");
      const admitted = await eventually("a new request to be admitted in the freed slot", async () => {
        const response = await post(url, chat({ max_tokens: 1 }), { secret: key.secret });
        if (response.status === 200) return response;
        await response.body?.cancel();
        return undefined;
      });
      await completed(admitted);
      assert.equal(parley.slow.activity().running, 1, "the second request still holds its slot");
      const third = await post(url, chat({ max_tokens: 1 }), { secret: key.secret });
      await completed(third, "one slot is free: requests one at a time pass");

      secondController.abort();
      await secondResponse.body?.cancel().catch(() => undefined);
      await eventually("slow-model to go idle", () => (parley.slow.activity().running === 0 ? true : undefined));
    });

    test("budget: requests pass until the day's tokens are spent, then 429 insufficient_quota with x-should-retry: false, also after a restart", async () => {
      const BUDGET = 100;
      const MAX = 8;
      const key = await issue({ budgetTokens: BUDGET, budgetPeriod: "day" });
      let used = 0;
      let passed = 0;
      let refusal: Response | undefined;
      let bounds = { early: 0, late: 0 };
      for (let attempt = 0; attempt < 30 && refusal === undefined; attempt++) {
        const sent = Date.now();
        const response = await post(url, chat({ max_tokens: MAX, stream: attempt % 2 === 1, stream_options: attempt % 2 === 1 ? { include_usage: true } : undefined }), { secret: key.secret });
        if (response.status === 200) {
          assert.ok(used + MAX <= BUDGET, `admitted with ${used} used: the reservation of ${MAX} fit`);
          const usage = attempt % 2 === 1 ? (await readStream(response)).usage : (await response.json() as Completion).usage;
          assert.ok(usage !== undefined);
          used += usage.total_tokens;
          passed += 1;
        } else {
          refusal = response;
          const received = Date.now();
          const midnight = (at: number) => Date.UTC(new Date(at).getUTCFullYear(), new Date(at).getUTCMonth(), new Date(at).getUTCDate() + 1);
          bounds = { early: Math.ceil((midnight(received) - received) / 1000), late: Math.ceil((midnight(sent) - sent) / 1000) };
        }
      }
      assert.ok(passed >= 1, "the budget admitted requests before it ran out");
      assert.ok(refusal !== undefined, "the budget ran out");
      assert.ok(used + MAX > BUDGET, `refused with ${used} used: a reservation of ${MAX} does not fit in ${BUDGET}`);
      const retryAfter = Number(refusal.headers.get("retry-after"));
      assert.equal(refusal.headers.get("x-should-retry"), "false");
      const body = await expectApiError(refusal, { status: 429, code: "insufficient_quota", param: null }, "an exhausted budget");
      assert.ok(body.error.message.includes(`${Math.max(0, BUDGET - used)} tokens left`), body.error.message);
      assert.ok(retryAfter >= Math.min(bounds.early, bounds.late) && retryAfter <= Math.max(bounds.early, bounds.late), `Retry-After ${retryAfter} s is the time to UTC midnight (${bounds.early}..${bounds.late})`);

      const streamed = await post(url, chat({ max_tokens: MAX, stream: true }), { secret: key.secret });
      assert.equal(streamed.headers.get("x-should-retry"), "false");
      await expectApiError(streamed, { status: 429, code: "insufficient_quota" }, "streamed, too");

      // A second server on the same database, with fresh counters: the budget is read back from the ledger.
      const replica = await startAccessParley(database);
      try {
        const again = await post(replica.url, chat({ max_tokens: MAX }), { secret: key.secret });
        assert.equal(again.headers.get("x-should-retry"), "false");
        await expectApiError(again, { status: 429, code: "insufficient_quota" }, "the exhausted budget after a restart");
      } finally {
        await replica.close();
      }
    });

    test("a model outside the key's allow-list is 404 model_not_found, exactly as an unknown model", async () => {
      const key = await issue({ models: [QUICK_MODEL] });
      const other = await issue();
      await completed(await post(url, chat(), { secret: key.secret }), "an allowed model");
      const normalized = async (response: Response, name: string) => {
        const body = await expectApiError(response, { status: 404, code: "model_not_found", param: "model" }, name);
        assert.ok(body.error.message.includes(`'${name}'`));
        return { ...body.error, message: body.error.message.replace(`'${name}'`, "'<model>'") };
      };
      const outside = await normalized(await post(url, chat({ model: SLOW_MODEL }), { secret: key.secret }), SLOW_MODEL);
      const unknownForKey = await normalized(await post(url, chat({ model: "no-such-model" }), { secret: key.secret }), "no-such-model");
      const unknownForOther = await normalized(await post(url, chat({ model: "no-such-model" }), { secret: other.secret }), "no-such-model");
      assert.deepEqual(outside, unknownForKey);
      assert.deepEqual(outside, unknownForOther);
      const streamed = await post(url, chat({ model: SLOW_MODEL, stream: true }), { secret: key.secret });
      assert.deepEqual(await normalized(streamed, SLOW_MODEL), outside, "streaming or not");
      await completed(await post(url, chat({ model: SLOW_MODEL, max_tokens: 2 }), { secret: other.secret }), "the model is served to keys without the list");
    });

    test("200 simultaneous requests on a key with rpm 50: exactly 50 are 200 and 150 are 429, and each leaves one ledger row", async () => {
      const key = await issue({ rpm: 50 });
      const ids = Array.from({ length: 200 }, () => requestId("burst"));
      // Frozen, the bucket does not refill during the burst: exactly 50, however long it takes.
      parley.clock.freeze();
      let responses: Array<{ status: number; code: string | undefined }>;
      try {
        responses = await Promise.all(
          ids.map(async (id) => {
            const response = await post(url, chat({ max_tokens: 1 }), { secret: key.secret, id });
            const body = (await response.json()) as Partial<Envelope>;
            return { status: response.status, code: body.error?.code };
          }),
        );
      } finally {
        parley.clock.thaw();
      }
      const count = (status: number) => responses.filter((response) => response.status === status).length;
      assert.deepEqual({ ok: count(200), limited: count(429), other: responses.length - count(200) - count(429) }, { ok: 50, limited: 150, other: 0 });
      assert.ok(responses.filter((response) => response.status === 429).every((response) => response.code === "rate_limit_exceeded"));

      const rows = await ledgerRows(parley.store, ids);
      assert.equal(rows.size, 200, "a row for every request");
      assert.ok([...rows.values()].every((list) => list.length === 1), "exactly one each");
      const flat = [...rows.values()].map((list) => list[0] as LedgerRow);
      assert.equal(flat.filter((row) => row.outcome === "completed" && row.status === 200).length, 50);
      assert.equal(flat.filter((row) => row.outcome === "rejected" && row.status === 429).length, 150);
      assert.ok(flat.every((row) => row.keyId === key.id && row.model === QUICK_MODEL));
    });

    test("ledger: one row per request, of every kind, with the key, model, the tokens the client saw, status, outcome and finish reason", async () => {
      const key = await issue({ rpm: 1000 });
      const slowPrompt = { model: SLOW_MODEL, messages: [{ role: "user", content: "Tell me everything." }] };
      const expectations = new Map<string, Partial<LedgerRow>>();

      // Completed, not streamed.
      const idJson = requestId("ledger-json");
      const json = await completed(await post(url, chat({ max_tokens: 5 }), { secret: key.secret, id: idJson }));
      expectations.set(idJson, {
        keyId: key.id, model: QUICK_MODEL, status: 200, outcome: "completed", finishReason: json.choices[0]?.finish_reason ?? "",
        promptTokens: json.usage.prompt_tokens, completionTokens: json.usage.completion_tokens, cachedTokens: json.usage.prompt_tokens_details?.cached_tokens ?? 0,
      });

      // Completed, streamed, with the usage chunk.
      const idStream = requestId("ledger-sse");
      const streamResponse = await post(url, chat({ max_tokens: 6, stream: true, stream_options: { include_usage: true } }), { secret: key.secret, id: idStream });
      assert.equal(streamResponse.status, 200);
      const stream = await readStream(streamResponse);
      assert.ok(stream.done && stream.usage !== undefined);
      expectations.set(idStream, {
        keyId: key.id, model: QUICK_MODEL, status: 200, outcome: "completed", finishReason: stream.finishReason,
        promptTokens: stream.usage.prompt_tokens, completionTokens: stream.usage.completion_tokens, cachedTokens: stream.usage.prompt_tokens_details?.cached_tokens ?? 0,
      });

      // Completed on the other model, for its prompt size.
      const idSlow = requestId("ledger-slow");
      const slow = await completed(await post(url, { ...slowPrompt, max_tokens: 3 }, { secret: key.secret, id: idSlow }));
      expectations.set(idSlow, { keyId: key.id, model: SLOW_MODEL, status: 200, outcome: "completed", finishReason: "length", promptTokens: slow.usage.prompt_tokens, completionTokens: 3 });

      // Rejected by validation after authentication.
      const idInvalid = requestId("ledger-400");
      await expectApiError(await post(url, chat({ temperature: 5 }), { secret: key.secret, id: idInvalid }), { status: 400, code: "invalid_value", param: "temperature" });
      expectations.set(idInvalid, { keyId: key.id, status: 400, outcome: "rejected", finishReason: null, promptTokens: 0, completionTokens: 0 });

      // Unknown model.
      const id404 = requestId("ledger-404");
      await expectApiError(await post(url, chat({ model: "no-such-model" }), { secret: key.secret, id: id404 }), { status: 404, code: "model_not_found" });
      expectations.set(id404, { keyId: key.id, status: 404, outcome: "rejected", finishReason: null, promptTokens: 0, completionTokens: 0 });

      // Rejected by a limit.
      const limited = await issue({ rpm: 1 });
      parley.clock.freeze();
      const id429 = requestId("ledger-429");
      try {
        await completed(await post(url, chat(), { secret: limited.secret }));
        await expectApiError(await post(url, chat(), { secret: limited.secret, id: id429 }), { status: 429, code: "rate_limit_exceeded" });
      } finally {
        parley.clock.thaw();
      }
      expectations.set(id429, { keyId: limited.id, model: QUICK_MODEL, status: 429, outcome: "rejected", finishReason: null, promptTokens: 0, completionTokens: 0 });

      // Abandoned by the client mid-stream.
      const idAbandoned = requestId("ledger-abandoned");
      const open = await openStream(url, { ...slowPrompt, max_tokens: SLOW_MAX_TOKENS }, { secret: key.secret, id: idAbandoned });
      await open.abort();
      await eventually("slow-model to go idle", () => (parley.slow.activity().running === 0 && parley.slow.activity().waiting === 0 ? true : undefined));
      expectations.set(idAbandoned, { keyId: key.id, model: SLOW_MODEL, status: 499, outcome: "abandoned", finishReason: null, promptTokens: slow.usage.prompt_tokens });

      // Abandoned before a non-streamed answer.
      const idGone = requestId("ledger-gone");
      const gone = new AbortController();
      const pending = post(url, { ...slowPrompt, max_tokens: SLOW_MAX_TOKENS }, { secret: key.secret, id: idGone, signal: gone.signal }).catch((error: unknown) => error);
      await eventually("the request to start generating", () => (parley.slow.activity().running === 1 ? true : undefined));
      gone.abort();
      assert.ok((await pending) instanceof Error);
      expectations.set(idGone, { keyId: key.id, model: SLOW_MODEL, status: 499, outcome: "abandoned", finishReason: null, promptTokens: slow.usage.prompt_tokens });

      // Unauthenticated: no row.
      const id401 = requestId("ledger-401");
      await expectApiError(await post(url, chat(), { id: id401 }), { status: 401, code: "invalid_api_key" });

      for (const [id, expected] of expectations) {
        const row = await oneRow(parley.store, id);
        const actual = Object.fromEntries(Object.keys(expected).map((field) => [field, row[field as keyof LedgerRow]]));
        assert.deepEqual(actual, expected, `the ledger row of ${id}`);
        assert.ok(row.durationMs >= 0);
        if (row.outcome === "completed") assert.ok(row.timeToFirstTokenMs !== null && row.timeToFirstTokenMs >= 0, "time to first token of a completed request");
        if (row.outcome === "abandoned") assert.ok(row.completionTokens >= 0 && row.completionTokens < SLOW_MAX_TOKENS, "an abandoned request counts what it generated");
      }
      const abandoned = await oneRow(parley.store, idAbandoned);
      assert.ok(abandoned.completionTokens >= 1, "the mid-stream request had generated text before the client left");
      assert.equal((await ledgerRows(parley.store, [id401])).size, 0, "a 401 leaves no row");
    });

    test("ledger: a body rejected after authentication (invalid JSON, wrong content type) still leaves its row", async () => {
      const key = await issue();
      const idJson = requestId("ledger-badjson");
      await expectApiError(await post(url, '{"model": "test-model", ', { secret: key.secret, id: idJson }), { status: 400, code: "invalid_json" });
      const idType = requestId("ledger-415");
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.secret}`, "content-type": "text/plain", "x-request-id": idType },
        body: "hello",
      });
      await expectApiError(response, { status: 415, code: "unsupported_media_type" });
      const rows = await ledgerRows(parley.store, [idJson, idType]);
      for (const [id, status] of [[idJson, 400], [idType, 415]] as const) {
        const list = rows.get(id) ?? [];
        assert.equal(list.length, 1, `request ${id} (${status} after authentication) has one ledger row; found ${list.length}`);
        assert.equal(list[0]?.status, status);
        assert.equal(list[0]?.outcome, "rejected");
        assert.equal(list[0]?.keyId, key.id);
      }
    });

    test("usage endpoint: totals by key, model and day, with key, model, since and until filters", async () => {
      const k1 = await issue({}, "usage-one");
      const k2 = await issue({}, "usage-two");
      const totals = { k1quick: [0, 0, 0], k1slow: [0, 0, 0], k2: [0, 0, 0] };
      const add = (into: number[], usage: Usage) => {
        into[0] = (into[0] ?? 0) + 1;
        into[1] = (into[1] ?? 0) + usage.prompt_tokens;
        into[2] = (into[2] ?? 0) + usage.completion_tokens;
      };
      add(totals.k1quick, (await completed(await post(url, chat({ max_tokens: 3 }), { secret: k1.secret }))).usage);
      add(totals.k1quick, (await completed(await post(url, chat({ max_tokens: 5 }), { secret: k1.secret }))).usage);
      add(totals.k1slow, (await completed(await post(url, chat({ model: SLOW_MODEL, max_tokens: 2 }), { secret: k1.secret }))).usage);
      add(totals.k2, (await completed(await post(url, chat({ max_tokens: 4 }), { secret: k2.secret }))).usage);
      // A refused request counts as a request with no tokens.
      await expectApiError(await post(url, chat({ temperature: 9 }), { secret: k2.secret }), { status: 400, code: "invalid_value" });
      const k2requests = (totals.k2[0] ?? 0) + 1;

      const bucket = (group: string, [requests = 0, prompt = 0, completion = 0]: number[], cachedAny = true) => ({ group, requests, prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, cachedAny });
      const strip = (data: Array<Record<string, unknown>>) => data.map(({ cached_tokens, ...rest }) => {
        assert.ok(Number.isInteger(cached_tokens) && (cached_tokens as number) >= 0);
        return { ...rest, cachedAny: true };
      });

      const byModel = await admin(url, "GET", `/admin/v1/usage?key=${k1.id}&by=model`);
      assert.equal(byModel.status, 200, byModel.text);
      assert.equal(byModel.body.object, "list");
      assert.equal(byModel.body.group_by, "model");
      assert.deepEqual(strip(byModel.body.data), [bucket(SLOW_MODEL, totals.k1slow), bucket(QUICK_MODEL, totals.k1quick)]);

      const byKey = await admin(url, "GET", "/admin/v1/usage?by=key&since=1h");
      assert.equal(byKey.status, 200);
      const mine = byKey.body.data.filter((entry: { group: string }) => entry.group === k1.id || entry.group === k2.id);
      const k1all = [(totals.k1quick[0] ?? 0) + (totals.k1slow[0] ?? 0), (totals.k1quick[1] ?? 0) + (totals.k1slow[1] ?? 0), (totals.k1quick[2] ?? 0) + (totals.k1slow[2] ?? 0)];
      const expectedByKey = [bucket(k1.id, k1all), bucket(k2.id, [k2requests, totals.k2[1] ?? 0, totals.k2[2] ?? 0])].sort((a, b) => (a.group < b.group ? -1 : 1));
      assert.deepEqual(strip(mine), expectedByKey);

      const byDay = await admin(url, "GET", `/admin/v1/usage?key=${k1.id}&by=day`);
      assert.equal(byDay.status, 200);
      assert.equal(byDay.body.data.length, 1, "all today");
      const today = new Date().toISOString().slice(0, 10);
      const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
      assert.ok([today, yesterday].includes(byDay.body.data[0].group), `the day ${byDay.body.data[0].group} is a UTC date`);
      assert.deepEqual(strip(byDay.body.data).map((entry) => ({ ...entry, group: "" })), [bucket("", k1all)]);

      const oneModel = await admin(url, "GET", `/admin/v1/usage?key=${k1.id}&model=${encodeURIComponent(SLOW_MODEL)}`);
      assert.equal(oneModel.body.group_by, "none");
      assert.deepEqual(strip(oneModel.body.data), [bucket("all", totals.k1slow)]);

      for (const query of [`key=${k1.id}&until=1h`, `key=${k1.id}&since=2099-01-01`, "key=key_0000000000000000", `key=${k1.id}&model=no-such-model`]) {
        const empty = await admin(url, "GET", `/admin/v1/usage?${query}`);
        assert.equal(empty.status, 200, empty.text);
        assert.deepEqual(empty.body.data, [], `nothing for ${query}`);
      }
      const bounded = await admin(url, "GET", `/admin/v1/usage?key=${k1.id}&since=${encodeURIComponent(new Date(Date.now() - 3_600_000).toISOString())}&until=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
      assert.deepEqual(strip(bounded.body.data), [bucket("all", k1all)]);
    });

    test("no secret (nor the admin token) ever appears in a log line", async () => {
      const logs = parley.logs();
      assert.match(logs, /"msg":"chat completion"/, "the server logged its requests");
      assert.ok(secrets.length >= 10, `${secrets.length} secrets were issued`);
      for (const secret of secrets) {
        assert.ok(!logs.includes(secret), "a secret is in the log");
        assert.ok(!logs.includes(secret.slice(10)), "part of a secret is in the log");
        assert.ok(!logs.includes(sha256(secret)), "a secret's hash is in the log");
      }
      assert.ok(!logs.includes(ADMIN_TOKEN), "the admin token is in the log");
      assert.doesNotMatch(logs, /sk-pl-[A-Za-z0-9_-]{5,}/, "something that looks like a secret is in the log");
      assert.doesNotMatch(logs, /[Bb]earer /, "an Authorization header is in the log");
    });
  });
}

for (const target of ACCESS_TARGETS) accessServerSuite(target);
