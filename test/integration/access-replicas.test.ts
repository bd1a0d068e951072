/**
 * Two `parley serve` processes behind one key: both on the same PostgreSQL (a schema of
 * its own) and the same Redis, as replicas behind a load balancer. 200 simultaneous
 * requests on a key limited to 50 per minute, split across both, admit exactly 50 in total.
 *
 * Needs TEST_DATABASE_URL and TEST_REDIS_URL (scripts/with-services.sh); skipped, saying
 * so, without them.
 *
 * The processes read the real clock, so a burst that took longer than 1.2 s (the time the
 * 50-per-minute bucket needs to refill one request) could rightly admit a 51st: the bound
 * asserted is 50 plus what the bucket can have refilled during the measured burst, which
 * is exactly 50 whenever the burst took under 1.2 s (it is reported either way).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { openStore } from "../../src/access/open-store.js";
import { assertBuilt, createKeyWithCli, isolatedEnv, startServe, type ServeProcess, type StoreFlags } from "../helpers/access-cli.js";
import { deleteRedisKeys, freshPostgres, hasPostgres, hasRedis, ledgerRows, NO_POSTGRES, NO_REDIS } from "../helpers/access-parley.js";

const skip = !hasPostgres() ? NO_POSTGRES : !hasRedis() ? NO_REDIS : undefined;

if (skip !== undefined) {
  test("two replicas sharing PostgreSQL and Redis enforce one limit", { skip }, () => {});
} else {
  describe("two replicas sharing PostgreSQL and Redis enforce one limit", () => {
    const redisUrl = process.env.TEST_REDIS_URL ?? "";
    let dispose: () => Promise<void> = async () => {};
    let home = "";
    let flags: StoreFlags;
    let env: NodeJS.ProcessEnv = {};
    const replicas: ServeProcess[] = [];
    const keyIds: string[] = [];
    let limited = { id: "", secret: "" };
    let unlimited = { id: "", secret: "" };
    let model = "";

    before(async () => {
      assertBuilt();
      const database = await freshPostgres();
      assert.ok(!("skip" in database));
      home = await mkdtemp(path.join(os.tmpdir(), "parley-replicas-"));
      dispose = database.dispose;
      flags = { dataDir: home, databaseUrl: database.url };
      env = isolatedEnv(home);
      limited = await createKeyWithCli(flags, env, ["--rpm", "50"], "shared");
      unlimited = await createKeyWithCli(flags, env, [], "warm-up");
      keyIds.push(limited.id, unlimited.id);
      const args = ["--database-url", database.url, "--redis-url", redisUrl, "--data-dir", home, "--queue-size", "256"];
      const started = await Promise.allSettled([startServe(args, env), startServe(args, env)]);
      for (const result of started) if (result.status === "fulfilled") replicas.push(result.value);
      for (const result of started) if (result.status === "rejected") throw result.reason;
      assert.notEqual(replicas[0]?.url, replicas[1]?.url);
      const models = (await (await fetch(`${replicas[0]?.url}/v1/models`, { headers: { authorization: `Bearer ${unlimited.secret}` } })).json()) as { data: Array<{ id: string }> };
      model = models.data[0]?.id ?? "";
    });
    after(async () => {
      for (const replica of replicas) await replica.process.stop();
      for (const id of keyIds) await deleteRedisKeys(redisUrl, `parley:rl:{${id}}:*`).catch(() => undefined);
      await dispose();
      await rm(home, { recursive: true, force: true });
    });

    const post = (url: string, secret: string, id: string) =>
      fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${secret}`, "x-request-id": id },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "Hi" }], max_tokens: 1 }),
      });

    test("200 simultaneous requests split across both replicas: exactly 50 admitted in total", async (t) => {
      // Warm both processes up (connections, prepared statements, scripts) with another key.
      for (const replica of replicas) {
        const response = await post(replica.url, unlimited.secret, `warm-${Date.now()}`);
        assert.equal(response.status, 200, await response.text());
      }
      const ids = Array.from({ length: 200 }, (_, index) => `replica-burst-${index}-${Date.now()}`);
      const started = performance.now();
      const results = await Promise.all(
        ids.map(async (id, index) => {
          const replica = replicas[index % 2];
          assert.ok(replica !== undefined);
          const response = await post(replica.url, limited.secret, id);
          const body = (await response.json()) as { error?: { code: string } };
          return { replica: index % 2, status: response.status, code: body.error?.code };
        }),
      );
      const elapsed = performance.now() - started;
      const admitted = results.filter((result) => result.status === 200).length;
      const limitedCount = results.filter((result) => result.status === 429).length;
      const perReplica = [0, 1].map((replica) => results.filter((result) => result.replica === replica && result.status === 200).length);
      t.diagnostic(`burst of 200 took ${Math.round(elapsed)} ms; admitted ${admitted} (${perReplica.join(" + ")}), refused ${limitedCount}`);

      const refillable = Math.floor((elapsed * 50) / 60_000);
      assert.equal(admitted + limitedCount, 200, `every request is 200 or 429: ${JSON.stringify(results.filter((result) => result.status !== 200 && result.status !== 429).slice(0, 3))}`);
      assert.ok(results.filter((result) => result.status === 429).every((result) => result.code === "rate_limit_exceeded"));
      assert.ok(admitted >= 50, `${admitted} admitted: the limit of 50 is available in full`);
      assert.ok(admitted <= 50 + refillable, `${admitted} admitted across two replicas; the limit is 50 (plus ${refillable} refilled during the ${Math.round(elapsed)} ms burst)`);

      // Both replicas wrote the ledger: one row per request.
      const store = await openStore({ dataDir: home, databaseUrl: flags.databaseUrl });
      try {
        const rows = await ledgerRows(store, ids);
        assert.equal(rows.size, 200);
        const flat = [...rows.values()].flat();
        assert.equal(flat.length, 200, "exactly one row each");
        assert.equal(flat.filter((row) => row.outcome === "completed").length, admitted);
        assert.equal(flat.filter((row) => row.outcome === "rejected" && row.status === 429).length, limitedCount);
        assert.ok(flat.every((row) => row.keyId === limited.id));
      } finally {
        await store.close();
      }
    });
  });
}
