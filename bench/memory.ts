/**
 * Resident memory of a real `parley serve` per loaded model and per extra sequence.
 *
 *   npm run build && node --import tsx bench/memory.ts
 *
 * Environment knobs (defaults in brackets):
 *   MODELS    models to measure, comma-separated: stories260K, qwen2-0.5b [stories260K,qwen2-0.5b]
 *   LEVELS    --parallel values [1,2,4,8]
 *   ROUNDS    fresh servers per model and level; the report shows their mean [5]
 *   TOKENS    max_tokens of each request in the burst [32]
 *   CONTEXT   --context-size; unset keeps Parley's default (4096, capped at the model's training context)
 *   SETTLE_MS wait before each reading, so freed memory is returned and lazy work is done [1000]
 *
 * For each model and level a fresh server starts (--parallel N, every other flag at its
 * default); VmRSS, RssAnon and RssFile are read from /proc/<pid>/status once the model is
 * loaded, then again after N concurrent requests (so every sequence has decoded: with N
 * free sequences each request takes a different one, and Parley hands out never-used
 * sequences first). The increment per extra sequence is the least-squares slope of RSS
 * against N. The baseline is Parley with its engine and stories260K (1.2 MB) at a 64-token
 * context: the smallest model that loads, so what remains is Parley itself. Parley always
 * loads its model, so a reading with no model at all would be of a process still starting.
 * Results: bench/results/memory.md.
 */
import { gguf } from "@huggingface/gguf";
import { LlamaLogLevel, type Llama } from "node-llama-cpp";
import { openEngine } from "../src/backends/local/engine.js";
import { mkdirSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { benchModel } from "./lib/bench-model.js";
import { chat } from "./lib/chat-request.js";
import { metricValue, scrapeMetrics } from "./lib/metrics-scrape.js";
import { startParleyProcess, type ParleyProcess } from "./lib/parley-process.js";
import { PROJECT_ROOT, SHARED_MODELS } from "./lib/processes.js";
import { linearFit, mib, type ResidentMemory } from "./lib/proc-memory.js";

const MODELS = (process.env.MODELS ?? "stories260K,qwen2-0.5b").split(",");
const LEVELS = (process.env.LEVELS ?? "1,2,4,8").split(",").map(Number);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const TOKENS = Number(process.env.TOKENS ?? 32);
const CONTEXT = process.env.CONTEXT === undefined ? undefined : Number(process.env.CONTEXT);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 1000);
const RESULTS = path.join(PROJECT_ROOT, "bench/results");
/** Parley's default tokens per sequence (src/backends/local/local-backend.ts). */
const PARLEY_DEFAULT_CONTEXT = 4096;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function modelFile(name: string): Promise<string> {
  if (name === "stories260K" || name === "qwen2-0.5b") return (await benchModel(name)).file;
  throw new Error(`unknown model ${name} (stories260K or qwen2-0.5b)`);
}

interface KvShape {
  /** Bytes of K and V (f16, llama.cpp's default cache type) per token of one sequence. */
  readonly bytesPerToken: number;
  readonly trainContext: number;
}

async function kvShape(file: string): Promise<KvShape> {
  const { metadata } = await gguf(file, { allowLocalFile: true });
  const fields = metadata as unknown as Record<string, unknown>;
  const architecture = String(fields["general.architecture"]);
  const number = (key: string): number => {
    const value = fields[`${architecture}.${key}`];
    if (typeof value !== "number") throw new Error(`${file}: no ${architecture}.${key}`);
    return value;
  };
  const headDimension = number("embedding_length") / number("attention.head_count");
  return { bytesPerToken: 2 * number("block_count") * number("attention.head_count_kv") * headDimension * 2, trainContext: number("context_length") };
}

/** Sizes llama.cpp logs for its buffers, in MiB, by kind: "model", "KV", "compute", "output". */
type BufferSizes = ReadonlyMap<string, number>;

let engineLog: Map<string, number> = new Map();
let engine: Promise<Llama> | undefined;

/** node-llama-cpp keeps one engine per process, with the logger it was first given: one for every model here. */
function loggingEngine(): Promise<Llama> {
  engine ??= openEngine({
    logLevel: LlamaLogLevel.info,
    logger: (_level, message) => {
      // e.g. "llama_kv_cache:        CPU KV buffer size =    48.00 MiB", "load_tensors:   CPU_Mapped model buffer size =   500.79 MiB"
      const match = /(model|KV|compute|output) buffer size *= *([\d.]+) MiB/.exec(message);
      if (match !== null) engineLog.set(match[1] ?? "", (engineLog.get(match[1] ?? "") ?? 0) + Number(match[2]));
    },
  }).then((opened) => opened.llama);
  return engine;
}

/**
 * What llama.cpp says it allocates for this model and for a context of each number of
 * sequences, through node-llama-cpp in this process with the options Parley passes (no
 * batch size, so the same default).
 */
async function engineBuffers(file: string, contextSize: number, sequenceCounts: readonly number[]): Promise<Map<number, BufferSizes>> {
  const llama = await loggingEngine();
  engineLog = new Map();
  const model = await llama.loadModel({ modelPath: file });
  const weights = engineLog.get("model") ?? Number.NaN;
  const contexts = new Map<number, BufferSizes>();
  try {
    for (const sequences of sequenceCounts) {
      engineLog = new Map([["model", weights]]);
      const context = await model.createContext({ contextSize, sequences, threads: 1 });
      await context.dispose();
      contexts.set(sequences, engineLog);
    }
  } finally {
    await model.dispose();
  }
  return contexts;
}

const describeBuffers = (sizes: BufferSizes | undefined): string =>
  ["model", "KV", "compute", "output"].map((kind) => `${kind} ${(sizes?.get(kind) ?? Number.NaN).toFixed(2)}`).join(", ");

interface Reading {
  readonly loaded: ResidentMemory;
  readonly served: ResidentMemory;
  /** Most sequences seen busy at once during the burst (sampled from /metrics). */
  readonly peakBusy: number;
}

/** N concurrent requests, watching /metrics for how many sequences are busy at once. */
async function burst(server: ParleyProcess, requests: number): Promise<number> {
  let peakBusy = 0;
  let done = false;
  const watch = (async () => {
    while (!done) {
      const busy = metricValue(await scrapeMetrics(server.url), "parley_sequences", { state: "busy" });
      if (Number.isFinite(busy)) peakBusy = Math.max(peakBusy, busy);
      await sleep(10);
    }
  })();
  try {
    await Promise.all(Array.from({ length: requests }, (_, index) => chat(server.url, `Story ${index}: a cat named Tom ${index} went to the park`, TOKENS, index)));
  } finally {
    done = true;
    await watch;
  }
  return peakBusy;
}

async function measure(model: string, parallel: number, contextSize: number | undefined): Promise<Reading> {
  const server = await startParleyProcess({ model, parallel, contextSize });
  try {
    await sleep(SETTLE_MS);
    const loaded = server.memory();
    const peakBusy = await burst(server, parallel);
    await sleep(SETTLE_MS);
    return { loaded, served: server.memory(), peakBusy };
  } finally {
    await server.stop();
  }
}

function mean(readings: readonly ResidentMemory[]): ResidentMemory {
  const average = (pick: (memory: ResidentMemory) => number) => readings.reduce((sum, memory) => sum + pick(memory), 0) / readings.length;
  return { rss: average((m) => m.rss), anon: average((m) => m.anon), file: average((m) => m.file), peak: average((m) => m.peak) };
}

const signed = (bytes: number): string => `${bytes >= 0 ? "+" : ""}${mib(bytes)}`;
const spread = (values: readonly number[]): number => Math.max(...values) - Math.min(...values);
const cell = (memory: ResidentMemory) => `${mib(memory.rss)} (${mib(memory.anon)} / ${mib(memory.file)})`;

interface ModelResult {
  readonly section: string[];
  readonly summary: string;
}

async function measureModel(name: string, baseline: ResidentMemory): Promise<ModelResult> {
  const file = await modelFile(name);
  const fileSize = statSync(file).size;
  const shape = await kvShape(file);
  const contextSize = Math.min(CONTEXT ?? PARLEY_DEFAULT_CONTEXT, shape.trainContext);
  const kvPerSequence = shape.bytesPerToken * contextSize;
  const rows: string[] = [];
  const loadedMeans = new Map<number, ResidentMemory>();
  const servedMeans = new Map<number, ResidentMemory>();
  for (const parallel of LEVELS) {
    const readings: Reading[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const reading = await measure(file, parallel, CONTEXT);
      readings.push(reading);
      console.log(`${name} --parallel ${parallel} round ${round + 1}: loaded ${cell(reading.loaded)} MiB, after ${parallel} requests ${cell(reading.served)} MiB, peak busy ${reading.peakBusy}`);
    }
    const loaded = mean(readings.map((reading) => reading.loaded));
    const served = mean(readings.map((reading) => reading.served));
    loadedMeans.set(parallel, loaded);
    servedMeans.set(parallel, served);
    rows.push(
      `| ${parallel} | ${cell(loaded)} | ${cell(served)} | ${mib(spread(readings.map((reading) => reading.served.rss)))} | ` +
        `${mib(served.peak)} | ${Math.max(...readings.map((reading) => reading.peakBusy))} |`,
    );
  }
  const fit = (means: Map<number, ResidentMemory>, pick: (memory: ResidentMemory) => number) => linearFit([...means].map(([level, memory]) => [level, pick(memory)] as const));
  const servedFit = fit(servedMeans, (memory) => memory.rss);
  const servedAnonFit = fit(servedMeans, (memory) => memory.anon);
  const loadedFit = fit(loadedMeans, (memory) => memory.rss);
  const one = servedMeans.get(1) ?? servedMeans.get(LEVELS[0] ?? 1);
  const modelCost = one === undefined ? Number.NaN : one.rss - baseline.rss;
  const most = Math.max(...LEVELS);
  const buffers = await engineBuffers(file, contextSize, [1, most]);
  const logged = (sequences: number, kind: string) => buffers.get(sequences)?.get(kind) ?? Number.NaN;
  /** What llama.cpp reserves per extra sequence (KV and output buffers grow with N; compute does not here). */
  const loggedPerSequence = (["KV", "output", "compute"] as const).reduce((sum, kind) => sum + (logged(most, kind) - logged(1, kind)) / (most - 1), 0);
  const section = [
    `## ${name}`,
    "",
    `\`${path.relative(PROJECT_ROOT, file)}\`: file ${mib(fileSize)} MiB; ${contextSize} tokens per sequence; K+V at f16 = ${shape.bytesPerToken} bytes per token,`,
    `so ${mib(kvPerSequence)} MiB of KV cache per sequence by arithmetic.`,
    "",
    "llama.cpp's own account of its buffers in MiB (its log, through node-llama-cpp with the options Parley passes):",
    `with 1 sequence ${describeBuffers(buffers.get(1))}; with ${most} sequences ${describeBuffers(buffers.get(most))}.`,
    "These are reservations; RSS counts only the pages written (the KV cache is cleared when it is created).",
    "",
    "MiB: VmRSS (RssAnon / RssFile); means of the rounds. Spread: largest minus smallest VmRSS after the requests over the rounds.",
    "",
    "| --parallel | after load | after N concurrent requests | spread | VmHWM (peak) | peak busy sequences seen |",
    "|---|---|---|---|---|---|",
    ...rows,
    "",
    `Least-squares lines against N (over ${LEVELS.join(", ")}):`,
    "",
    `- after the requests, VmRSS = ${mib(servedFit.intercept)} + ${mib(servedFit.slope)} × N MiB (largest residual ${mib(servedFit.maxResidual)} MiB); RssAnon slope ${mib(servedAnonFit.slope)} MiB per sequence`,
    `- after load, VmRSS = ${mib(loadedFit.intercept)} + ${mib(loadedFit.slope)} × N MiB (largest residual ${mib(loadedFit.maxResidual)} MiB)`,
    `- the model with one sequence, over the baseline: ${mib(modelCost)} MiB (file ${mib(fileSize)} MiB + one sequence's KV ${mib(kvPerSequence)} MiB = ${mib(fileSize + kvPerSequence)} MiB):`,
    `  RssFile ${signed(one === undefined ? Number.NaN : one.file - baseline.file)} MiB (the mapped weights) and RssAnon ${signed(one === undefined ? Number.NaN : one.anon - baseline.anon)} MiB`,
    `  (the KV cache, and the part of llama.cpp's ${logged(1, "compute").toFixed(1)} MiB compute reservation that decoding writes)`,
    `- llama.cpp reserves ${loggedPerSequence.toFixed(2)} MiB more per extra sequence (KV, output and compute buffers, from its log at 1 and ${most} sequences)`,
    "",
  ];
  const noise = Math.max(...rows.map((row) => Number(row.split("|")[4])));
  const summary =
    `| ${name} | ${mib(fileSize)} | ${one === undefined ? "?" : mib(one.rss)} | ${mib(modelCost)} | ${mib(servedFit.slope)} | ` +
    `${loggedPerSequence.toFixed(2)} | ${noise.toFixed(1)} |`;
  return { section, summary };
}

async function main(): Promise<void> {
  const stories = path.join(SHARED_MODELS, "stories260K.gguf");
  const baselineReadings: ResidentMemory[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const server = await startParleyProcess({ model: stories, parallel: 1, contextSize: 64 });
    try {
      await chat(server.url, "Once upon a time", 16);
      await sleep(SETTLE_MS);
      baselineReadings.push(server.memory());
    } finally {
      await server.stop();
    }
  }
  const baseline = mean(baselineReadings);
  console.log(`baseline: ${cell(baseline)} MiB`);

  const results: ModelResult[] = [];
  for (const name of MODELS) results.push(await measureModel(name, baseline));

  const report = [
    "# Resident memory per model and per sequence",
    "",
    `Measured ${new Date().toISOString()} on ${os.cpus()[0]?.model ?? "?"} (${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB), Node ${process.version}, Linux ${os.release()}.`,
    `A fresh \`parley serve --parallel N\` per reading, every other flag at Parley's default${CONTEXT === undefined ? "" : ` except --context-size ${CONTEXT}`}; memory read from`,
    `/proc/<pid>/status ${SETTLE_MS} ms after the model loaded, and again ${SETTLE_MS} ms after N concurrent requests (max_tokens ${TOKENS}) had all finished.`,
    `${ROUNDS} round(s) per level. Weights are memory-mapped by node-llama-cpp, so they count in RssFile once touched; the KV cache,`,
    "compute buffers and the JS heap are RssAnon.",
    "",
    `Command: \`node --import tsx bench/memory.ts\` (MODELS=${MODELS.join(",")} LEVELS=${LEVELS.join(",")} ROUNDS=${ROUNDS} TOKENS=${TOKENS}${CONTEXT === undefined ? "" : ` CONTEXT=${CONTEXT}`})`,
    "",
    `Baseline: Parley and its engine with stories260K (1.2 MB) at a 64-token context, --parallel 1, after one request: ${cell(baseline)} MiB`,
    `(VmRSS (RssAnon / RssFile), mean of ${ROUNDS}).`,
    "",
    "## Summary",
    "",
    "| model | file (MiB) | VmRSS, --parallel 1, after a request (MiB) | over the baseline (MiB) | per extra sequence, fitted to VmRSS (MiB) | per extra sequence, llama.cpp's reservations (MiB) | noise: largest spread of one setting over fresh processes (MiB) |",
    "|---|---|---|---|---|---|---|",
    ...results.map((result) => result.summary),
    "",
    "A difference smaller than the noise column cannot be read from RSS: fresh Parley processes with the same settings differ",
    "by that much from one start to the next. There llama.cpp's reservations are the number to use.",
    "",
    ...results.flatMap((result) => result.section),
  ].join("\n");
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(path.join(RESULTS, "memory.md"), report);
  console.log(`\n${report}`);
}

await main();
