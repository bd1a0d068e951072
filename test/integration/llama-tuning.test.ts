/**
 * Parley's llama-tuning addon (native/llama-tuning.c) on the real engine: every context
 * gets a persistent ggml threadpool, freed with it, which decodes exactly what ggml's
 * per-step threads decode; `--cpu-kernels` loads the variant asked for, and an unknown or
 * unrunnable one falls back to ggml's choice with a warning. Speed is measured by
 * `npm run bench:threads` and `npm run bench:concurrency`, not here.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import type { LlamaContext, LlamaModel, Token } from "node-llama-cpp";
import { referenceCost, TIE_MARGIN, type CalibrationResult } from "../../src/backends/local/kernel-calibration.js";
import { loadTuning, tuningStatus } from "../../src/backends/local/llama-tuning.js";
import { CLI, runCli } from "../helpers/cli.js";
import { PROJECT_ROOT, STORIES_260K, tinyQwen2 } from "../helpers/models.js";
import { testLlama } from "../helpers/parley.js";

const BUILD_STATUS = path.join(PROJECT_ROOT, "build/native/status.json");

function buildStatus(): { built: boolean; reason: string | null } {
  assert.ok(existsSync(BUILD_STATUS), `${BUILD_STATUS} is missing: run \`npm run build\` first (npm test does)`);
  return JSON.parse(readFileSync(BUILD_STATUS, "utf8")) as { built: boolean; reason: string | null };
}

/** The one reason a machine may legitimately lack the addon: no C compiler to build it. */
const noCompiler = ((): string | undefined => {
  if (!existsSync(BUILD_STATUS)) return undefined;
  const status = buildStatus();
  return !status.built && /no C compiler/.test(status.reason ?? "") ? `addon not built: ${status.reason}` : undefined;
})();

test("npm run build built the addon", { skip: noCompiler }, () => {
  const status = buildStatus();
  assert.equal(status.built, true, `not built: ${status.reason}`);
});

/** This process's threads. */
function threadIds(): Set<string> {
  return new Set(readdirSync("/proc/self/task"));
}

/** A thread's CPU time so far, in clock ticks (utime + stime); 0 once it has exited. */
function cpuTicks(tid: string): number {
  try {
    const fields = readFileSync(`/proc/self/task/${tid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    return Number(fields[11]) + Number(fields[12]); // fields 14 and 15 of stat(5), counted after the name
  } catch {
    return 0;
  }
}

describe("a persistent threadpool per context", { skip: noCompiler }, () => {
  let model: LlamaModel;
  before(async () => {
    const llama = await testLlama();
    model = await llama.loadModel({ modelPath: await tinyQwen2() });
  });
  after(() => model.dispose());

  async function greedy(threads: number, count = 24, context?: LlamaContext): Promise<Token[]> {
    const own = context ?? (await model.createContext({ contextSize: 256, threads }));
    try {
      const tokens: Token[] = [];
      const prompt = model.tokenize("Once upon a time, in a lighthouse by the sea, there lived");
      for await (const token of own.getSequence().evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
        tokens.push(token);
        if (tokens.length === count) break;
      }
      return tokens;
    } finally {
      if (context === undefined) await own.dispose();
    }
  }

  test("is attached when a context is created and freed when it is disposed", async () => {
    const tuning = tuningStatus();
    assert.equal(tuning.active, true, tuning.reason ?? "");
    assert.equal(tuning.threadpool, true);
    const before = tuningStatus();
    const context = await model.createContext({ contextSize: 256, threads: 2 });
    const during = tuningStatus();
    // node-llama-cpp may create (and free) a probe context on a model's first createContext.
    assert.ok(during.poolsAttached > before.poolsAttached);
    assert.equal(during.poolsLive, before.poolsLive + 1);
    assert.equal(during.lastError, null);
    await context.dispose();
    assert.equal(tuningStatus().poolsLive, before.poolsLive);
  });

  test("its worker thread lives as long as the context and does the decoding's work", async () => {
    await greedy(1, 2); // the engine's own worker threads (libuv's pool) exist from here on
    const before = threadIds();
    const context = await model.createContext({ contextSize: 256, threads: 2 });
    // 2 threads: the decoding thread itself plus one pool worker, started with the context.
    const workers = [...threadIds()].filter((tid) => !before.has(tid));
    const worker = workers[0] ?? "";
    try {
      assert.equal(workers.length, 1, `new threads after createContext: ${workers.join(", ")}`);
      const ticks = cpuTicks(worker);
      await greedy(2, 200, context);
      assert.ok(threadIds().has(worker), "the pool worker survives between steps");
      assert.ok(cpuTicks(worker) > ticks, "the pool worker computed part of the decode steps");
    } finally {
      await context.dispose();
    }
    assert.equal(threadIds().has(worker), false, "the pool worker ends with its context");
  });

  test("decodes token for token what ggml's per-step threads decode", async () => {
    const pooled = await greedy(2);
    const attachedBefore = tuningStatus().poolsAttached;
    loadTuning({ threadpool: false });
    try {
      const unpooled = await greedy(2);
      assert.equal(tuningStatus().poolsAttached, attachedBefore, "with threadpool off no pool is attached");
      assert.equal(pooled.length, 24);
      assert.deepEqual(pooled, unpooled);
    } finally {
      loadTuning({ threadpool: true });
    }
  });
});

describe("parley serve --cpu-kernels", { skip: noCompiler }, () => {
  before(() => assert.ok(existsSync(CLI), `${CLI} is missing: run \`npm run build\` first (npm test does)`));
  const avx2 = readFileSync("/proc/cpuinfo", "utf8").split("\n").some((line) => line.startsWith("flags") && /\bavx2\b/.test(line));
  const TUNED = /"cpuKernels":"?([a-z0-9_]+|null)"?[^\n]*"msg":"llama.cpp engine tuned"/;

  async function serveLog(args: readonly string[]): Promise<{ loaded: string; output: string }> {
    const server = runCli(["serve", "--model", STORIES_260K, "--port", "0", "--threads", "1", "--log-level", "info", ...args]);
    try {
      const loaded = (await server.waitFor(TUNED))[1] ?? "";
      await server.waitFor(/Model '[^']+' loaded/);
      return { loaded, output: server.output() };
    } finally {
      await server.stop();
    }
  }

  test("auto measures each candidate on the model once, loads the cheapest, and caches the choice", async () => {
    const cacheDir = mkdtempSync(path.join(os.tmpdir(), "parley-kernels-"));
    try {
      const first = await serveLog(["--cache-dir", cacheDir]);
      assert.match(first.output, /Measuring llama.cpp's CPU kernels on this model/);
      const tuned = JSON.parse(first.output.split("\n").find((line) => line.includes('"msg":"llama.cpp engine tuned"')) ?? "{}") as {
        cpuKernels?: string;
        why?: string;
        measured?: Array<{ cpuKernels: string; prefillMs: number; stepMs: number }>;
      };
      const measured = tuned.measured ?? [];
      assert.ok(measured.length >= 1, first.output);
      assert.equal(measured.length, new Set(measured.map((each) => each.cpuKernels)).size, "each variant is measured once");
      // The choice is the cheapest logged one, or ggml's (logged first) within TIE_MARGIN of
      // it; the log rounds to microseconds, which can reorder near-ties.
      const cheapest = Math.min(...measured.map((each) => referenceCost(each, 1)));
      const chosen = measured.find((each) => each.cpuKernels === tuned.cpuKernels);
      assert.ok(chosen !== undefined, first.output);
      const rounding = referenceCost({ prefillMs: 0.001, stepMs: 0.001 }, 1);
      const allowed = chosen === measured[0] ? cheapest * (1 + TIE_MARGIN) : cheapest;
      assert.ok(referenceCost(chosen, 1) <= allowed + rounding, first.output);
      assert.equal(first.loaded, tuned.cpuKernels);
      assert.match(tuned.why ?? "", /measured now/);
      assert.ok(existsSync(path.join(cacheDir, "cpu-kernels.json")));

      const second = await serveLog(["--cache-dir", cacheDir]);
      assert.doesNotMatch(second.output, /Measuring llama.cpp's CPU kernels/);
      assert.match(second.output, /"why":"measured [^"]* \(cached in [^"]*cpu-kernels.json\)"/);
      assert.equal(second.loaded, first.loaded);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });

  test("a measurement times the loop that will serve: the native loop, or evaluate with --no-native-loop", async () => {
    const child = path.join(PROJECT_ROOT, "dist/backends/local/calibrate-kernels.js");
    for (const nativeLoop of [true, false]) {
      const request = { variant: null, modelPath: STORIES_260K, parallel: 2, threads: 1, threadpool: true, nativeLoop };
      const { stdout } = await promisify(execFile)(process.execPath, [child, JSON.stringify(request)], { timeout: 120_000 });
      const result = JSON.parse(stdout.trim()) as CalibrationResult;
      assert.equal(result.loop, nativeLoop ? "native" : "library");
      assert.equal(result.threads, 1);
      assert.notEqual(result.loaded, null);
      for (const ms of [result.prefillMs, result.stepMs]) assert.ok(Number.isFinite(ms) && ms > 0, stdout);
    }
  });

  test("the server listens while it measures, and a stop ends the measuring child too", async () => {
    const cacheDir = mkdtempSync(path.join(os.tmpdir(), "parley-kernels-"));
    const server = runCli(["serve", "--model", STORIES_260K, "--port", "0", "--threads", "1", "--cache-dir", cacheDir]);
    try {
      await server.waitFor(/Measuring llama.cpp's CPU kernels/);
      const url = (await server.waitFor(/Parley listening on (http:\/\/[^"\s]+)/))[1] ?? "";
      const health = await fetch(`${url}/health`);
      assert.ok([200, 503].includes(health.status), `health answers while measuring: ${health.status}`);
    } finally {
      await server.stop();
      rmSync(cacheDir, { recursive: true, force: true });
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    const measuring = readdirSync("/proc")
      .filter((entry) => /^\d+$/.test(entry))
      .filter((pid) => {
        try {
          const command = readFileSync(`/proc/${pid}/cmdline`, "utf8");
          return command.includes("calibrate-kernels") && command.includes(STORIES_260K);
        } catch {
          return false;
        }
      });
    assert.deepEqual(measuring, [], "no measuring child outlives the server");
  });

  test("ggml loads ggml's own choice without measuring", async () => {
    const { loaded, output } = await serveLog(["--cpu-kernels", "ggml"]);
    assert.notEqual(loaded, "null");
    assert.doesNotMatch(output, /Measuring llama.cpp's CPU kernels/);
    assert.match(output, /"why":"ggml's choice \(--cpu-kernels ggml\)"/);
  });

  test("haswell loads the AVX2 kernels", { skip: avx2 ? undefined : "this CPU has no AVX2" }, async () => {
    const { loaded, output } = await serveLog(["--cpu-kernels", "haswell"]);
    assert.equal(loaded, "haswell");
    assert.doesNotMatch(output, /not in this build|do not run on this CPU/);
  });

  test("a variant the build lacks falls back to ggml's choice, and says so", async () => {
    const { loaded, output } = await serveLog(["--cpu-kernels", "nosuchcpu"]);
    assert.notEqual(loaded, "nosuchcpu");
    assert.match(output, /CPU kernels \\"nosuchcpu\\" are not in this build; using ggml's choice/);
  });

  test("--no-threadpool runs without the pool", async () => {
    const { output } = await serveLog(["--no-threadpool", "--cpu-kernels", "ggml"]);
    assert.match(output, /"threadpool":false[^\n]*"msg":"llama.cpp engine tuned"/);
  });

  test("a malformed variant name is refused before anything starts", async () => {
    const server = runCli(["serve", "--model", STORIES_260K, "--port", "0", "--cpu-kernels", "../evil"]);
    assert.equal(await server.exited(), 1);
    assert.match(server.output(), /--cpu-kernels must be 'auto', 'ggml' or a variant name/);
  });
});
