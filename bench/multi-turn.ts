/**
 * A follow-up turn of a chat with a ~1,000-token history: time to first token when the
 * server still holds the conversation's cache (it served the previous turn, and another
 * conversation ran in between on the pool of 2 sequences) against the same request cold
 * (a fresh server).
 * Parley and llama-server (`--parallel 2`), same model, threads and prompts.
 *
 *   npm run bench:multi-turn        # THREADS=1 ROUNDS=3
 *
 * Results: bench/results/multi-turn.md. Target (issue 3): warm at least 5× faster than cold.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { benchModel } from "./lib/bench-model.js";
import { PROJECT_ROOT, startLlamaServer, startParley, type EngineSettings, type ServerProcess } from "./lib/processes.js";
import { median, timeStream } from "./lib/stream-client.js";

const THREADS = Number(process.env.THREADS ?? 1);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const RESULTS = path.join(PROJECT_ROOT, "bench/results");

const SENTENCES = [
  "The harbour town woke before the sun, and the fishing boats slid out past the breakwater one by one.",
  "Mara kept the lighthouse log in a green book, noting every ship, every storm and every odd light on the water.",
  "In winter the wind came from the north and rattled the iron stairs that spiralled up to the lamp room.",
  "Her grandfather had kept the same light for forty years and had taught her to trim the wick and polish the lens.",
  "On market days the square filled with crates of apples, coils of rope, and the smell of bread from the bakery.",
];

/** About 1,000 tokens of history in the Qwen2 tokenizer. */
function history(): Array<{ role: string; content: string }> {
  const text = Array.from({ length: 40 }, (_, index) => `${SENTENCES[index % SENTENCES.length]} (${index + 1})`).join(" ");
  return [
    { role: "system", content: "You are a helpful assistant who remembers the whole conversation." },
    { role: "user", content: `Here is the story so far: ${text}` },
    { role: "assistant", content: "Thank you, I have read the whole story and will keep it in mind." },
  ];
}

const followUp = (reply: string) => [...history(), { role: "user", content: "What did Mara write in the log?" }, { role: "assistant", content: reply }, { role: "user", content: "And what happened next?" }];

interface Sample {
  readonly cold: number;
  readonly warm: number;
}

async function sample(start: (settings: EngineSettings) => Promise<ServerProcess>, settings: EngineSettings): Promise<Sample> {
  const turn = { model: "bench", maxTokens: 16, extra: { seed: 1 } } as const;
  // Warm: the server serves turn 1, then an unrelated conversation, then the follow-up.
  const server = await start(settings);
  let warm: number;
  try {
    const first = await timeStream({ url: server.url, messages: [...history(), { role: "user", content: "What did Mara write in the log?" }], ...turn });
    void first;
    await timeStream({ url: server.url, messages: [{ role: "user", content: "Tell me about apples." }], ...turn });
    warm = (await timeStream({ url: server.url, messages: followUp("She wrote about the ships."), ...turn })).timeToFirstTokenMs;
  } finally {
    await server.stop();
  }
  // Cold: the same follow-up on a fresh server (warmed with an unrelated request only).
  const fresh = await start(settings);
  try {
    await timeStream({ url: fresh.url, messages: [{ role: "user", content: "Hi" }], ...turn });
    return { warm, cold: (await timeStream({ url: fresh.url, messages: followUp("She wrote about the ships."), ...turn })).timeToFirstTokenMs };
  } finally {
    await fresh.stop();
  }
}

async function main(): Promise<void> {
  const model = (await benchModel("qwen2-0.5b")).file;
  const settings: EngineSettings = { model, threads: THREADS, contextSize: 4096, parallel: 2 };
  const rows: string[] = [];
  for (const [name, start] of [["parley", startParley], ["llama-server", startLlamaServer]] as const) {
    const samples: Sample[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      samples.push(await sample(start, settings));
      console.log(`${name} round ${round + 1}: cold ${samples.at(-1)!.cold.toFixed(0)} ms, warm ${samples.at(-1)!.warm.toFixed(0)} ms`);
    }
    const cold = median(samples.map((s) => s.cold));
    const warm = median(samples.map((s) => s.warm));
    rows.push(`| ${name} | ${cold.toFixed(1)} | ${warm.toFixed(1)} | ${(cold / warm).toFixed(1)}× |`);
  }
  const report = [
    "# Multi-turn: time to first token of a follow-up turn, warm against cold",
    "",
    `Measured ${new Date().toISOString()} on ${os.cpus()[0]?.model ?? "?"} (${os.cpus().length} cores), Node ${process.version}.`,
    `Synthetic Qwen2-0.5B q8_0, ${THREADS} thread(s), --parallel 2, a ~1,000-token history. Warm: the server served the previous`,
    "turn, then an unrelated conversation, then the follow-up. Cold: the same follow-up on a fresh server. Medians of " + ROUNDS + " rounds.",
    "",
    "Command: `npm run bench:multi-turn` " + `(THREADS=${THREADS} ROUNDS=${ROUNDS})`,
    "",
    "| server | cold TTFT (ms) | warm TTFT (ms) | cold / warm |",
    "|---|---|---|---|",
    ...rows,
    "",
    "Target (issue 3): warm at least 5× shorter than cold.",
    "",
  ].join("\n");
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(path.join(RESULTS, "multi-turn.md"), report);
  console.log(`\n${report}`);
}

await main();
