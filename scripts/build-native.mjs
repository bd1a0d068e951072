#!/usr/bin/env node
// Builds native/*.c (the llama.cpp tuning hooks and Parley's decode loop) into
// build/native/llama-tuning.node (part of `npm run build`).
//
// It needs a C compiler ($CC, else cc), Node's own headers (shipped with every Node binary
// distribution, next to the executable), git and tar, to read llama.cpp's headers from the
// exact llama.cpp release node-llama-cpp bundles (its llama/gitRelease.bundle). Where one of
// them is missing, Parley still builds and runs: it prints why, records it in
// build/native/status.json, removes any addon an earlier build left (one compiled against
// other headers would corrupt memory), and the engine runs without the tuning (decoding
// slower, see docs/engine.md). Linux only: the addon relies on ELF symbol interposition.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.join(root, "build", "native");
const nativeDir = path.join(root, "native");
const sources = ["llama-tuning.c", "decode-loop.c"].map((file) => path.join(nativeDir, file));
const inputs = [...sources, path.join(nativeDir, "llama-native.h")];
const target = path.join(out, "llama-tuning.node");
const statusFile = path.join(out, "status.json");

function finish(built, reason) {
  mkdirSync(out, { recursive: true });
  if (!built) rmSync(target, { force: true });
  writeFileSync(statusFile, JSON.stringify({ built, reason: reason ?? null }, null, 2) + "\n");
  if (!built) {
    console.warn(`parley: built without the llama.cpp tuning addon (${reason}); local models will decode slower.`);
  }
  process.exit(0);
}

function run(command, args, options = {}) {
  return execFileSync(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
}

if (process.platform !== "linux") finish(false, `not supported on ${process.platform}`);

// $CC may carry arguments (e.g. "ccache gcc").
const [cc = "cc", ...ccArgs] = (process.env.CC || "cc").trim().split(/\s+/);
try {
  run(cc, [...ccArgs, "--version"]);
} catch {
  finish(false, `no C compiler (${[cc, ...ccArgs].join(" ")}) found`);
}

const nodeHeaders = path.join(path.dirname(process.execPath), "..", "include", "node");
if (!existsSync(path.join(nodeHeaders, "node_api.h"))) {
  finish(false, `Node's headers are not at ${nodeHeaders}`);
}

// node-llama-cpp is a direct dependency, installed by npm at the top of node_modules.
const llamaCppDir = path.join(root, "node_modules", "node-llama-cpp", "llama");
const bundle = path.join(llamaCppDir, "gitRelease.bundle");
if (!existsSync(bundle)) finish(false, `node-llama-cpp's llama.cpp bundle is missing (${bundle})`);

// Up to date? The headers depend on the bundle (stamped with its SHA-256, ~0.1 s); the addon
// on the source and the headers.
const headers = path.join(out, "include");
const stamp = path.join(headers, ".bundle-sha256");
const bundleStamp = createHash("sha256").update(readFileSync(bundle)).digest("hex");
const headersFresh = existsSync(stamp) && readFileSync(stamp, "utf8") === bundleStamp;
if (headersFresh && existsSync(target) && statSync(target).mtimeMs > Math.max(...inputs.map((file) => statSync(file).mtimeMs), statSync(stamp).mtimeMs)) {
  finish(true);
}
rmSync(target, { force: true });

if (!headersFresh) {
  const scratch = path.join(out, "bundle.git");
  rmSync(scratch, { recursive: true, force: true });
  rmSync(headers, { recursive: true, force: true });
  mkdirSync(headers, { recursive: true });
  let failure;
  try {
    run("git", ["init", "--quiet", "--bare", scratch]);
    run("git", ["--git-dir", scratch, "fetch", "--quiet", bundle, "HEAD"]);
    const tar = run("git", ["--git-dir", scratch, "archive", "FETCH_HEAD", "include", "ggml/include"], {
      maxBuffer: 64 * 1024 * 1024,
    });
    run("tar", ["-x", "-C", headers], { input: tar, stdio: ["pipe", "pipe", "pipe"] });
  } catch (error) {
    failure = `could not read llama.cpp's headers from ${bundle}: ${String(error.stderr ?? error.message).trim()}`;
  }
  rmSync(scratch, { recursive: true, force: true });
  if (failure) finish(false, failure);
  writeFileSync(stamp, bundleStamp);
}

// -Werror for our file only (-isystem: the headers' own warnings are not ours to fix);
// -fvisibility=hidden: only the three hooks, the marker and N-API's entry point are exported.
const temporary = `${target}.${process.pid}.tmp`;
try {
  run(cc, [
    ...ccArgs, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden",
    "-isystem", nodeHeaders, "-isystem", path.join(headers, "include"), "-isystem", path.join(headers, "ggml", "include"),
    ...sources, "-o", temporary, "-ldl", "-lpthread",
  ]);
  renameSync(temporary, target);
} catch (error) {
  rmSync(temporary, { force: true });
  finish(false, `${cc} failed: ${String(error.stderr ?? error.message).trim()}`);
}
finish(true);
