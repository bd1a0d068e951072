/**
 * Leak soak: many requests against one `parley serve`, a fifth of them abandoned mid-stream,
 * with the server's resident memory sampled every SAMPLE_EVERY requests. The target is no
 * growth once warm.
 *
 *   npm run build && node --import tsx bench/soak.ts
 *
 * Environment knobs (defaults in brackets):
 *   REQUESTS      requests in all [1000]
 *   ABANDONED     of those, streams cut after their first content delta, spread evenly [200]
 *   PARALLEL      --parallel of the server [4]
 *   CONCURRENCY   requests the client keeps open at once, above PARALLEL so the queue works too [PARALLEL + 2]
 *   TOKENS        max_tokens of the completed requests (half streaming, half not) [64]
 *   ABANDON_TOKENS max_tokens of the abandoned ones, so they are cut mid-generation [512]
 *   SAMPLE_EVERY  requests between samples; the first sample is the warmed-up reference [100]
 *   SETTLE_MS     idle wait before each sample, once the server reports nothing in flight [500]
 *   THRESHOLD_KIB largest fitted growth per request still read as "no growth", in KiB [5]
 *   FORCE_GC      1: also sample after a full garbage collection, asked for with SIGUSR2 through
 *                 bench/lib/gc-on-signal.mjs (preloaded with --expose-gc); 0: don't [1]
 *   MODEL         GGUF file [../shared/models/stories260K.gguf]
 *   OUTPUT        the report [bench/results/soak.md]
 *
 * Memory is read from outside: VmRSS, RssAnon and RssFile from /proc/<pid>/status, and the
 * V8 heap from Parley's own /metrics (prom-client's default process metrics). Each sample
 * is taken with the server idle (the client waits for /metrics to show no request in
 * flight), so a sample is never of requests still running. Results: bench/results/soak.md.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { abandonStream } from "./lib/abandon-stream.js";
import { chat } from "./lib/chat-request.js";
import { metricValue, scrapeMetrics, type MetricSamples } from "./lib/metrics-scrape.js";
import { startParleyProcess, type ParleyProcess } from "./lib/parley-process.js";
import { PROJECT_ROOT, SHARED_MODELS } from "./lib/processes.js";
import { linearFit, mib, MIB, type LinearFit, type ResidentMemory } from "./lib/proc-memory.js";
import { timeStream } from "./lib/stream-client.js";

const REQUESTS = Number(process.env.REQUESTS ?? 1000);
const ABANDONED = Number(process.env.ABANDONED ?? 200);
const PARALLEL = Number(process.env.PARALLEL ?? 4);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? PARALLEL + 2);
const TOKENS = Number(process.env.TOKENS ?? 64);
const ABANDON_TOKENS = Number(process.env.ABANDON_TOKENS ?? 512);
const SAMPLE_EVERY = Number(process.env.SAMPLE_EVERY ?? 100);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 500);
const THRESHOLD_KIB = Number(process.env.THRESHOLD_KIB ?? 5);
const FORCE_GC = (process.env.FORCE_GC ?? "1") === "1";
const MODEL = process.env.MODEL ?? path.join(SHARED_MODELS, "stories260K.gguf");
const OUTPUT = process.env.OUTPUT ?? path.join(PROJECT_ROOT, "bench/results/soak.md");

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Kind = "abandoned" | "streamed" | "complete";

/** Abandoned requests spread evenly through the run; the rest alternate streaming and not. */
function kindOf(index: number): Kind {
  if (Math.floor(((index + 1) * ABANDONED) / REQUESTS) > Math.floor((index * ABANDONED) / REQUESTS)) return "abandoned";
  return index % 2 === 0 ? "streamed" : "complete";
}

interface Tally {
  abandonedCut: number;
  abandonedEndedFirst: number;
  streamed: number;
  complete: number;
  empty: number;
  failures: string[];
}

async function one(url: string, index: number, tally: Tally): Promise<void> {
  const content = `Story ${index}: Lily and her dog ${index % 7 === 0 ? "Max" : "Sam"} found a ${["red", "big", "small", "shiny"][index % 4]} ball`;
  try {
    const kind = kindOf(index);
    if (kind === "abandoned") {
      if (await abandonStream({ url, content, maxTokens: ABANDON_TOKENS, seed: index })) tally.abandonedCut += 1;
      else tally.abandonedEndedFirst += 1;
    } else if (kind === "streamed") {
      const timing = await timeStream({ url, model: "bench", messages: [{ role: "user", content }], maxTokens: TOKENS, extra: { temperature: 0.8, seed: index } });
      tally.streamed += 1;
      if (timing.chunks === 0) tally.empty += 1;
    } else {
      const reply = await chat(url, content, TOKENS, index);
      tally.complete += 1;
      if (reply.content.length === 0) tally.empty += 1;
    }
  } catch (error) {
    tally.failures.push(`request ${index}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Requests [from, to) with CONCURRENCY of them open at a time. */
async function run(url: string, from: number, to: number, tally: Tally): Promise<void> {
  let next = from;
  const worker = async (): Promise<void> => {
    while (next < to) {
      const index = next;
      next += 1;
      await one(url, index, tally);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

interface Idle {
  readonly metrics: MetricSamples;
  readonly busy: number;
  readonly waiting: number;
  readonly inFlight: number;
}

const idleState = (metrics: MetricSamples): Idle => ({
  metrics,
  busy: metricValue(metrics, "parley_sequences", { state: "busy" }),
  waiting: metricValue(metrics, "parley_queue_depth"),
  inFlight: metricValue(metrics, "parley_requests_in_flight"),
});

/** Polls /metrics until nothing is in flight (an abandoned request ends once the server sees the socket close). */
async function waitIdle(server: ParleyProcess): Promise<Idle> {
  let state = idleState(await scrapeMetrics(server.url));
  for (let attempt = 0; attempt < 200 && (state.busy !== 0 || state.waiting !== 0 || state.inFlight !== 0); attempt++) {
    await sleep(50);
    state = idleState(await scrapeMetrics(server.url));
  }
  return state;
}

interface Snapshot {
  readonly memory: ResidentMemory;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
}

interface Sample {
  readonly requests: number;
  readonly seconds: number;
  /** Idle, as the server left itself. */
  readonly idle: Snapshot;
  /** Idle, after a full garbage collection (FORCE_GC=1). */
  readonly collected: Snapshot | undefined;
}

async function snapshot(server: ParleyProcess): Promise<Snapshot> {
  const memory = server.memory();
  const metrics = await scrapeMetrics(server.url);
  return {
    memory,
    heapUsed: metricValue(metrics, "parley_nodejs_heap_size_used_bytes"),
    heapTotal: metricValue(metrics, "parley_nodejs_heap_size_total_bytes"),
    external: metricValue(metrics, "parley_nodejs_external_memory_bytes"),
  };
}

async function sample(server: ParleyProcess, requests: number, started: number): Promise<Sample> {
  const state = await waitIdle(server);
  if (state.busy !== 0 || state.waiting !== 0 || state.inFlight !== 0) {
    throw new Error(`server not idle after ${requests} requests: busy ${state.busy}, queued ${state.waiting}, in flight ${state.inFlight}`);
  }
  const seconds = (performance.now() - started) / 1000;
  await sleep(SETTLE_MS);
  const idle = await snapshot(server);
  let collected: Snapshot | undefined;
  if (FORCE_GC) {
    process.kill(server.pid, "SIGUSR2");
    await sleep(SETTLE_MS);
    collected = await snapshot(server);
  }
  return { requests, seconds, idle, collected };
}

function statusCounts(metrics: MetricSamples): string {
  const counts: string[] = [];
  for (const [key, value] of metrics) {
    const match = /^parley_requests_total\{(.*)\}$/.exec(key);
    if (match === null || !(match[1] ?? "").includes('route="/v1/chat/completions"')) continue;
    counts.push(`${/status="(\d+)"/.exec(key)?.[1] ?? "?"}: ${value}`);
  }
  return counts.join(", ");
}

const PRELOAD = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), "lib/gc-on-signal.mjs")).href;
const perHundred = (bytes: number) => `${(bytes / MIB).toFixed(3)} MiB per 100`;
const signed = (bytes: number) => `${bytes >= 0 ? "+" : ""}${mib(bytes)}`;

interface Growth {
  readonly warm: Snapshot;
  readonly last: Snapshot;
  readonly rss: LinearFit;
  readonly anon: LinearFit;
  readonly heapUsed: LinearFit;
  readonly heapTotal: LinearFit;
}

function growth(samples: readonly Sample[], pick: (sample: Sample) => Snapshot): Growth {
  const fit = (value: (snapshot: Snapshot) => number) => linearFit(samples.map((s) => [s.requests / 100, value(pick(s))] as const));
  return {
    warm: pick(samples[0]!),
    last: pick(samples.at(-1)!),
    rss: fit((snapshot) => snapshot.memory.rss),
    anon: fit((snapshot) => snapshot.memory.anon),
    heapUsed: fit((snapshot) => snapshot.heapUsed),
    heapTotal: fit((snapshot) => snapshot.heapTotal),
  };
}

function describeGrowth(label: string, samples: readonly Sample[], g: Growth): string[] {
  return [
    `${label}: VmRSS ${mib(g.warm.memory.rss)} MiB after the warm-up (${samples[0]!.requests} requests), ${mib(g.last.memory.rss)} MiB at the end`,
    `(${samples.at(-1)!.requests}): ${signed(g.last.memory.rss - g.warm.memory.rss)} MiB. Fitted slopes: VmRSS ${perHundred(g.rss.slope)} (${(g.rss.slope / 100 / 1024).toFixed(2)} KiB per request,`,
    `largest residual ${mib(g.rss.maxResidual)} MiB), RssAnon ${perHundred(g.anon.slope)}, V8 heap used ${perHundred(g.heapUsed.slope)}, V8 heap total ${perHundred(g.heapTotal.slope)}.`,
  ];
}

async function main(): Promise<void> {
  const server = await startParleyProcess({ model: MODEL, parallel: PARALLEL, nodeOptions: FORCE_GC ? ["--expose-gc", "--import", PRELOAD] : [] });
  const tally: Tally = { abandonedCut: 0, abandonedEndedFirst: 0, streamed: 0, complete: 0, empty: 0, failures: [] };
  const samples: Sample[] = [];
  let after: Idle;
  let finalReply: string;
  const loaded = server.memory();
  const started = performance.now();
  try {
    for (let done = 0; done < REQUESTS; done += SAMPLE_EVERY) {
      const to = Math.min(done + SAMPLE_EVERY, REQUESTS);
      await run(server.url, done, to, tally);
      const latest = await sample(server, to, started);
      samples.push(latest);
      const collected = latest.collected === undefined ? "" : `; after GC ${mib(latest.collected.memory.rss)} MiB, heap used ${mib(latest.collected.heapUsed)} MiB`;
      console.log(`${to} requests (${latest.seconds.toFixed(0)} s): VmRSS ${mib(latest.idle.memory.rss)} MiB, V8 heap used ${mib(latest.idle.heapUsed)} of ${mib(latest.idle.heapTotal)} MiB${collected}`);
    }
    after = await waitIdle(server);
    finalReply = (await chat(server.url, "Once upon a time", 32)).content;
  } finally {
    await server.stop();
  }

  const idle = growth(samples, (s) => s.idle);
  const collected = FORCE_GC ? growth(samples, (s) => s.collected!) : undefined;
  /** The verdict reads memory still referenced: after a full collection when there is one. */
  const judged = collected ?? idle;
  const thresholdPer100 = (THRESHOLD_KIB * 1024 * 100) / MIB;
  const verdict = judged.rss.slope / MIB <= thresholdPer100 ? "No growth" : "Growth";
  const tokensCompleted = metricValue(after.metrics, "parley_tokens_total", { kind: "completion" });
  const cells = (snapshot: Snapshot | undefined) =>
    snapshot === undefined ? "" : ` ${mib(snapshot.memory.rss)} | ${mib(snapshot.memory.anon)} | ${mib(snapshot.heapUsed)} | ${mib(snapshot.heapTotal)} |`;

  const report = [
    `# Leak soak: memory over ${REQUESTS.toLocaleString("en")} requests with abandoned streams`,
    "",
    `Measured ${new Date().toISOString()} on ${os.cpus()[0]?.model ?? "?"} (${os.cpus().length} cores), Node ${process.version}, Linux ${os.release()}.`,
    `One \`parley serve --parallel ${PARALLEL}\` on \`${path.relative(PROJECT_ROOT, MODEL)}\` (every other flag at its default). ${REQUESTS} requests, ${CONCURRENCY} open at a time:`,
    `${ABANDONED} abandoned (streaming, max_tokens ${ABANDON_TOKENS}; the socket destroyed after the first content delta), the rest`,
    `alternately streamed and not (max_tokens ${TOKENS}, temperature 0.8, seeded). Every ${SAMPLE_EVERY} requests the client waits until /metrics shows`,
    `nothing in flight and ${SETTLE_MS} ms more, then reads /proc/<pid>/status and the V8 heap from /metrics` +
      (FORCE_GC ? `; then it asks for a full garbage collection (SIGUSR2 to bench/lib/gc-on-signal.mjs, preloaded with --expose-gc), waits ${SETTLE_MS} ms and reads both again.` : "."),
    "",
    "Command: `node --import tsx bench/soak.ts` " +
      `(REQUESTS=${REQUESTS} ABANDONED=${ABANDONED} PARALLEL=${PARALLEL} CONCURRENCY=${CONCURRENCY} TOKENS=${TOKENS} ABANDON_TOKENS=${ABANDON_TOKENS} SAMPLE_EVERY=${SAMPLE_EVERY} THRESHOLD_KIB=${THRESHOLD_KIB} FORCE_GC=${FORCE_GC ? 1 : 0})`,
    "",
    "## Verdict",
    "",
    `**${verdict}** of memory still in use: ${collected === undefined ? "idle" : "after a full collection"}, VmRSS grows ${perHundred(judged.rss.slope)}`,
    `against a threshold of ${thresholdPer100.toFixed(2)} MiB per 100 (${THRESHOLD_KIB} KiB per request).`,
    "",
    ...(collected === undefined ? [] : [...describeGrowth("After a full collection", samples, collected), ""]),
    ...describeGrowth(FORCE_GC ? "Idle, before each collection (each follows the previous sample's collection; FORCE_GC=0 leaves V8 alone)" : "Idle, as the server left itself", samples, idle),
    "",
    `Threshold: over ${REQUESTS} requests ${THRESHOLD_KIB} KiB per request is ${((THRESHOLD_KIB * REQUESTS) / 1024).toFixed(1)} MiB, about the size of the steps in which glibc's`,
    `arenas and V8's heap move RSS on their own (a line fitted to ${samples.length} idle samples averages those out), while keeping`,
    "each request's objects alive (its Fastify request and reply, token arrays, SSE chunks, the generator and its closures)",
    "would plausibly cost more per request than that. A slower leak needs a longer run to show (REQUESTS=10000).",
    "",
    "## After the soak",
    "",
    `- /metrics: ${after.busy} busy sequences, queue depth ${after.waiting}, ${after.inFlight} requests in flight`,
    `  (${metricValue(after.metrics, "parley_sequences", { state: "free" })} of ${PARALLEL} sequences free).`,
    `- A final request answered: ${JSON.stringify(finalReply.slice(0, 60))}${finalReply.length > 60 ? "…" : ""}`,
    `- Client side: ${tally.abandonedCut} streams cut after their first delta (${tally.abandonedEndedFirst} ended before one arrived), ${tally.streamed} streamed and`,
    `  ${tally.complete} non-streamed requests completed (${tally.empty} with no text), ${tally.failures.length} failures${tally.failures.length > 0 ? `: ${tally.failures.slice(0, 5).join("; ")}` : ""}.`,
    `- Parley's counters: chat requests by status ${statusCounts(after.metrics)}; ${tokensCompleted} completion tokens generated.`,
    `- VmRSS right after load, before any request: ${mib(loaded.rss)} MiB; peak over the run (VmHWM) ${mib(samples.at(-1)!.idle.memory.peak)} MiB.`,
    "",
    "## Samples (MiB)",
    "",
    `| requests | seconds | idle: VmRSS | RssAnon | V8 heap used | V8 heap total |${FORCE_GC ? " after GC: VmRSS | RssAnon | V8 heap used | V8 heap total |" : ""}`,
    `|---|---|---|---|---|---|${FORCE_GC ? "---|---|---|---|" : ""}`,
    ...samples.map((s) => `| ${s.requests} | ${s.seconds.toFixed(0)} |${cells(s.idle)}${cells(s.collected)}`),
    "",
  ].join("\n");
  mkdirSync(path.dirname(OUTPUT), { recursive: true });
  writeFileSync(OUTPUT, report);
  console.log(`\n${report}`);
  if (tally.failures.length > 0 || after.busy !== 0 || after.waiting !== 0 || finalReply.length === 0) process.exitCode = 1;
}

await main();
