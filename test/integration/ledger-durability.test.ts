/**
 * "A completed response's ledger row is durable before the response's last byte": a
 * `parley serve` under load (8 clients looping short requests, streamed and not) is
 * killed with SIGKILL mid-load; every request whose client had received the complete
 * response (the JSON body, or `[DONE]`) must have its row in the store afterwards.
 * On SQLite (the file is read with better-sqlite3, read-only) and, when TEST_DATABASE_URL
 * is set, on PostgreSQL (a schema of its own).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import Database from "better-sqlite3";
import { openStore } from "../../src/access/open-store.js";
import { assertBuilt, createKeyWithCli, isolatedEnv, startServe, storeArgs, type StoreFlags } from "../helpers/access-cli.js";
import { setTimeout as sleep } from "node:timers/promises";
import { freshPostgres, hasPostgres, NO_POSTGRES } from "../helpers/access-parley.js";

const CLIENTS = 8;
/** Completed requests to wait for before the kill: enough that the kill lands mid-load. */
const COMPLETED_BEFORE_KILL = 120;

interface Outcome {
  /** Request ids whose complete response the client received. */
  readonly completed: string[];
  /** Request ids sent whose response did not complete (cut by the kill). */
  readonly cut: string[];
}

/** Loops requests until the server dies; a request counts as completed only with its whole response in hand. */
async function load(url: string, secret: string, model: string, client: number, stop: () => boolean, outcome: Outcome): Promise<void> {
  for (let sequence = 0; !stop(); sequence++) {
    const id = `durable-${client}-${sequence}-${Math.random().toString(36).slice(2, 8)}`;
    const stream = sequence % 2 === 1;
    try {
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${secret}`, "x-request-id": id },
        body: JSON.stringify({ model, messages: [{ role: "user", content: `Story ${sequence}` }], max_tokens: 2 + (sequence % 6), stream }),
      });
      const text = await response.text();
      if (response.status !== 200) throw new Error(`status ${response.status}: ${text.slice(0, 200)}`);
      const complete = stream
        ? text.endsWith("data: [DONE]\n\n")
        : (JSON.parse(text) as { object?: string }).object === "chat.completion";
      (complete ? outcome.completed : outcome.cut).push(id);
    } catch (error) {
      outcome.cut.push(id);
      if (!stop()) throw error;
    }
  }
}

interface Variant {
  readonly name: string;
  readonly skip: string | undefined;
  open(dataDir: string): Promise<{ flags: StoreFlags; dispose(): Promise<void>; requestIds(): Promise<Map<string, string[]>> }>;
}

const VARIANTS: Variant[] = [
  {
    name: "SQLite",
    skip: undefined,
    open: async (dataDir) => ({
      flags: { dataDir },
      dispose: async () => {},
      requestIds: async () => {
        const db = new Database(path.join(dataDir, "parley.db"), { readonly: true, fileMustExist: true });
        try {
          const rows = db.prepare("SELECT request_id, outcome FROM ledger").all() as Array<{ request_id: string; outcome: string }>;
          const found = new Map<string, string[]>();
          for (const row of rows) found.set(row.request_id, [...(found.get(row.request_id) ?? []), row.outcome]);
          return found;
        } finally {
          db.close();
        }
      },
    }),
  },
  {
    name: "PostgreSQL",
    skip: hasPostgres() ? undefined : NO_POSTGRES,
    open: async (dataDir) => {
      const database = await freshPostgres();
      assert.ok(!("skip" in database));
      return {
        flags: { dataDir, databaseUrl: database.url },
        dispose: database.dispose,
        requestIds: async () => {
          const store = await openStore({ dataDir, databaseUrl: database.url });
          try {
            const rows = await store.recentRequests(1_000_000);
            const found = new Map<string, string[]>();
            for (const row of rows) found.set(row.requestId, [...(found.get(row.requestId) ?? []), row.outcome]);
            return found;
          } finally {
            await store.close();
          }
        },
      };
    },
  },
];

describe("ledger durability: SIGKILL under load loses no row of a completed request", () => {
  for (const variant of VARIANTS) {
    test(variant.name, { skip: variant.skip }, async (t) => {
      assertBuilt();
      const home = await mkdtemp(path.join(os.tmpdir(), "parley-durability-"));
      const dataDir = path.join(home, "data");
      const store = await variant.open(dataDir);
      const env = isolatedEnv(home);
      try {
        const key = await createKeyWithCli(store.flags, env, [], "load");
        const serve = await startServe([...storeArgs(store.flags), "--queue-size", "64"], env);
        let killed = false;
        const outcome: Outcome = { completed: [], cut: [] };
        try {
          const models = (await (await fetch(`${serve.url}/v1/models`, { headers: { authorization: `Bearer ${key.secret}` } })).json()) as { data: Array<{ id: string }> };
          const model = models.data[0]?.id ?? "";
          const clients = Array.from({ length: CLIENTS }, (_, client) => load(serve.url, key.secret, model, client, () => killed, outcome));
          const failed = Promise.race(clients.map((client) => client.then(() => new Promise<never>(() => {}))));
          const enough = (async () => {
            // A bound that only turns a hang into a failure.
            for (const deadline = Date.now() + 120_000; outcome.completed.length < COMPLETED_BEFORE_KILL; await sleep(5)) {
              assert.ok(Date.now() < deadline, `only ${outcome.completed.length} requests completed`);
            }
          })();
          await Promise.race([enough, failed]);
          killed = true;
          serve.process.child.kill("SIGKILL");
          await serve.process.exited();
          await Promise.all(clients);
        } finally {
          killed = true;
          await serve.process.stop(1000);
        }
        assert.equal(serve.process.child.signalCode, "SIGKILL", "the server was killed, not stopped");
        t.diagnostic(`${outcome.completed.length} requests completed before the kill, ${outcome.cut.length} were cut by it`);
        assert.ok(outcome.cut.length > 0, "the kill landed while requests were in flight");

        const rows = await store.requestIds();
        const missing = outcome.completed.filter((id) => !rows.has(id));
        assert.deepEqual(missing, [], `${missing.length} of ${outcome.completed.length} completed requests have no ledger row`);
        for (const id of outcome.completed) assert.deepEqual(rows.get(id), ["completed"], `one 'completed' row for ${id}`);
        const cutWithRows = outcome.cut.filter((id) => rows.has(id));
        for (const id of cutWithRows) assert.equal(rows.get(id)?.length, 1, `at most one row for ${id}`);
      } finally {
        await store.dispose();
        await rm(home, { recursive: true, force: true });
      }
    });
  }
});
