/**
 * What authentication, admission and the usage ledger add to a request: the same
 * Parley (same process, same loaded model, same route) with access control off, and on
 * with a SQLite or a PostgreSQL store (and Redis counters when available), side by side.
 *
 *   scripts/with-services.sh node --import tsx bench/access-overhead.ts     (or: npm run bench)
 *
 * Each request is a non-streaming chat completion with max_tokens 1 on stories260K (the
 * model's own time is ~1 ms and identical in every arm), sent one at a time over a
 * keep-alive connection. The arms take turns in blocks of 50 requests so drift in the
 * machine's speed hits them all alike. Reports p50 and p99 latency per arm and the added
 * time against the "off" arm. Results: bench/results/access-overhead.md.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { LlamaLogLevel } from "node-llama-cpp";
import { openEngine } from "../src/backends/local/engine.js";
import { AccessControl } from "../src/access/access-control.js";
import { KeyService } from "../src/access/key-service.js";
import { parseKeySpec } from "../src/access/key-spec.js";
import { openLimiter } from "../src/access/open-limiter.js";
import { openStore } from "../src/access/open-store.js";
import type { RateLimiter } from "../src/access/limiter.js";
import type { AccessStore } from "../src/access/store.js";
import { LocalBackend } from "../src/backends/local/local-backend.js";
import { ModelRegistry } from "../src/backends/registry.js";
import { SEED_RANGES } from "../src/protocol/parameters.js";
import { buildServer } from "../src/server/app.js";
import { NullLimiter, NullStore } from "./lib/null-access.js";
import { PROJECT_ROOT, SHARED_MODELS } from "./lib/processes.js";

const REQUESTS = Number(process.env.REQUESTS ?? 1000);
const BLOCK = 50;
const RESULTS = path.join(PROJECT_ROOT, "bench/results");

interface Arm {
  readonly name: string;
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly samples: number[];
  close(): Promise<void>;
}

const percentile = (values: readonly number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};

async function main(): Promise<void> {
  const { llama } = await openEngine({ logLevel: LlamaLogLevel.error });
  const backend = new LocalBackend(llama, { id: "stories", modelPath: path.join(SHARED_MODELS, "stories260K.gguf"), threads: 1, parallel: 1 });
  await backend.load();
  const registry = new ModelRegistry();
  registry.add(backend);
  const temp = mkdtempSync(path.join(os.tmpdir(), "parley-bench-access-"));

  async function arm(name: string, store: AccessStore, limiter: RateLimiter, keyed: boolean): Promise<Arm> {
    const access = new AccessControl({ store, limiter, staticKeys: [] });
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (keyed) {
      // Every limit set (high enough never to refuse), so every check and the budget counter run.
      const spec = parseKeySpec({ name: `bench-${name}`, rpm: 1e9, tpm: 1e11, max_concurrent: 1000, budget_tokens: 1e11, budget_period: "month" });
      const issued = await new KeyService(store).create(spec);
      headers.authorization = `Bearer ${issued.secret}`;
    }
    const app = buildServer({ registry, access, ranges: SEED_RANGES, logger: false });
    const url = await app.listen({ host: "127.0.0.1", port: 0 });
    return { name, url, headers, samples: [], close: async () => { await app.close(); await access.close(); } };
  }

  const arms: Arm[] = [await arm("off", new NullStore(), new NullLimiter(), false)];
  arms.push(await arm("sqlite", await openStore({ dataDir: path.join(temp, "sqlite") }), await openLimiter({ budgetSeed: async () => 0 }), true));
  const databaseUrl = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  const redisUrl = process.env.TEST_REDIS_URL ?? process.env.REDIS_URL;
  if (databaseUrl !== undefined) {
    arms.push(await arm("postgres", await openStore({ dataDir: temp, databaseUrl }), await openLimiter({ budgetSeed: async () => 0 }), true));
  }
  if (redisUrl !== undefined) {
    const store = await openStore({ dataDir: path.join(temp, "sqlite-redis") });
    arms.push(await arm("sqlite+redis", store, await openLimiter({ redisUrl, budgetSeed: async () => 0, keyPrefix: `parley-bench-${process.pid}:` }), true));
  }

  const body = JSON.stringify({ model: "stories", messages: [{ role: "user", content: "Hi" }], max_tokens: 1, temperature: 0 });
  const send = async (target: Arm): Promise<number> => {
    const started = performance.now();
    const response = await fetch(`${target.url}/v1/chat/completions`, { method: "POST", headers: target.headers, body });
    await response.arrayBuffer();
    if (response.status !== 200) throw new Error(`${target.name}: HTTP ${response.status}`);
    return performance.now() - started;
  };
  for (const target of arms) for (let i = 0; i < 100; i++) await send(target); // warm-up
  for (let done = 0; done < REQUESTS; done += BLOCK) {
    for (const target of arms) for (let i = 0; i < BLOCK; i++) target.samples.push(await send(target));
  }

  const off = arms[0]!;
  const rows = arms.map((target) => {
    const p50 = percentile(target.samples, 50);
    const p99 = percentile(target.samples, 99);
    const added = target === off ? "—" : `${(p50 - percentile(off.samples, 50)).toFixed(3)} / ${(p99 - percentile(off.samples, 99)).toFixed(3)}`;
    return `| ${target.name} | ${target.samples.length} | ${p50.toFixed(3)} | ${p99.toFixed(3)} | ${added} |`;
  });
  const report = [
    "# Access overhead: authentication, admission and the usage ledger, per request",
    "",
    `Measured ${new Date().toISOString()} on ${os.cpus()[0]?.model ?? "?"} (${os.cpus().length} cores), Node ${process.version}.`,
    "One Parley process, one loaded model (stories260K, 1 thread), one route; non-streaming chat completions with max_tokens 1,",
    `one at a time over keep-alive, ${REQUESTS} per arm after 100 warm-up, arms alternating in blocks of ${BLOCK}. "off": no keys, a store`,
    "that keeps nothing and a limiter that admits all; the others: a key with every limit set (rpm, tpm, concurrency, monthly budget),",
    "looked up by hash, admitted by the limiter, settled, and one ledger row committed before the response's last byte.",
    "",
    "Command: `scripts/with-services.sh node --import tsx bench/access-overhead.ts` (part of `npm run bench`)",
    "",
    "| arm | requests | p50 (ms) | p99 (ms) | added vs off, p50 / p99 (ms) |",
    "|---|---|---|---|---|",
    ...rows,
    "",
    "Target: under 1 ms added at p50.",
    "",
  ].join("\n");
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(path.join(RESULTS, "access-overhead.md"), report);
  console.log(report);
  for (const target of arms) await target.close();
  await registry.dispose();
  rmSync(temp, { recursive: true, force: true });
}

await main();
