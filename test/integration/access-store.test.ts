/**
 * One behaviour suite for `AccessStore`, run against SQLite (a temporary directory) and
 * against a real PostgreSQL when TEST_DATABASE_URL is set (scripts/with-services.sh sets
 * it; each database there is a schema of its own, dropped afterwards).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { MIGRATIONS, pendingMigrations } from "../../src/access/migrations.js";
import { openStore } from "../../src/access/open-store.js";
import { StoreConflictError, type AccessStore } from "../../src/access/store.js";
import type { LedgerRow } from "../../src/access/types.js";
import {
  at,
  bucket,
  key,
  postgresDatabase,
  row,
  runChildStore,
  sqliteDatabase,
  unicodeNoise,
  type TestDatabase,
} from "../helpers/access-store.js";

const VERSIONS = MIGRATIONS.map((migration) => migration.version);

const KEY_A = key({ id: "key_aaaaaaaaaaaaaaaa", hash: "a".repeat(64), createdAt: at("2024-03-01T08:00:00.001Z") });
const KEY_B = key({ id: "key_bbbbbbbbbbbbbbbb", hash: "b".repeat(64), createdAt: at("2024-03-01T08:00:00.002Z") });

/** Rows over two UTC days (the boundary at 2024-03-10T00:00Z), two keys and none, two models and none. */
const USAGE_ROWS: LedgerRow[] = [
  row({ requestId: "r1", keyId: KEY_A.id, model: "m1", promptTokens: 10, completionTokens: 5, cachedTokens: 2 }),
  row({ requestId: "r2", keyId: KEY_A.id, model: "M2", promptTokens: 20, completionTokens: 10, createdAt: at("2024-03-09T23:59:59.999Z") }),
  row({ requestId: "r3", keyId: KEY_B.id, model: "m1", promptTokens: 1, completionTokens: 1, cachedTokens: 1, createdAt: at("2024-03-10T00:00:00.000Z") }),
  row({ requestId: "r4", keyId: null, model: "m1", promptTokens: 100, status: 429, outcome: "rejected", finishReason: null, timeToFirstTokenMs: null, createdAt: at("2024-03-10T12:00:00.000Z") }),
  row({ requestId: "r5", keyId: KEY_B.id, model: null, status: 499, outcome: "abandoned", finishReason: null, createdAt: at("2024-03-10T13:00:00.000Z") }),
];

function accessStoreSuite(name: string, fresh: (() => Promise<TestDatabase>) | { skip: string }): void {
  if (typeof fresh !== "function") {
    // A skipped test (not suite), so that the run's summary counts it as skipped.
    test(name, { skip: fresh.skip }, () => {});
    return;
  }
  /** Runs `body` with a migrated store on a fresh database, then closes and drops both. */
  const withStore = (body: (store: AccessStore, database: TestDatabase) => Promise<void>) => async () => {
    const database = await fresh();
    const store = await openStore(database.options);
    try {
      await body(store, database);
    } finally {
      await store.close();
      await database.dispose();
    }
  };

  describe(name, () => {
    test("migrating again is a no-op that keeps the data", withStore(async (store, database) => {
      await store.createKey(KEY_A);
      await store.appendLedger(row({ keyId: KEY_A.id }));
      await store.migrate();
      await store.migrate();
      const again = await openStore(database.options);
      await again.close();
      assert.deepEqual(await database.versions(), VERSIONS);
      assert.deepEqual(await store.getKey(KEY_A.id), KEY_A);
      assert.equal((await store.recentRequests(10)).length, 1);
    }));

    test("stores started at the same moment migrate once, in one process and in several", async () => {
      const database = await fresh();
      try {
        const stores = await Promise.all([1, 2, 3, 4].map(() => openStore(database.options)));
        for (const store of stores) assert.equal(await store.hasKeys(), false);
        await Promise.all(stores.map((store) => store.close()));
        assert.deepEqual(await database.versions(), VERSIONS);
      } finally {
        await database.dispose();
      }
      const other = await fresh();
      try {
        const children = [1, 2, 3].map(() => runChildStore("migrate", other.options));
        for (const child of children) {
          assert.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr());
          assert.equal(child.stdout(), "migrated\n");
        }
        assert.deepEqual(await other.versions(), VERSIONS);
      } finally {
        await other.dispose();
      }
    });

    test("keys: create, get, find by hash, list oldest first, hasKeys", withStore(async (store) => {
      assert.equal(await store.hasKeys(), false);
      assert.deepEqual(await store.listKeys(), []);
      await store.createKey(KEY_B);
      await store.createKey(KEY_A);
      assert.equal(await store.hasKeys(), true);
      assert.deepEqual(await store.getKey(KEY_A.id), KEY_A);
      assert.deepEqual(await store.findKeyByHash(KEY_B.hash), KEY_B);
      assert.equal(await store.getKey("key_unknown"), undefined);
      assert.equal(await store.findKeyByHash("f".repeat(64)), undefined);
      assert.deepEqual(await store.listKeys(), [KEY_A, KEY_B]);
    }));

    test("revoke keeps the first revocation time; rotate keeps id, limits and usage", withStore(async (store) => {
      const limited = key({ models: ["m1"], rpm: 60, tpm: 1000, maxConcurrent: 2, budgetTokens: 5000, budgetPeriod: "day" });
      await store.createKey(limited);
      await store.appendLedger(row({ keyId: limited.id, promptTokens: 7 }));
      const first = at("2024-04-01T00:00:00.123Z");
      assert.deepEqual(await store.revokeKey(limited.id, first), { ...limited, revokedAt: first });
      assert.deepEqual(await store.revokeKey(limited.id, at("2024-05-01T00:00:00.000Z")), { ...limited, revokedAt: first });
      assert.equal(await store.revokeKey("key_unknown", first), undefined);

      const rotated = await store.replaceKeySecret(limited.id, "c".repeat(64), "sk-pl-NEW1");
      assert.deepEqual(rotated, { ...limited, revokedAt: first, hash: "c".repeat(64), prefix: "sk-pl-NEW1" });
      assert.equal(await store.findKeyByHash(limited.hash), undefined);
      assert.deepEqual(await store.findKeyByHash("c".repeat(64)), rotated);
      assert.equal(await store.tokensUsed(limited.id, null), 7);
      assert.equal(await store.replaceKeySecret("key_unknown", "d".repeat(64), "x"), undefined);
    }));

    test("a duplicate id or hash is a StoreConflictError and changes nothing", withStore(async (store) => {
      await store.createKey(KEY_A);
      await store.createKey(KEY_B);
      await assert.rejects(store.createKey({ ...KEY_B, hash: "e".repeat(64) }), (error: unknown) =>
        error instanceof StoreConflictError && /key_bbbbbbbbbbbbbbbb/.test(error.message));
      await assert.rejects(store.createKey({ ...KEY_B, id: "key_cccccccccccccccc" }), StoreConflictError);
      await assert.rejects(store.replaceKeySecret(KEY_B.id, KEY_A.hash, "x"), StoreConflictError);
      assert.deepEqual(await store.listKeys(), [KEY_A, KEY_B]);
    }));

    test("every limit, null and Date round-trips to the millisecond", withStore(async (store) => {
      const full = key({
        id: "key_ffffffffffffffff", hash: "f".repeat(64), models: ["qwen2-7b", "llama-3"], rpm: 60, tpm: 90_000,
        maxConcurrent: 4, budgetTokens: 10_000_000_000, budgetPeriod: "month", expiresAt: at("2031-01-02T03:04:05.678Z"),
        createdAt: at("1999-12-31T23:59:59.999Z"), revokedAt: at("2030-06-07T08:09:10.011Z"),
      });
      const empty = key({ models: [], rpm: 0, createdAt: at("1970-01-01T00:00:00.000Z") });
      const none = key({ id: "key_1111111111111111", hash: "1".repeat(64) });
      for (const record of [full, empty, none]) await store.createKey(record);
      for (const record of [full, empty, none]) assert.deepEqual(await store.getKey(record.id), record);
      for (const period of ["day", "total"] as const) {
        const record = key({ id: `key_${period}`, hash: period, budgetTokens: 1, budgetPeriod: period });
        await store.createKey(record);
        assert.deepEqual(await store.getKey(record.id), record);
      }
    }));

    test("a record the schema refuses is an error and stores nothing", withStore(async (store) => {
      const refused = [
        key({ rpm: -1 }), key({ tpm: 1.5 }), key({ maxConcurrent: -3 }), key({ budgetTokens: 100 }),
        key({ budgetPeriod: "week" as "day" }), key({ id: "" }), key({ id: "k".repeat(129) }),
        key({ rpm: Number.NaN }), key({ expiresAt: new Date(Number.NaN) }), key({ createdAt: new Date(Number.NaN) }),
      ];
      for (const record of refused) await assert.rejects(store.createKey(record), Error);
      assert.equal(await store.hasKeys(), false);
      await assert.rejects(store.appendLedger(row({ keyId: "key_unknown" })), Error);
      await assert.rejects(store.appendLedger(row({ outcome: "exploded" as "failed" })), Error);
      await assert.rejects(store.appendLedger(row({ createdAt: new Date(Number.NaN) })), Error);
      await assert.rejects(store.usage({ groupBy: "none", since: new Date(Number.NaN) }), Error);
      await assert.rejects(store.recentRequests(-1), RangeError);
      assert.deepEqual(await store.recentRequests(10), []);
    }));

    test("rows appended together are each stored, and a refused one fails alone", withStore(async (store) => {
      await store.createKey(KEY_A);
      const appended = await Promise.allSettled([
        store.appendLedger(row({ requestId: "together-1", keyId: KEY_A.id, promptTokens: 1 })),
        store.appendLedger(row({ requestId: "together-2", keyId: "key_unknown" })),
        store.appendLedger(row({ requestId: "together-3", keyId: KEY_A.id, promptTokens: 2 })),
        store.appendLedger(row({ requestId: "together-4", createdAt: new Date(Number.NaN) })),
      ]);
      assert.deepEqual(appended.map((result) => result.status), ["fulfilled", "rejected", "fulfilled", "rejected"]);
      const stored = (await store.recentRequests(10)).map((ledgerRow) => ledgerRow.requestId).sort();
      assert.deepEqual(stored, ["together-1", "together-3"]);
      assert.equal(await store.tokensUsed(KEY_A.id, null), 3);
    }));

    test("usage groups by day, key, model and none, and filters", withStore(async (store) => {
      await store.createKey(KEY_A);
      await store.createKey(KEY_B);
      for (const usageRow of USAGE_ROWS) await store.appendLedger(usageRow);
      assert.deepEqual(await store.usage({ groupBy: "day" }), [
        bucket("2024-03-09", 2, 30, 15, 2), bucket("2024-03-10", 3, 101, 1, 1)]);
      assert.deepEqual(await store.usage({ groupBy: "key" }), [
        bucket("(none)", 1, 100, 0, 0), bucket(KEY_A.id, 2, 30, 15, 2), bucket(KEY_B.id, 2, 1, 1, 1)]);
      // Code-point order: "(none)" < "M2" < "m1", whatever the database's locale.
      assert.deepEqual(await store.usage({ groupBy: "model" }), [
        bucket("(none)", 1, 0, 0, 0), bucket("M2", 1, 20, 10, 0), bucket("m1", 3, 111, 6, 3)]);
      assert.deepEqual(await store.usage({ groupBy: "none" }), [bucket("all", 5, 131, 16, 3)]);

      const since = at("2024-03-10T00:00:00.000Z");
      assert.deepEqual(await store.usage({ groupBy: "none", keyId: KEY_A.id }), [bucket("all", 2, 30, 15, 2)]);
      assert.deepEqual(await store.usage({ groupBy: "key", model: "m1" }), [
        bucket("(none)", 1, 100, 0, 0), bucket(KEY_A.id, 1, 10, 5, 2), bucket(KEY_B.id, 1, 1, 1, 1)]);
      assert.deepEqual(await store.usage({ groupBy: "none", since }), [bucket("all", 3, 101, 1, 1)]);
      assert.deepEqual(await store.usage({ groupBy: "day", until: since }), [bucket("2024-03-09", 2, 30, 15, 2)]);
      assert.deepEqual(
        await store.usage({ groupBy: "model", keyId: KEY_B.id, model: "m1", since: at("2024-03-09T00:00:00Z"), until: at("2024-03-11T00:00:00Z") }),
        [bucket("m1", 1, 1, 1, 1)]);
      assert.deepEqual(await store.usage({ groupBy: "none", keyId: "key_unknown" }), []);
      assert.deepEqual(await store.usage({ groupBy: "day", since: at("2030-01-01T00:00:00Z") }), []);

      assert.equal(await store.tokensUsed(KEY_A.id, null), 45);
      assert.equal(await store.tokensUsed(KEY_A.id, at("2024-03-09T23:59:59.999Z")), 30);
      assert.equal(await store.tokensUsed(KEY_A.id, since), 0);
      assert.equal(await store.tokensUsed(KEY_B.id, null), 2);
      assert.equal(await store.tokensUsed("key_unknown", null), 0);
    }));

    test("recentRequests: newest first, limited, every field round-trips", withStore(async (store) => {
      await store.createKey(KEY_A);
      await store.createKey(KEY_B);
      for (const usageRow of USAGE_ROWS) await store.appendLedger(usageRow);
      const tie = row({ requestId: "r6", createdAt: USAGE_ROWS[4]?.createdAt ?? new Date() });
      await store.appendLedger(tie);
      const newestFirst = [tie, ...[...USAGE_ROWS].reverse()];
      assert.deepEqual(await store.recentRequests(100), newestFirst);
      assert.deepEqual(await store.recentRequests(2), newestFirst.slice(0, 2));
      assert.deepEqual(await store.recentRequests(0), []);
    }));

    test("hostile strings are stored verbatim and the store still works", withStore(async (store) => {
      const noise = unicodeNoise(10_000);
      const hostile = [`O'Brien "quoted" \\ back\`tick`, "'; DROP TABLE keys; --", "Robert'); DROP TABLE ledger;--",
        "名前 🔑 émoji \u202Ertl\u0301 ", "x".repeat(10_000), noise, "%s %d $1 ? :name"];
      const keys = hostile.map((text, index) =>
        key({ id: `key_'; DROP TABLE keys; --${index}`, hash: `'; DROP ${index}`, name: text, prefix: text, models: hostile }));
      for (const record of keys) await store.createKey(record);
      for (const [index, text] of hostile.entries()) {
        await store.appendLedger(row({ requestId: text, keyId: keys[index]?.id ?? null, model: text, finishReason: text, promptTokens: index }));
      }
      for (const record of keys) {
        assert.deepEqual(await store.getKey(record.id), record);
        assert.deepEqual(await store.findKeyByHash(record.hash), record);
      }
      assert.deepEqual(await store.listKeys(), keys);
      const recent = await store.recentRequests(100);
      assert.deepEqual(recent.map((ledgerRow) => ledgerRow.requestId).sort(), [...hostile].sort());
      assert.deepEqual(await store.usage({ groupBy: "none", model: noise }), [bucket("all", 1, 5, 0, 0)]);
      assert.deepEqual(await store.usage({ groupBy: "none", keyId: keys[1]?.id }), [bucket("all", 1, 1, 0, 0)]);
      assert.equal((await store.usage({ groupBy: "model" })).length, hostile.length);

      await store.createKey(KEY_A);
      await store.appendLedger(row({ keyId: KEY_A.id, promptTokens: 9 }));
      assert.equal(await store.tokensUsed(KEY_A.id, null), 9);
      assert.equal((await store.listKeys()).length, hostile.length + 1);
    }));

    test("a ledger row whose append resolved survives SIGKILL", async () => {
      const database = await fresh();
      try {
        await (await openStore(database.options)).close();
        const child = runChildStore("append", database.options);
        await new Promise<void>((resolve, reject) => {
          child.child.stdout.on("data", () => {
            if ((child.stdout().match(/^appended /gm)?.length ?? 0) >= 50) resolve();
          });
          void child.exited.then(() => reject(new Error(`child exited early: ${child.stderr()}`)));
        });
        child.child.kill("SIGKILL");
        assert.equal((await child.exited).signal, "SIGKILL");
        const printed = [...child.stdout().matchAll(/^appended (\S+)$/gm)].map((match) => match[1]);
        const store = await openStore(database.options);
        try {
          const stored = new Set((await store.recentRequests(1_000_000)).map((ledgerRow) => ledgerRow.requestId));
          assert.ok(printed.length >= 50);
          for (const requestId of printed) assert.ok(stored.has(requestId ?? ""), `${requestId} was lost`);
        } finally {
          await store.close();
        }
      } finally {
        await database.dispose();
      }
    });
  });
}

const databaseUrl = process.env.TEST_DATABASE_URL;
accessStoreSuite("SqliteStore", sqliteDatabase);
accessStoreSuite(
  "PostgresStore",
  databaseUrl === undefined || databaseUrl === ""
    ? { skip: "TEST_DATABASE_URL is not set; run with scripts/with-services.sh node --import tsx --test test/integration/access-store.test.ts" }
    : () => postgresDatabase(databaseUrl),
);

describe("openStore", () => {
  const secret = "hunter2-Secret";
  const refuses = async (databaseUrl: string, expected: RegExp): Promise<void> => {
    const error = await openStore({ databaseUrl, dataDir: os.tmpdir(), connectTimeoutMs: 3000 }).then(
      () => assert.fail("openStore should have failed"),
      (error: unknown) => error,
    );
    assert.ok(error instanceof Error);
    assert.match(error.message, expected);
    assert.ok(!error.message.includes(secret), error.message);
    assert.ok(!error.message.includes(encodeURIComponent(secret)), error.message);
  };

  test("a bad or unreachable PostgreSQL URL says what failed and never shows the password", async () => {
    await refuses(`postgres://parley:${secret}@127.0.0.1:1/parley`, /PostgreSQL database postgres:\/\/parley@127\.0\.0\.1:1\/parley: .*ECONNREFUSED/);
    await refuses(`postgresql://parley@127.0.0.1:1/parley?password=${secret}`, /ECONNREFUSED/);
    await refuses(`mysql://root:${secret}@db.example/parley`, /not supported: expected postgres:\/\//);
    await refuses(`postgres://parley:${secret}@[::1/parley`, /./);
    await refuses(`postgres://parley:${secret}@host:notaport/parley`, /./);
    if (databaseUrl !== undefined && databaseUrl !== "") {
      const missing = new URL(databaseUrl);
      missing.password = secret;
      missing.pathname = "/no_such_database";
      await refuses(missing.toString(), /database "no_such_database" does not exist/);
    }
  });

  test("SQLite: creates the data directory and parley.db; a file in the way is a clear error", async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), "parley-open-"));
    try {
      const store = await openStore({ dataDir: path.join(base, "a/b/c") });
      await store.createKey(KEY_A);
      await store.close();
      const reopened = await openStore({ databaseUrl: "", dataDir: path.join(base, "a/b/c") });
      assert.deepEqual(await reopened.listKeys(), [KEY_A]);
      await reopened.close();
      await writeFile(path.join(base, "file"), "not a directory");
      await assert.rejects(openStore({ dataDir: path.join(base, "file/sub") }), /could not create the data directory/);
      await writeFile(path.join(base, "parley.db"), "not a database, but long enough to look like a header ".repeat(4));
      await assert.rejects(openStore({ dataDir: base }), /could not open the SQLite database .*parley\.db: /);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  test("a database newer than this code is refused", () => {
    assert.deepEqual(pendingMigrations([]), MIGRATIONS);
    assert.deepEqual(pendingMigrations(VERSIONS), []);
    assert.throws(() => pendingMigrations([...VERSIONS, 999]), /schema version 999, newer than this Parley knows/);
  });
});
