#!/usr/bin/env node
// Builds Parley's CPU kernels: ggml's CPU backend from the exact llama.cpp release that
// node-llama-cpp bundles (its llama/gitRelease.bundle), with llama.cpp's llamafile/sgemm.cpp
// wrapped by native/ggml-cpu/sgemm.cpp so that Q8_0 and Q5_0 matrix products run Parley's
// AVX-512 VNNI kernel (native/ggml-cpu/q8_0-gemm.inc). The result, build/native/libggml-cpu-parley.so,
// is one more CPU variant beside the prebuilt ones (`--cpu-kernels parley`, and a candidate of
// `--cpu-kernels auto`); see docs/engine.md. Part of `npm run build`.
//
// It needs Linux on x86-64, a CPU with AVX-512 (F, CD, BW, DQ, VL, VNNI, VBMI, BF16), CMake,
// a C and a C++ compiler, git and tar; about 25 s on 2 cores, then nothing until an input
// changes (its sources, the bundle, the compilers or CMake). Where something is missing it
// says which in build/native/cpu-kernels.json, removes any library an earlier build left, and
// Parley runs the prebuilt variants only.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.join(root, "build", "native");
const kernelDir = path.join(root, "native", "ggml-cpu");
const kernelFiles = ["sgemm.cpp", "q8_0-gemm.inc"];
const target = path.join(out, "libggml-cpu-parley.so");
const statusFile = path.join(out, "cpu-kernels.json");
const bundle = path.join(root, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");

// The instruction sets of the build: those of the prebuilt `zen4` variant (so that every other
// kernel is the one that variant runs), which include what Parley's kernel needs.
const CMAKE_ISA = ["AVX", "AVX2", "BMI2", "FMA", "F16C", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"];
// As /proc/cpuinfo spells them; ggml's backend score refuses the library on a CPU without any.
const REQUIRED_FLAGS = ["avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512vbmi", "avx512_bf16"];

function finish(built, reason, stamp = null) {
  mkdirSync(out, { recursive: true });
  if (!built) rmSync(target, { force: true });
  // Replaced whole, so that a server starting meanwhile never reads half of it.
  const temporary = `${statusFile}.${process.pid}.tmp`;
  writeFileSync(temporary, JSON.stringify({ built, reason: reason ?? null, stamp }, null, 2) + "\n");
  renameSync(temporary, statusFile);
  if (!built) console.warn(`parley: built without Parley's CPU kernels (${reason}); local models use llama.cpp's prebuilt ones.`);
  process.exit(0);
}

function run(command, args, options = {}) {
  return execFileSync(command, args, { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 256 * 1024 * 1024, ...options });
}

if (process.platform !== "linux" || process.arch !== "x64") finish(false, `not supported on ${process.platform}-${process.arch}`);
let cpuFlags = new Set();
try {
  cpuFlags = new Set(/^flags\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.split(/\s+/) ?? []);
} catch {
  // no /proc/cpuinfo: the check below says what is missing
}
const missingFlags = REQUIRED_FLAGS.filter((flag) => !cpuFlags.has(flag));
if (missingFlags.length > 0) finish(false, `this CPU lacks ${missingFlags.join(", ")}`);
const toolVersions = [];
for (const tool of ["cmake", process.env.CXX || "c++", process.env.CC || "cc", "git", "tar"]) {
  try {
    toolVersions.push(String(run(tool, ["--version"])).split("\n")[0]);
  } catch {
    finish(false, `${tool} not found`);
  }
}
if (!existsSync(bundle)) finish(false, `node-llama-cpp's llama.cpp bundle is missing (${bundle})`);

// Up to date? The library depends on the bundle, Parley's kernel files, the instruction sets,
// the compilers and CMake, and this script.
const stamp = createHash("sha256")
  .update(readFileSync(bundle))
  .update(JSON.stringify(CMAKE_ISA))
  .update(JSON.stringify(toolVersions))
  .update(readFileSync(fileURLToPath(import.meta.url)))
  .update(kernelFiles.map((file) => readFileSync(path.join(kernelDir, file), "utf8")).join("\0"))
  .digest("hex");
try {
  const previous = JSON.parse(readFileSync(statusFile, "utf8"));
  if (previous.built && previous.stamp === stamp && existsSync(target)) finish(true, null, stamp);
} catch {
  // no earlier build
}
rmSync(target, { force: true });

const work = mkdtempSync(path.join(os.tmpdir(), "parley-cpu-kernels-"));
let failure = null;
try {
  // llama.cpp's sources from the bundle (ggml's own CMake project wants files the bundle
  // leaves out, so configure from the top, building nothing but ggml's CPU backend).
  const source = path.join(work, "src");
  mkdirSync(source, { recursive: true });
  const git = path.join(work, "bundle.git");
  run("git", ["init", "--quiet", "--bare", git]);
  run("git", ["--git-dir", git, "fetch", "--quiet", bundle, "HEAD"]);
  run("tar", ["-x", "-C", source], { input: run("git", ["--git-dir", git, "archive", "FETCH_HEAD"]), stdio: ["pipe", "pipe", "pipe"] });
  const llamafile = path.join(source, "ggml", "src", "ggml-cpu", "llamafile");
  renameSync(path.join(llamafile, "sgemm.cpp"), path.join(llamafile, "sgemm-upstream.inc"));
  for (const file of kernelFiles) copyFileSync(path.join(kernelDir, file), path.join(llamafile, file));

  // As node-llama-cpp builds its variants: a loadable backend module (GGML_BACKEND_DL), no
  // OpenMP (ggml's own threadpool), and an unversioned soname, so that the module binds to
  // the libggml-base.so node-llama-cpp has already loaded. No RPATH: the build folder is gone.
  const build = path.join(work, "build");
  run("cmake", [
    "-S", source, "-B", build,
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DGGML_BACKEND_DL=ON", "-DGGML_NATIVE=OFF",
    "-DGGML_OPENMP=OFF", "-DGGML_LLAMAFILE=ON", "-DCMAKE_PLATFORM_NO_VERSIONED_SONAME=ON", "-DCMAKE_SKIP_RPATH=ON", "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
    ...CMAKE_ISA.map((isa) => `-DGGML_${isa}=ON`),
  ]);
  run("cmake", ["--build", build, "--target", "ggml-cpu", "-j", String(Math.max(1, os.availableParallelism()))]);
  mkdirSync(out, { recursive: true });
  const temporary = `${target}.${process.pid}.tmp`;
  copyFileSync(path.join(build, "bin", "libggml-cpu.so"), temporary);
  renameSync(temporary, target);
} catch (error) {
  failure = `building ggml's CPU backend failed: ${String(error.stderr ?? error.message).trim().split("\n").slice(-5).join(" | ")}`;
}
rmSync(work, { recursive: true, force: true });
if (failure) finish(false, failure);
finish(true, null, stamp);
