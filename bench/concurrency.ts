/**
 * Aggregate decode throughput with N concurrent streams: Parley (`--parallel N`) against
 * llama-server (`--parallel N`) on the same model, threads and prompts, side by side,
 * plus llama.cpp's `llama-batched-bench` at the same batch sizes as the native ceiling.
 *
 *   npm run bench:concurrency            # N = 1, 4, 8; THREADS=2; TOKENS=64; ROUNDS=3
 *   PARLEY_ARM="--no-native-loop" npm run bench:concurrency   # adds an arm: Parley with these flags
 *   CPU_KERNELS=haswell npm run bench:concurrency   # the same as PARLEY_ARM="--cpu-kernels haswell"
 *
 * Aggregate tokens/s = all completion tokens after each stream's first, over the time
 * from the first stream's first token to the last stream's end. Each server is started per
 * level and round, warmed with WARMUP bursts (JIT, caches), then measured over BURSTS bursts
 * (their median); medians over rounds; servers alternate per round. llama-server renders the
 * chat as Parley does (BenchModel.llamaServerTemplate), and llama-batched-bench runs last,
 * with `-npp` set to the prompt length Parley reported (usage.prompt_tokens), so the ceiling
 * decodes from the same positions: on stories260K a step's cost grows with the position.
 * Results: bench/results/concurrency.md, and the same numbers as
 * bench/results/concurrency.json (read by bench/plot.ts).
 */
import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { PROJECT_ROOT, TOOLS, engineLabel, parleyArm, parleyEngineOf, startLlamaServer, startParley, type EngineSettings, type ServerProcess } from "./lib/processes.js";
import { median, timeStream, type StreamTiming } from "./lib/stream-client.js";
import { benchModel } from "./lib/bench-model.js";

const LEVELS = (process.env.LEVELS ?? "1,4,8").split(",").map(Number);
const THREADS = Number(process.env.THREADS ?? 2);
const TOKENS = Number(process.env.TOKENS ?? 64);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
/** Bursts per server start before measuring (JIT, caches), and measured bursts (their median). */
const WARMUP = Number(process.env.WARMUP ?? 2);
const BURSTS = Number(process.env.BURSTS ?? 3);
/** A second Parley arm with other flags (docs/engine.md), e.g. `--no-native-loop` or `--cpu-kernels haswell`; none by default. */
const ARM_FLAGS = process.env.PARLEY_ARM ?? (process.env.CPU_KERNELS === undefined ? undefined : `--cpu-kernels ${process.env.CPU_KERNELS}`);
const SECOND_ARM = ARM_FLAGS === undefined ? undefined : `parley ${ARM_FLAGS}`;
const RESULTS = path.join(PROJECT_ROOT, "bench/results");

const prompt = (index: number) => [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: `Story ${index}: write about a lighthouse keeper who finds message number ${index} in a bottle.` },
];

interface Burst {
  readonly aggregate: number;
  readonly timings: StreamTiming[];
}

/** Retries of a burst whose connection the server closed under it (see `burst`). */
let retriedBursts = 0;

async function burst(server: ServerProcess, streams: number): Promise<Burst> {
  for (let attempt = 1; ; attempt++) {
    try {
      // All start together; each timing is relative to its own start.
      const timings = await Promise.all(
        Array.from({ length: streams }, (_, index) =>
          timeStream({ url: server.url, model: "bench", messages: prompt(index), maxTokens: TOKENS, extra: { seed: index } }),
        ),
      );
      const firstToken = Math.min(...timings.map((timing) => timing.timeToFirstTokenMs));
      const lastToken = Math.max(...timings.map((timing) => timing.totalMs));
      const tokens = timings.reduce((sum, timing) => sum + Math.max(timing.completionTokens, timing.chunks) - 1, 0);
      return { aggregate: (tokens * 1000) / (lastToken - firstToken), timings };
    } catch (error) {
      // llama-server (cpp-httplib) now and then closes a kept-alive connection just as the
      // client reuses it ("other side closed"); the burst is run again, and the report counts it.
      const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : "";
      if (attempt >= 3 || !/other side closed|ECONNRESET/.test(cause)) throw error;
      retriedBursts += 1;
      console.log(`burst retried: ${cause}`);
    }
  }
}

/** llama.cpp's flags for flash attention off: what Parley's `--flash-attention auto` may choose. */
const PLAIN_ATTENTION = ["-fa", "off"] as const;
const PLAIN_ARM = `llama-server ${PLAIN_ATTENTION.join(" ")}`;

async function batchedBench(model: string, promptTokens: number, extraArgs: readonly string[] = []): Promise<Map<number, number>> {
  const { stdout } = await promisify(execFile)(
    path.join(TOOLS, "llama-batched-bench"),
    ["-m", model, "-t", String(THREADS), "-c", "8192", "-npp", String(promptTokens), "-ntg", String(TOKENS), "-npl", LEVELS.join(","), ...extraArgs],
    { maxBuffer: 1 << 24 },
  );
  // Table rows: |  PP |  TG |  B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
  const rates = new Map<number, number>();
  for (const line of stdout.split("\n")) {
    const cells = line.split("|").map((cell) => cell.trim()).filter((cell) => cell !== "");
    if (cells.length >= 8 && /^\d+$/.test(cells[2] ?? "")) rates.set(Number(cells[2]), Number(cells[7]));
  }
  return rates;
}

async function main(): Promise<void> {
  const bench = await benchModel();
  const model = bench.file;
  const rows: string[] = [];
  const levels: Array<{
    streams: number;
    llamaServer: number;
    parley: number;
    parleyArm?: { flags: string; tokensPerS: number };
    batchedBench: number | null;
    /** Median usage.prompt_tokens of the measured streams. */
    promptTokens: { parley: number; llamaServer: number };
    /** The CPU kernels Parley's `--cpu-kernels auto` loaded at this level. */
    parleyKernels: string;
    /** The flash attention Parley's `--flash-attention auto` created the context with: on, off or auto (llama.cpp's choice). */
    parleyAttention: string;
    /** Where Parley turned flash attention off: llama-server and llama-batched-bench with it off too. */
    samePath?: { llamaServer: number; batchedBench: number | null };
    rounds: Record<string, number[]>;
  }> = [];
  const measuredLevels: Array<{
    streams: number;
    results: Map<string, number[]>;
    promptTokens: Map<string, number[]>;
    parleyKernels: string;
    parleyAttention: string;
    /** How the report names Parley's engine at this level. */
    engine: string;
  }> = [];
  for (const streams of LEVELS) {
    const settings: EngineSettings = { model, threads: THREADS, contextSize: 2048, parallel: streams, chatTemplate: bench.llamaServerTemplate };
    // What Parley will run with at this level (a first start also measures, once per setting):
    // where it turns flash attention off, llama-server runs a second time with it off too, so
    // the table shows what the setting alone gives llama.cpp's own server.
    const probe = await startParley(settings);
    const parleyEngine = await parleyEngineOf(probe).finally(() => probe.stop());
    const { kernels: parleyKernels, flashAttention: parleyAttention } = parleyEngine;
    const order: Array<[string, (s: EngineSettings) => Promise<ServerProcess>]> = [["llama-server", startLlamaServer], ["parley", (s) => startParley(s)]];
    if (parleyAttention === "off") order.push([PLAIN_ARM, (s) => startLlamaServer(s, PLAIN_ATTENTION)]);
    if (ARM_FLAGS !== undefined) order.push(parleyArm(ARM_FLAGS));
    const results = new Map<string, number[]>(order.map(([name]) => [name, []]));
    const promptTokens = new Map<string, number[]>(order.map(([name]) => [name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, start] of round % 2 === 0 ? order : [...order].reverse()) {
        const server = await start(settings);
        try {
          for (let i = 0; i < WARMUP; i++) await burst(server, streams);
          const measured: number[] = [];
          for (let i = 0; i < BURSTS; i++) {
            const { aggregate, timings } = await burst(server, streams);
            measured.push(aggregate);
            promptTokens.get(name)!.push(...timings.map((timing) => timing.promptTokens));
          }
          results.get(name)!.push(median(measured));
          console.log(`${streams} streams, round ${round + 1}, ${name}: ${median(measured).toFixed(2)} tokens/s aggregate (bursts: ${measured.map((v) => v.toFixed(0)).join(", ")})`);
        } finally {
          await server.stop();
        }
      }
    }
    measuredLevels.push({ streams, results, promptTokens, parleyKernels, parleyAttention, engine: engineLabel(parleyEngine) });
  }
  // The ceiling decodes from the prompt length Parley reported, at the same batch sizes.
  const parleyPromptTokens = Math.round(median(measuredLevels.flatMap((level) => level.promptTokens.get("parley")!)));
  const native = await batchedBench(model, parleyPromptTokens);
  const plainAttention = measuredLevels.some((level) => level.parleyAttention === "off");
  const nativePlain = plainAttention ? await batchedBench(model, parleyPromptTokens, PLAIN_ATTENTION) : undefined;
  for (const { streams, results, promptTokens, parleyKernels, parleyAttention, engine } of measuredLevels) {
    const parley = median(results.get("parley")!);
    const server = median(results.get("llama-server")!);
    const ceiling = native.get(streams) ?? Number.NaN;
    const second = SECOND_ARM === undefined ? undefined : median(results.get(SECOND_ARM)!);
    const plainServer = results.has(PLAIN_ARM) ? median(results.get(PLAIN_ARM)!) : undefined;
    const plainCeiling = plainServer === undefined ? undefined : (nativePlain?.get(streams) ?? Number.NaN);
    levels.push({
      streams,
      llamaServer: server,
      parley,
      ...(second === undefined ? {} : { parleyArm: { flags: ARM_FLAGS!, tokensPerS: second } }),
      batchedBench: Number.isFinite(ceiling) ? ceiling : null,
      promptTokens: { parley: median(promptTokens.get("parley")!), llamaServer: median(promptTokens.get("llama-server")!) },
      parleyKernels,
      parleyAttention,
      ...(plainServer === undefined ? {} : { samePath: { llamaServer: plainServer, batchedBench: Number.isFinite(plainCeiling) ? plainCeiling! : null } }),
      rounds: Object.fromEntries(results),
    });
    const plainCells = !plainAttention
      ? ""
      : plainServer === undefined
        ? " — | — | — | — |"
        : ` ${plainServer.toFixed(2)} | ${(parley / plainServer).toFixed(3)} | ${plainCeiling!.toFixed(2)} | ${(parley / plainCeiling!).toFixed(3)} |`;
    const secondCells = second === undefined ? "" : ` ${second.toFixed(2)} | ${(second / server).toFixed(3)} | ${(second / ceiling).toFixed(3)} |`;
    const prompts = `${median(promptTokens.get("parley")!)} / ${median(promptTokens.get("llama-server")!)}`;
    rows.push(`| ${streams} | ${prompts} | ${server.toFixed(2)} | ${parley.toFixed(2)} (${engine}) | ${(parley / server).toFixed(3)} | ${ceiling.toFixed(2)} | ${(parley / ceiling).toFixed(3)} |${plainCells}${secondCells}`);
  }
  const header = ["streams", "prompt tokens", "llama-server", "Parley", "Parley / llama-server", "llama-batched-bench", "Parley / batched-bench"];
  if (plainAttention) header.push(PLAIN_ARM, "Parley / it", `llama-batched-bench ${PLAIN_ATTENTION.join(" ")}`, "Parley / it");
  if (SECOND_ARM !== undefined) header.push(`Parley ${ARM_FLAGS}`, "/ llama-server", "/ batched-bench");
  const report = [
    "# Concurrent streams: aggregate decode tokens/s",
    "",
    `Measured ${new Date().toISOString()} on ${os.cpus()[0]?.model ?? "?"} (${os.cpus().length} cores), Node ${process.version}.`,
    `${bench.label.charAt(0).toUpperCase()}${bench.label.slice(1)}, ${THREADS} threads for every engine, ${TOKENS} greedy tokens per stream, distinct prompts, streaming over HTTP;`,
    `each server started with --parallel N, warmed with ${WARMUP} bursts, then measured over ${BURSTS} (their median); medians of ${ROUNDS} rounds, alternating order.`,
    `llama-server renders the chats with its built-in \`${bench.llamaServerTemplate}\` template, the format Parley uses for this model (prompt tokens: Parley / llama-server).`,
    `llama-batched-bench: \`-t ${THREADS} -npp ${parleyPromptTokens} -ntg ${TOKENS} -npl ${LEVELS.join(",")}\` (S_TG t/s), the native ceiling of llama.cpp's own kernels, from Parley's prompt length.`,
    "Parley's column names the CPU kernels its `--cpu-kernels auto` loaded (`parley`: Parley's own Q8_0 and Q5_0 kernel, docs/engine.md; the others are llama.cpp's prebuilt variants),",
    "and flash attention where its `--flash-attention auto` turned it off (llama.cpp's default is on for the CPU). Where it did, llama-server and llama-batched-bench also ran with `-fa off`, so the extra columns show what that setting alone gives llama.cpp's own server.",
    ...(retriedBursts === 0 ? [] : [`${retriedBursts} burst(s) were run again after llama-server closed a kept-alive connection under them.`]),
    "",
    "Command: `" + (bench.suffix === "" ? "" : `BENCH_MODEL=${bench.suffix.slice(1)} `) + (ARM_FLAGS === undefined ? "" : `PARLEY_ARM="${ARM_FLAGS}" `) + "npm run bench:concurrency` " + `(LEVELS=${LEVELS.join(",")} THREADS=${THREADS} TOKENS=${TOKENS} ROUNDS=${ROUNDS} WARMUP=${WARMUP} BURSTS=${BURSTS})`,
    "",
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows,
    "",
    "Targets (issue 3): at 4 and 8 streams, Parley ≥ 1.1× llama-server and ≥ 0.85× llama-batched-bench.",
    "",
  ].join("\n");
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(path.join(RESULTS, `concurrency${bench.suffix}.md`), report);
  const measuredAt = new Date().toISOString();
  const settings = { threads: THREADS, tokens: TOKENS, rounds: ROUNDS, warmupBursts: WARMUP, measuredBursts: BURSTS, batchedBenchPromptTokens: parleyPromptTokens, model: bench.label, cpu: os.cpus()[0]?.model ?? "?", cores: os.cpus().length, node: process.version };
  writeFileSync(path.join(RESULTS, `concurrency${bench.suffix}.json`), `${JSON.stringify({ measuredAt, unit: "aggregate decode tokens/s", ...settings, levels }, null, 2)}\n`);
  console.log(`\n${report}`);
}

await main();
