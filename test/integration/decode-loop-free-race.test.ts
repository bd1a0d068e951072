/**
 * A context freed while its native decode loop closes. node-llama-cpp frees contexts on
 * libuv's threadpool; if that llama_free runs while `loop.close()` waits for the step in
 * progress, the free must wait for the step too, not free the context under it (a
 * use-after-free: the process crashed before native/decode-loop.c's close halted the loop
 * before unbinding it). The timing is forced: an LD_PRELOAD shim
 * (test/fixtures/native/slow-decode.c) makes each step of the loop sleep, and a busy
 * one-thread threadpool delays the free into that sleep. The scenario runs in a child
 * process (test/helpers/close-racing-free.ts), which must exit cleanly.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
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
  dir = mkdtempSync(path.join(os.tmpdir(), "parley-free-race-"));
  shim = path.join(dir, "slow-decode.so");
  execFileSync(process.env.CC ?? "cc", ["-shared", "-fPIC", "-o", shim, path.join(PROJECT_ROOT, "test/fixtures/native/slow-decode.c"), "-ldl"]);
});
after(() => {
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

test("a context freed on the threadpool while its loop closes waits for the loop's step", { skip }, async () => {
  assert.ok(existsSync(shim));
  const child = await promisify(execFile)(process.execPath, ["--import", "tsx", path.join(PROJECT_ROOT, "test/helpers/close-racing-free.ts"), "1500"], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, LD_PRELOAD: shim, UV_THREADPOOL_SIZE: "1" },
    timeout: 60_000,
  }).catch((error: { code?: number; signal?: string; stdout?: string; stderr?: string }) => {
    assert.fail(`the child died (code ${error.code}, signal ${error.signal}):\n${error.stdout ?? ""}\n${error.stderr ?? ""}`);
  });
  assert.match(child.stderr, /slow-decode: a step sleeps 1500 ms/, "the loop was inside a slowed step");
  assert.match(child.stdout, /^done$/m);
});
