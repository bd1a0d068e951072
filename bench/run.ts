/**
 * `npm run bench`: Parley against llama.cpp's own llama-server on the same model, threads,
 * context and prompt, side by side in one run (alternating A B A B), through HTTP.
 *
 * Scenario "single stream": one streaming request at a time, greedy, on a synthetic
 * Qwen2-0.5B q8_0 model with the real Qwen2 tokenizer; reports time to first token and
 * decode tokens/s (medians over the rounds) and Parley's ratio to llama-server.
 *
 *   npm run bench                       # defaults: threads 1 and 2, 5 rounds, 128 tokens
 *   ROUNDS=9 TOKENS=256 THREADS=2 npm run bench
 *   BENCH_MODEL=stories260K THREADS=1 npm run bench:single-stream   # results in single-stream-stories260K.md
 *   PARLEY_ARM="--no-native-loop" npm run bench:single-stream   # adds an arm: Parley with these flags
 *
 * Results go to bench/results/<scenario>.md and .json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PROJECT_ROOT, engineLabel, parleyArm, parleyEngineOf, startLlamaServer, startParley, type EngineSettings, type ServerProcess } from "./lib/processes.js";
import { benchModel, type BenchModel } from "./lib/bench-model.js";
import { median, timeStream, type StreamTiming } from "./lib/stream-client.js";

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const TOKENS = Number(process.env.TOKENS ?? 128);
/** Short requests each server answers before the measured one (JIT, caches), each with its own prompt. */
const WARMUP = Number(process.env.WARMUP ?? 5);
/** Thread counts to compare at; both servers get the same one. */
const THREADS = (process.env.THREADS ?? "1,2").split(",").map(Number);
const RESULTS = path.join(PROJECT_ROOT, "bench/results");
/** A second Parley arm with other flags, e.g. `--no-native-loop`; none by default. */
const ARM_FLAGS = process.env.PARLEY_ARM;

const MESSAGES = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "Write a short story about a lighthouse keeper who finds a message in a bottle." },
];

interface Row {
  readonly server: string;
  readonly timings: StreamTiming[];
}

function summarize(rows: Row[]): string {
  const lines = [
    "| server | TTFT median (ms) | decode tokens/s median | prompt tokens | completion tokens (median) | rounds |",
    "|---|---|---|---|---|---|",
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.server} | ${median(row.timings.map((t) => t.timeToFirstTokenMs)).toFixed(1)} | ${median(
        row.timings.map((t) => t.decodeTokensPerSecond),
      ).toFixed(2)} | ${median(row.timings.map((t) => t.promptTokens))} | ${median(row.timings.map((t) => t.completionTokens))} | ${row.timings.length} |`,
    );
  }
  return lines.join("\n");
}

async function singleStream(bench: BenchModel, threads: number): Promise<string> {
  const model = bench.file;
  const settings: EngineSettings = { model, threads, contextSize: 4096, parallel: 1, chatTemplate: bench.llamaServerTemplate };
  // One server at a time holds the cores, so the two never compete; they alternate per round.
  const starters: Array<[string, (s: EngineSettings) => Promise<ServerProcess>]> = [
    ["llama-server", startLlamaServer],
    ["parley", (s) => startParley(s)],
    ...(ARM_FLAGS === undefined ? [] : [parleyArm(ARM_FLAGS)]),
  ];
  const rows = new Map<string, StreamTiming[]>(starters.map(([name]) => [name, []]));
  const kernels = new Map<string, string>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, start] of round % 2 === 0 ? starters : [...starters].reverse()) {
      const server = await start(settings);
      try {
        if (name.startsWith("parley")) kernels.set(name, engineLabel(await parleyEngineOf(server)));
        // Warm-up with other prompts, so the measured request's prompt is not already cached.
        for (let i = 0; i < WARMUP; i++) await timeStream({ url: server.url, model: "bench", messages: [{ role: "user", content: `Hi ${i}` }], maxTokens: 8 });
        const timing = await timeStream({ url: server.url, model: "bench", messages: MESSAGES, maxTokens: TOKENS, extra: { seed: 1 } });
        rows.get(name)!.push(timing);
        console.log(`${threads} threads, round ${round + 1} ${name}: TTFT ${timing.timeToFirstTokenMs.toFixed(1)} ms, ${timing.decodeTokensPerSecond.toFixed(2)} tok/s (${timing.completionTokens} tokens)`);
      } finally {
        await server.stop();
      }
    }
  }
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(
    path.join(RESULTS, `single-stream${bench.suffix}-${threads}t.json`),
    JSON.stringify({ settings: { ...settings, model: path.basename(model) }, rounds: ROUNDS, tokens: TOKENS, results: Object.fromEntries(rows) }, null, 2),
  );
  // Parley's rows name the CPU kernels it loaded (`parley`: Parley's own Q8_0 and Q5_0 kernel, docs/engine.md),
  // and flash attention where `--flash-attention auto` turned it off.
  const table = summarize([...rows].map(([server, timings]) => ({ server: kernels.has(server) ? `${server} (${kernels.get(server)})` : server, timings })));
  const ratio = (pick: (t: StreamTiming) => number, arm = "parley"): number => median(rows.get(arm)!.map(pick)) / median(rows.get("llama-server")!.map(pick));
  const armLine =
    ARM_FLAGS === undefined
      ? []
      : [
          `Parley ${ARM_FLAGS} / llama-server: decode tokens/s ${ratio((t) => t.decodeTokensPerSecond, `parley ${ARM_FLAGS}`).toFixed(3)}, time to first token ${ratio((t) => t.timeToFirstTokenMs, `parley ${ARM_FLAGS}`).toFixed(3)}.`,
          "",
        ];
  return [
    `### ${threads} thread${threads === 1 ? "" : "s"}`,
    "",
    table,
    "",
    `Parley / llama-server: decode tokens/s ${ratio((t) => t.decodeTokensPerSecond).toFixed(3)}, time to first token ${ratio((t) => t.timeToFirstTokenMs).toFixed(3)}.`,
    "",
    ...armLine,
  ].join("\n");
}

async function main(): Promise<void> {
  const model = await benchModel();
  const sections: string[] = [];
  for (const threads of THREADS) sections.push(await singleStream(model, threads));
  const report = [
    "# Single stream: Parley vs llama-server",
    "",
    `Measured ${new Date().toISOString()} on ${os.cpus()[0]?.model ?? "?"} (${os.cpus().length} cores), Node ${process.version}.`,
    `Model: ${model.label}. Context 4096, one request at a time, greedy`,
    `(temperature 0), max_tokens ${TOKENS}, streaming, measured at the client through HTTP. ${ROUNDS} rounds per thread count,`,
    `alternating which server runs first; each server is started fresh per round, warmed with ${WARMUP} 8-token requests, and`,
    "alone on the machine while measured. Decode tokens/s counts the tokens after the first over the time from the first",
    "content chunk to the last; TTFT is from sending the request to the first content chunk.",
    `llama-server renders the chat with its built-in \`${model.llamaServerTemplate}\` template, the format Parley uses for this model,`,
    "so both decode from about the same prompt (the prompt tokens column gives each server's count).",
    "",
    "Command: `" + (ARM_FLAGS === undefined ? "" : `PARLEY_ARM="${ARM_FLAGS}" `) + "npm run bench:single-stream` " + `(${model.suffix === "" ? "" : `BENCH_MODEL=${model.suffix.slice(1)} `}ROUNDS=${ROUNDS} TOKENS=${TOKENS} WARMUP=${WARMUP} THREADS=${THREADS.join(",")})`,
    "",
    ...sections,
  ].join("\n");
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(path.join(RESULTS, `single-stream${model.suffix}.md`), report);
  console.log(`\n${report}`);
}

await main();
