/**
 * Parley's native decode loop when a step takes long: an LD_PRELOAD shim
 * (test/fixtures/native/slow-decode.c) makes each step of the loop sleep first, so that what
 * happens meanwhile on other threads can be timed. Each scenario runs in a child process
 * (test/helpers/slow-step-scenarios.ts), which must exit cleanly.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { PROJECT_ROOT } from "../helpers/models.js";

const status = JSON.parse(readFileSync(path.join(PROJECT_ROOT, "build/native/status.json"), "utf8")) as { built: boolean; reason: string | null };
const skip = status.built ? undefined : `the native addon is not built: ${status.reason}`;

let dir = "";
let shim = "";
before(() => {
  if (skip !== undefined) return;
  dir = mkdtempSync(path.join(os.tmpdir(), "parley-slow-steps-"));
  shim = path.join(dir, "slow-decode.so");
  execFileSync(process.env.CC ?? "cc", ["-shared", "-fPIC", "-o", shim, path.join(PROJECT_ROOT, "test/fixtures/native/slow-decode.c"), "-ldl"]);
});
after(() => {
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

async function runScenario(scenario: string, stepMs: number, threadpool = "4"): Promise<{ result: Record<string, unknown>; stderr: string }> {
  const child = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", path.join(PROJECT_ROOT, "test/helpers/slow-step-scenarios.ts"), scenario, String(stepMs)],
    { cwd: PROJECT_ROOT, env: { ...process.env, LD_PRELOAD: shim, UV_THREADPOOL_SIZE: threadpool }, timeout: 60_000 },
  ).catch((error: { code?: number; signal?: string; stdout?: string; stderr?: string }) => {
    assert.fail(`the child died (code ${error.code}, signal ${error.signal}):\n${error.stdout ?? ""}\n${error.stderr ?? ""}`);
  });
  assert.match(child.stderr, new RegExp(`slow-decode: a step sleeps ${stepMs} ms`), "the loop's steps were slowed");
  const line = child.stdout.trim().split("\n").at(-1) ?? "";
  return { result: JSON.parse(line) as Record<string, unknown>, stderr: child.stderr };
}

test("a context freed on the threadpool while its loop closes waits for the step in progress (no use-after-free)", { skip }, async () => {
  // One threadpool thread, kept busy, times node-llama-cpp's llama_free into close()'s wait.
  const { result } = await runScenario("close-racing-free", 1500, "1");
  assert.deepEqual(result, { done: true });
});

test("a generation cancelled mid-step ends when that step does, not a step later", { skip }, async () => {
  const { result } = await runScenario("cancel-mid-step", 600);
  // The step under way when the cancel was sent gives the other generation one more token.
  // Two more (the second from a step that starts after the cancel) mean the cancel's END
  // waited for that step too.
  assert.ok(typeof result.before === "number" && result.before >= 1, JSON.stringify(result));
  assert.equal(result.afterCancel, result.before + 1, JSON.stringify(result));
});
