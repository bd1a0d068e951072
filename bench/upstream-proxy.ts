/**
 * What Parley adds in front of an upstream: streaming chat completions against a fast local
 * fake upstream, called directly, through nginx as a plain reverse proxy, and through Parley
 * (an upstream pool of one), side by side (issue 5).
 *
 *   npm run build && node --import tsx bench/upstream-proxy.ts        (or: npm run bench:upstream)
 *
 * Arms:
 * - direct: the client calls the fake upstream: a second nginx answering
 *   POST /v1/chat/completions from memory with a fixed text/event-stream body (a role chunk,
 *   8 content chunks, a finish chunk, a usage chunk with `choices: []`, `data: [DONE]`) and
 *   GET /v1/models for Parley's health checks, so the upstream costs next to nothing.
 * - nginx: Debian's nginx as a plain reverse proxy, one worker: an upstream keep-alive pool of
 *   64, HTTP/1.1 upstream, `proxy_buffering off` (as SSE needs), no access log.
 * - node: a bare Node proxy (node:http server, undici Pool upstream, bytes piped through; no
 *   parsing, no auth, no log), for reference.
 * - pipe and undici-floor (throughput only, for reference): a Node TCP byte pipe, the least any
 *   Node program pays per request; and the least a gateway on undici pays (request head parsed
 *   by hand on a raw socket, undici's Pool.dispatch, bytes relayed chunked).
 * - Parley as a user runs it: `parley serve --config` with the pool, an `--api-key`, its
 *   SQLite keys-and-usage database in a temp data dir (a ledger row committed per request),
 *   its default log level (info: one JSON line per request) with stdout to /dev/null.
 * One core each: the proxy under test is pinned to CPU 0 (`taskset -c 0`, every thread); this
 * process (the latency client), wrk and the fake upstream share CPU 1. Needs 2 CPUs or more.
 *
 * Latency: open loop at each rate (requests go out on schedule whatever the answers do), over
 * keep-alive connections (undici Pool), each request timed from its send to the first content
 * chunk (TTFT) and to `data: [DONE]` (total). At rates up to INTERLEAVE_MAX_RPS the arms'
 * requests are interleaved one by one (they are far apart, so they never overlap); above it
 * the arms take turns in blocks, LATENCY_ROUNDS rounds with the order rotated each round.
 * Every response must be 200 with the 8 content chunks and end with [DONE], else it counts as
 * an error.
 *
 * Throughput: closed loop, `wrk -t1 -cCONNECTIONS` for THROUGHPUT_SECONDS per run, POSTing the
 * same streaming request (a Lua response hook checks each answer is a 200 ending in [DONE]);
 * the arms alternate for THROUGHPUT_ROUNDS rounds (order reversed every other round); medians,
 * with each proxy's CPU use (scheduler run time of its process tree from /proc), each CPU's busy
 * share from /proc/stat, and the CPU that other processes on the machine used meanwhile.
 *
 * Knobs (environment): RATES (1,50,500), LATENCY_SECONDS (60,12,6: seconds per arm at each
 * rate), LATENCY_ROUNDS (3), INTERLEAVE_MAX_RPS (10), WARMUP_SECONDS (3), THROUGHPUT_SECONDS
 * (10), THROUGHPUT_ROUNDS (3), CONNECTIONS (64), PROFILE (1: one more Parley throughput run
 * under `node --cpu-prof`, its top self-time functions appended to the results; KEEP_PROFILE=1
 * also keeps the .cpuprofile as bench/results/upstream-proxy.cpuprofile; SUMMARIZE=FILE only
 * prints the summary of a kept .cpuprofile).
 * NICE (unset): a nice value for this process and everything it starts (e.g. -10, as root), so
 * other work on a shared machine disturbs the measurement less; the report says when it was set.
 * Needs nginx and wrk: installed from Debian's packages (nginx-light, wrk) when missing and
 * running as root. Results: bench/results/upstream-proxy.md.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { Pool } from "undici";
import { ensureTools, fakeUpstreamConfig, reverseProxyConfig, startNginx } from "./lib/nginx.js";
import { PROJECT_ROOT, freePort } from "./lib/processes.js";

const numbers = (value: string | undefined, fallback: number[]): number[] =>
  value === undefined || value === "" ? fallback : value.split(",").map((part) => Number(part.trim()));
const RATES = numbers(process.env.RATES, [1, 50, 500]);
const LATENCY_SECONDS = numbers(process.env.LATENCY_SECONDS, [60, 12, 6]);
const LATENCY_ROUNDS = Number(process.env.LATENCY_ROUNDS ?? 3);
const INTERLEAVE_MAX_RPS = Number(process.env.INTERLEAVE_MAX_RPS ?? 10);
const WARMUP_SECONDS = Number(process.env.WARMUP_SECONDS ?? 3);
const THROUGHPUT_SECONDS = Number(process.env.THROUGHPUT_SECONDS ?? 10);
const THROUGHPUT_ROUNDS = Number(process.env.THROUGHPUT_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 64);
const PROFILE = process.env.PROFILE === "1";
const KEEP_PROFILE = process.env.KEEP_PROFILE === "1";
const NICE = process.env.NICE === undefined || process.env.NICE === "" ? undefined : Number(process.env.NICE);
const RESULTS = path.join(PROJECT_ROOT, "bench/results");
const PROXY_CPU = 0;
const CLIENT_CPU = 1;
const API_KEY = "sk-bench-upstream-proxy-0123456789";
const MODEL = "fake";

// ---------------------------------------------------------------------------------------
// The fake upstream's answer and the request every arm sends.

const WORDS = ["Hello", " there", "!", " How", " can", " I", " help", "?"];
const EXPECTED_TEXT = WORDS.join("");

function fakeStream(): string {
  const base = { id: "chatcmpl-bench", object: "chat.completion.chunk", created: 1_700_000_000, model: MODEL };
  const chunk = (delta: Record<string, string>, finish: string | null): string =>
    JSON.stringify({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
  const events = [
    chunk({ role: "assistant", content: "" }, null),
    ...WORDS.map((word) => chunk({ content: word }, null)),
    chunk({}, "stop"),
    JSON.stringify({ ...base, choices: [], usage: { prompt_tokens: 11, completion_tokens: WORDS.length, total_tokens: 11 + WORDS.length } }),
    "[DONE]",
  ];
  return events.map((event) => `data: ${event}\n\n`).join("");
}

const MODELS_JSON = JSON.stringify({ object: "list", data: [{ id: MODEL, object: "model", created: 1_700_000_000, owned_by: "bench" }] });
const REQUEST_BODY = JSON.stringify({
  model: MODEL,
  messages: [{ role: "user", content: "Say hello." }],
  max_tokens: 16,
  stream: true,
  stream_options: { include_usage: true },
});
const REQUEST_HEADERS = { "content-type": "application/json", authorization: `Bearer ${API_KEY}` };

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc.

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

function statFields(pid: number | "self"): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" "); // [0] is field 3 (state)
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds of one process, every thread: the scheduler's nanosecond run time summed over
 * /proc/PID/task/TID/schedstat (exact, where utime+stime come in 10 ms ticks), else utime+stime.
 */
function processCpuSeconds(pid: number): number {
  try {
    let nanos = 0;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      nanos += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
    }
    if (Number.isFinite(nanos)) return nanos / 1e9;
  } catch {
    // gone, or no schedstat: fall back
  }
  const fields = statFields(pid);
  return fields === undefined ? 0 : (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** CPU seconds of each root process and all its descendants, summed. */
function treeCpuSeconds(roots: readonly number[]): number {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    if (fields === undefined) continue;
    const parent = Number(fields[1]);
    const list = children.get(parent) ?? [];
    list.push(Number(entry));
    children.set(parent, list);
  }
  let seconds = 0;
  const queue = [...roots];
  while (queue.length > 0) {
    const pid = queue.pop() as number;
    seconds += processCpuSeconds(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return seconds;
}

/** This process (every thread) and its children already waited for (wrk runs). */
function selfCpuSeconds(): number {
  const fields = statFields("self");
  if (fields === undefined) return 0;
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS;
}

interface CpuSnapshot {
  readonly at: number;
  /** Per CPU: busy (user, nice, system, irq, softirq), steal, total, in jiffies. */
  readonly cpus: Array<{ busy: number; steal: number; total: number }>;
  readonly proxy: number;
  readonly upstream: number;
  /** Every process this benchmark started, itself included. */
  readonly ours: number;
}

interface CpuUse {
  /** CPU seconds per wall second of the proxy under test (1 = one full core); NaN for direct. */
  readonly proxyCores: number;
  readonly upstreamCores: number;
  /** Busy share of each CPU, 0..1. */
  readonly busy: number[];
  /** Share of each CPU taken by the hypervisor (steal), 0..1. */
  readonly steal: number[];
  /** CPU used by processes this benchmark did not start, in cores (0.3 = 30% of one CPU). */
  readonly otherCores: number;
}

class CpuMeter {
  readonly #servers: readonly number[];
  readonly #upstream: number;

  constructor(servers: readonly number[], upstream: number) {
    this.#servers = servers;
    this.#upstream = upstream;
  }

  snapshot(proxy: number | undefined): CpuSnapshot {
    const cpus = readFileSync("/proc/stat", "utf8")
      .split("\n")
      .filter((line) => /^cpu\d+ /.test(line))
      .map((line) => {
        const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1, 9).map(Number);
        return { busy: user + nice + system + irq + softirq, steal, total: user + nice + system + idle + iowait + irq + softirq + steal };
      });
    return {
      at: performance.now(),
      cpus,
      proxy: proxy === undefined ? Number.NaN : treeCpuSeconds([proxy]),
      upstream: treeCpuSeconds([this.#upstream]),
      ours: treeCpuSeconds(this.#servers) + selfCpuSeconds(),
    };
  }

  static use(before: CpuSnapshot, after: CpuSnapshot): CpuUse {
    const wall = (after.at - before.at) / 1000;
    const share = (pick: (cpu: { busy: number; steal: number; total: number }) => number) =>
      after.cpus.map((cpu, index) => {
        const earlier = before.cpus[index] ?? cpu;
        return (pick(cpu) - pick(earlier)) / Math.max(1, cpu.total - earlier.total);
      });
    const busySeconds = after.cpus.reduce((sum, cpu, index) => sum + cpu.busy - (before.cpus[index]?.busy ?? cpu.busy), 0) / CLOCK_TICKS;
    return {
      proxyCores: (after.proxy - before.proxy) / wall,
      upstreamCores: (after.upstream - before.upstream) / wall,
      busy: share((cpu) => cpu.busy),
      steal: share((cpu) => cpu.steal),
      otherCores: Math.max(0, busySeconds - (after.ours - before.ours)) / wall,
    };
  }
}

function pinSelf(cpu: number): void {
  execFileSync("taskset", ["-a", "-p", "-c", String(cpu), String(process.pid)], { stdio: "ignore" });
}

/** Sets the nice value of every thread of this process (what it starts afterwards inherits it); false if refused. */
function reniceSelf(nice: number): boolean {
  try {
    execFileSync("renice", ["-n", String(nice), "-p", ...readdirSync(`/proc/${process.pid}/task`)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// The Node servers: Parley, and a bare Node proxy for reference.

interface NodeServer {
  readonly url: string;
  readonly pid: number;
  stderr(): string;
  stop(): Promise<void>;
}

async function startNodeServer(name: string, dir: string, args: string[], readyPath: string): Promise<NodeServer> {
  const stdout = openSync("/dev/null", "w");
  const stderrPath = path.join(dir, `${name}.stderr.log`);
  const stderr = openSync(stderrPath, "w");
  const child: ChildProcess = spawn("taskset", ["-c", String(PROXY_CPU), process.execPath, ...args], { stdio: ["ignore", stdout, stderr], cwd: dir });
  closeSync(stdout);
  closeSync(stderr);
  const readStderr = (): string => {
    try {
      return readFileSync(stderrPath, "utf8").slice(-5000);
    } catch {
      return "";
    }
  };
  const url = `http://127.0.0.1:${args[args.indexOf("--port") + 1]}`;
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${readStderr()}`);
    const response = await fetch(`${url}${readyPath}`).catch(() => undefined);
    await response?.arrayBuffer();
    if (response?.status === 200) break;
    if (attempt > 300) throw new Error(`${name} never answered ${readyPath}:\n${readStderr()}`);
    await sleep(100);
  }
  if (child.pid === undefined) throw new Error(`${name} has no pid`);
  return {
    url,
    pid: child.pid,
    stderr: readStderr,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await once(child, "exit");
        clearTimeout(timer);
      }
    },
  };
}

async function startParley(temp: string, upstreamPort: number, name: string, nodeFlags: string[] = []): Promise<NodeServer & { dataDir: string }> {
  const dir = mkdtempSync(path.join(temp, `${name}-`));
  const dataDir = path.join(dir, "data");
  const config = path.join(dir, "parley.yaml");
  writeFileSync(config, `models:\n  - name: ${MODEL}\n    backend: upstream\n    upstreams:\n      - url: http://127.0.0.1:${upstreamPort}/v1\n`);
  const port = await freePort();
  const args = [...nodeFlags, path.join(PROJECT_ROOT, "dist/cli/main.js"), "serve", "--config", config, "--api-key", API_KEY, "--data-dir", dataDir, "--port", String(port)];
  return { ...(await startNodeServer(name, dir, args, "/health")), dataDir };
}

/** A proxy with nothing but Node's http server and an undici Pool: no parsing, no auth, no log. */
const BARE_PROXY = (undici: string, upstream: string, port: number): string => `
import http from "node:http";
import { Pool } from ${JSON.stringify(undici)};
const upstream = new Pool(${JSON.stringify(upstream)}, { keepAliveTimeout: 10000 });
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", async () => {
    try {
      const body = chunks.length === 0 ? undefined : Buffer.concat(chunks);
      const headers = body === undefined ? {} : { "content-type": req.headers["content-type"] ?? "application/json" };
      const answer = await upstream.request({ method: req.method, path: req.url, headers, body });
      res.writeHead(answer.statusCode, { "content-type": answer.headers["content-type"] ?? "application/octet-stream" });
      for await (const chunk of answer.body) res.write(chunk);
      res.end();
    } catch {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    }
  });
});
server.keepAliveTimeout = 75000;
server.listen(${port}, "127.0.0.1");
`;

/**
 * The least any Node program can do per request: a TCP byte pipe, each client connection paired
 * with its own upstream connection, nothing parsed. Throughput only, for reference.
 */
const TCP_PIPE = (upstreamPort: number, port: number): string => `
import net from "node:net";
net.createServer((client) => {
  const upstream = net.connect(${upstreamPort}, "127.0.0.1");
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  client.on("data", (data) => upstream.write(data));
  upstream.on("data", (data) => client.write(data));
  client.on("close", () => upstream.destroy());
  upstream.on("close", () => client.destroy());
  client.on("error", () => {});
  upstream.on("error", () => {});
}).listen(${port}, "127.0.0.1");
`;

/**
 * The least a Node gateway built on undici (as issue 5 asks) can do per request: the request
 * head parsed by hand on a raw socket (no node:http), the request sent with undici's lowest-level
 * API (Pool.dispatch, no streams), the answer's bytes relayed as they come, chunked. No
 * auth, no SSE parsing, no ledger, no log. Throughput only, for reference.
 */
const UNDICI_FLOOR = (undici: string, upstream: string, port: number): string => `
import net from "node:net";
import { Pool } from ${JSON.stringify(undici)};
const upstream = new Pool(${JSON.stringify(upstream)}, { keepAliveTimeout: 10000, connections: 128 });
const HEAD_END = Buffer.from("\\r\\n\\r\\n");
net.createServer((client) => {
  client.setNoDelay(true);
  client.on("error", () => {});
  let pending = Buffer.alloc(0);
  client.on("data", (data) => {
    pending = pending.length === 0 ? data : Buffer.concat([pending, data]);
    for (;;) {
      const end = pending.indexOf(HEAD_END);
      if (end < 0) return;
      const head = pending.subarray(0, end).toString("latin1");
      const length = Number(/\\r\\ncontent-length: *(\\d+)/i.exec(head)?.[1] ?? 0);
      if (pending.length < end + 4 + length) return;
      const body = length === 0 ? undefined : Buffer.from(pending.subarray(end + 4, end + 4 + length));
      pending = pending.subarray(end + 4 + length);
      const [method = "GET", path = "/"] = head.slice(0, head.indexOf("\\r\\n")).split(" ");
      upstream.dispatch({ method, path, headers: body === undefined ? {} : { "content-type": "application/json" }, body }, {
        onConnect() {},
        onUpgrade() {},
        onError() { client.destroy(); },
        onHeaders(status, raw) {
          let type = "application/octet-stream";
          for (let i = 0; i < raw.length; i += 2) if (String(raw[i]).toLowerCase() === "content-type") type = String(raw[i + 1]);
          client.write("HTTP/1.1 " + status + " OK\\r\\ncontent-type: " + type + "\\r\\ntransfer-encoding: chunked\\r\\n\\r\\n");
          return true;
        },
        onData(chunk) {
          client.cork();
          client.write(chunk.length.toString(16) + "\\r\\n");
          client.write(chunk);
          client.write("\\r\\n");
          client.uncork();
          return true;
        },
        onComplete() { client.write("0\\r\\n\\r\\n"); },
      });
    }
  });
}).listen(${port}, "127.0.0.1");
`;

/** undici as the generated proxy programs import it: this project's copy, by file URL. */
const undiciUrl = (): string => pathToFileURL(createRequire(import.meta.url).resolve("undici")).href;

async function startFloorProxies(temp: string, upstreamPort: number): Promise<{ pipe: NodeServer; undiciFloor: NodeServer }> {
  const undici = undiciUrl();
  const pipePort = await freePort();
  const pipe = await startNodeServer("node-pipe", temp, ["--input-type=module", "-e", TCP_PIPE(upstreamPort, pipePort), "--", "--port", String(pipePort)], "/v1/models");
  const floorPort = await freePort();
  const undiciFloor = await startNodeServer(
    "undici-floor", temp,
    ["--input-type=module", "-e", UNDICI_FLOOR(undici, `http://127.0.0.1:${upstreamPort}`, floorPort), "--", "--port", String(floorPort)],
    "/v1/models",
  );
  return { pipe, undiciFloor };
}

async function startBareProxy(temp: string, upstreamUrl: string): Promise<NodeServer> {
  const port = await freePort();
  const undici = undiciUrl();
  return startNodeServer("node-bare", temp, ["--input-type=module", "-e", BARE_PROXY(undici, upstreamUrl, port), "--", "--port", String(port)], "/v1/models");
}

function ledgerRows(dataDir: string): number {
  const db = new Database(path.join(dataDir, "parley.db"), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare("SELECT COUNT(*) AS n FROM ledger").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

// ---------------------------------------------------------------------------------------
// The latency client.

interface Arm {
  readonly name: string;
  /** As the tables show it. */
  readonly label: string;
  readonly url: string;
  /** The proxy's root pid (none for direct). */
  readonly pid: number | undefined;
  readonly pool: Pool;
}

interface Sample {
  readonly ttftMs: number;
  readonly totalMs: number;
  /** How late the request left against its schedule. */
  readonly lagMs: number;
}

interface LatencyResult {
  readonly samples: Sample[];
  errors: number;
  readonly errorExamples: string[];
  /** The proxy's CPU seconds while it served these, less what it burns idle over the same time. */
  cpuSeconds: number;
}

const newResult = (): LatencyResult => ({ samples: [], errors: 0, errorExamples: [], cpuSeconds: 0 });

async function timeOne(arm: Arm, due: number, into: LatencyResult): Promise<void> {
  const started = performance.now();
  try {
    const response = await arm.pool.request({ path: "/v1/chat/completions", method: "POST", headers: REQUEST_HEADERS, body: REQUEST_BODY });
    if (response.statusCode !== 200) {
      const text = await response.body.text();
      throw new Error(`HTTP ${response.statusCode}: ${text.slice(0, 200)}`);
    }
    let buffer = "";
    let first = 0;
    let done = 0;
    let text = "";
    let afterDone = false;
    for await (const bytes of response.body) {
      buffer += (bytes as Buffer).toString("utf8");
      let boundary: number;
      while ((boundary = buffer.indexOf("\n\n")) !== -1) {
        const event = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (done !== 0) afterDone = true;
        if (data === "[DONE]") {
          done = performance.now();
          continue;
        }
        const chunk = JSON.parse(data) as { choices?: Array<{ delta?: { content?: string | null } }>; error?: unknown };
        if (chunk.error !== undefined) throw new Error(`error event: ${data.slice(0, 200)}`);
        const content = chunk.choices?.[0]?.delta?.content;
        if (typeof content === "string" && content.length > 0) {
          if (first === 0) first = performance.now();
          text += content;
        }
      }
    }
    if (done === 0 || afterDone || buffer.trim() !== "") throw new Error("the stream did not end with data: [DONE]");
    if (text !== EXPECTED_TEXT) throw new Error(`unexpected text ${JSON.stringify(text)}`);
    into.samples.push({ ttftMs: first - started, totalMs: done - started, lagMs: started - due });
  } catch (error) {
    into.errors += 1;
    if (into.errorExamples.length < 3) into.errorExamples.push(error instanceof Error ? error.message : String(error));
  }
}

/**
 * Sends on a fixed schedule: request i at start + i/rate, to arms[i % arms.length], without
 * waiting for earlier answers; then waits for every answer.
 */
async function openLoop(arms: readonly Arm[], results: Map<Arm, LatencyResult>, ratePerArm: number, seconds: number): Promise<void> {
  const total = Math.round(ratePerArm * seconds) * arms.length;
  const interval = 1000 / (ratePerArm * arms.length);
  const inFlight: Array<Promise<void>> = [];
  const start = performance.now() + 20;
  for (let i = 0; i < total; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(wait); // timer granularity is ~1 ms; the lateness is recorded as lag
    const arm = arms[i % arms.length] as Arm;
    inFlight.push(timeOne(arm, due, results.get(arm) as LatencyResult));
  }
  await Promise.all(inFlight);
}

// ---------------------------------------------------------------------------------------
// wrk.

interface WrkResult {
  readonly requests: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly non2xx: number;
  readonly socketErrors: number;
  readonly good: number;
  readonly bad: number;
  readonly cpu: CpuUse;
}

const WRK_SCRIPT = (body: string, headers: Record<string, string>): string => `
wrk.method = "POST"
wrk.body = ${JSON.stringify(body)}
${Object.entries(headers).map(([name, value]) => `wrk.headers[${JSON.stringify(name)}] = ${JSON.stringify(value)}`).join("\n")}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) good = 0; bad = 0 end
function response(status, headers, body)
  if status == 200 and string.sub(body, -14) == "data: [DONE]\\n\\n" then good = good + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local g, b = 0, 0
  for _, t in ipairs(threads) do g = g + t:get("good"); b = b + t:get("bad") end
  io.write(string.format("CHECK good=%d bad=%d\\n", g, b))
end
`;

function parseDuration(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (match === null) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "ms" ? value : match[2] === "s" ? value * 1000 : value * 60_000;
}

async function runWrk(wrk: string, script: string, url: string, seconds: number, meter: CpuMeter, proxy: number | undefined): Promise<WrkResult> {
  const before = meter.snapshot(proxy);
  const child = spawn("taskset", ["-c", String(CLIENT_CPU), wrk, "-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency", "-s", script, `${url}/v1/chat/completions`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (data: Buffer) => (output += data.toString("utf8")));
  child.stderr.on("data", (data: Buffer) => (output += data.toString("utf8")));
  const [code] = (await once(child, "exit")) as [number | null];
  const cpu = CpuMeter.use(before, meter.snapshot(proxy));
  if (code !== 0) throw new Error(`wrk exited with ${code}:\n${output}`);
  const grab = (pattern: RegExp): string | undefined => pattern.exec(output)?.[1];
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const check = /CHECK good=(\d+) bad=(\d+)/.exec(output);
  return {
    requests: Number(grab(/(\d+) requests in/)),
    rps: Number(grab(/Requests\/sec:\s+([\d.]+)/)),
    p50Ms: parseDuration(grab(/\n\s+50%\s+(\S+)/) ?? ""),
    p99Ms: parseDuration(grab(/\n\s+99%\s+(\S+)/) ?? ""),
    non2xx: Number(grab(/Non-2xx or 3xx responses: (\d+)/) ?? 0),
    socketErrors: socket === null ? 0 : socket.slice(1).reduce((sum, value) => sum + Number(value), 0),
    good: Number(check?.[1] ?? Number.NaN),
    bad: Number(check?.[2] ?? Number.NaN),
    cpu,
  };
}

// ---------------------------------------------------------------------------------------
// CPU profile summary.

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: number[];
}
interface CpuProfile {
  readonly nodes: ProfileNode[];
  readonly samples: number[];
  readonly timeDeltas: number[];
}

function where(url: string): string {
  if (url === "") return "";
  const clean = url.replace(/^file:\/\//, "");
  const modules = clean.lastIndexOf("node_modules/");
  if (modules !== -1) return clean.slice(modules + "node_modules/".length);
  if (clean.startsWith(PROJECT_ROOT)) return path.relative(PROJECT_ROOT, clean);
  return clean;
}

function owner(frame: ProfileNode["callFrame"]): string {
  if (frame.functionName === "(garbage collector)") return "(garbage collector)";
  if (frame.functionName === "(program)") return "(program: V8/native, outside JS)";
  const clean = frame.url.replace(/^file:\/\//, "");
  if (clean === "") return "native calls (syscalls: socket writes, SQLite, crypto…)";
  if (clean.startsWith("node:")) return "node core JS (http, net, streams, events)";
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(clean);
  if (modules !== null) return modules[1] as string;
  if (clean.startsWith(PROJECT_ROOT)) return "parley's own JS (dist/)";
  return clean;
}

const frameName = (frame: ProfileNode["callFrame"]): string =>
  `${frame.functionName || "(anonymous)"} ${where(frame.url)}${frame.url === "" ? "" : `:${frame.lineNumber + 1}`}`.trim();

/**
 * What each sample was doing: the innermost frame on its stack that names a stage of a request,
 * except that a generic stage (Node's http server, fastify: level 0; Parley's other request code:
 * level 1) never overrides a more specific one above it (level 2). So a socket write made by
 * the SSE writer counts as "response", not as Node's http.
 */
const STAGES: ReadonlyArray<readonly [RegExp, string, number]> = [
  [/sqlite-store\.js|better-sqlite3/, "ledger row: SQLite insert (and WAL checkpoints)", 2],
  [/pino|sonic-boom|thread-stream/, "log line: pino", 2],
  [/prom-client|telemetry\/metrics\.js/, "metrics: prom-client", 2],
  [/protocol\/ids\.js/, "ids: crypto.randomBytes", 2],
  [/^(any|createAbortSignal|get signal|abort|AbortController|addEventListener|removeEventListener) node:internal\/(abort_controller|event_target)|upstream-call\.js/,
    "AbortSignal.any, abort listeners, per-attempt timers", 2],
  [/server\/sse\.js|protocol\/chat-response\.js/, "response: build chunks, JSON.stringify, write headers and body", 2],
  [/sse-reader\.js|eventsource-parser|upstream\/normalise\.js|upstream-generation\.js/, "upstream answer: SSE parse, JSON.parse, normalise", 2],
  [/upstream-server\.js|undici/, "upstream request and response: undici", 2],
  [/dist\/access\//, "auth and admission", 2],
  [/protocol\/chat-request\.js/, "request parsing and validation", 2],
  [/dist\/(server|backends|protocol)\//, "Parley request handling, other", 1],
  [/fastify|find-my-way|secure-json-parse|avvio/, "fastify: routing, hooks, body parsing", 0],
  [/node:_http_|wasm:/, "node:http server (parse request, socket bookkeeping)", 0],
];

function stageOf(frame: ProfileNode["callFrame"]): { name: string; level: number } | undefined {
  const text = `${frame.functionName} ${frame.url}`;
  for (const [pattern, name, level] of STAGES) if (pattern.test(text)) return { name, level };
  return undefined;
}

/** Self time by request stage, by owner and by function, as markdown. */
function summarizeProfile(file: string): string[] {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, index) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)));
  const isIdle = (id: number): boolean => byId.get(id)?.callFrame.functionName === "(idle)";
  const busy = [...self.entries()].filter(([id]) => !isIdle(id)).reduce((sum, [, micros]) => sum + micros, 0);
  const functions = new Map<string, number>();
  const owners = new Map<string, number>();
  const stages = new Map<string, number>();
  const add = (map: Map<string, number>, key: string, micros: number): void => {
    map.set(key, (map.get(key) ?? 0) + micros);
  };
  const walk = (id: number, inherited: { name: string; level: number } | undefined): void => {
    const node = byId.get(id);
    if (node === undefined) return;
    const own = stageOf(node.callFrame);
    const stage = own !== undefined && (inherited === undefined || own.level >= inherited.level) ? own : inherited;
    const micros = self.get(id) ?? 0;
    if (micros > 0 && !isIdle(id)) {
      add(functions, frameName(node.callFrame), micros);
      add(owners, owner(node.callFrame), micros);
      add(stages, stage?.name ?? (/^\((garbage collector|program)\)$/.test(node.callFrame.functionName) ? owner(node.callFrame) : `elsewhere: ${owner(node.callFrame)}`), micros);
    }
    for (const child of node.children ?? []) walk(child, stage);
  };
  const root = profile.nodes[0];
  if (root !== undefined) walk(root.id, undefined);
  const share = (micros: number): string => `${((100 * micros) / busy).toFixed(1)}%`;
  const table = (map: Map<string, number>, limit: number, code: boolean): string[] =>
    [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, limit).map(([name, micros]) => `| ${code ? `\`${name}\`` : name} | ${share(micros)} |`);
  return [
    `Busy (not idle) ${(busy / 1e6).toFixed(2)} s. By stage of a request (each sample goes to the innermost frame on its stack that`,
    "names a stage, Parley's own stages winning over Node's http and fastify, so a socket write made by the SSE writer counts under",
    "\"response\"; \"elsewhere\" had no such frame on its stack):",
    "",
    "| stage | share of busy time |",
    "|---|---|",
    ...table(stages, 20, false),
    "",
    "By owner of the function running (native calls, such as syscalls and SQLite's C code, belong to no package):",
    "",
    "| owner | self time, share of busy |",
    "|---|---|",
    ...table(owners, 12, false),
    "",
    "Top functions by self time:",
    "",
    "| function | self time, share of busy |",
    "|---|---|",
    ...table(functions, 20, true),
  ];
}

// ---------------------------------------------------------------------------------------

const percentile = (values: readonly number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};
const median = (values: readonly number[]): number => {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
};
const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(3) : "—");
const signed = (value: number): string => (Number.isFinite(value) ? `${value >= 0 ? "+" : ""}${value.toFixed(3)}` : "—");
const pct = (value: number): string => (Number.isFinite(value) ? `${Math.round(value * 100)}%` : "—");

async function main(): Promise<void> {
  if (os.cpus().length < 2) throw new Error("this benchmark pins the proxy to CPU 0 and the client and upstream to CPU 1: it needs 2 CPUs");
  const tools = ensureTools();
  pinSelf(CLIENT_CPU);
  const nice = NICE !== undefined && reniceSelf(NICE) ? NICE : undefined;
  if (NICE !== undefined && nice === undefined) console.error(`[upstream-proxy] could not set nice ${NICE} (needs root for a negative value); running at the default`);
  const temp = mkdtempSync(path.join(os.tmpdir(), "parley-bench-upstream-"));
  const stops: Array<() => Promise<void>> = [];
  const log = (message: string): void => console.error(`[upstream-proxy] ${message}`);
  const started = performance.now();
  try {
    const upstreamPort = await freePort();
    const upstream = await startNginx({
      name: "fake-upstream", nginx: tools.nginx, port: upstreamPort, cpu: CLIENT_CPU, readyPath: "/v1/models",
      config: (prefix) => fakeUpstreamConfig(prefix, upstreamPort, fakeStream(), MODELS_JSON),
    });
    stops.push(upstream.stop);
    const proxyPort = await freePort();
    const nginx = await startNginx({
      name: "nginx-proxy", nginx: tools.nginx, port: proxyPort, cpu: PROXY_CPU, readyPath: "/v1/models",
      config: (prefix) => reverseProxyConfig(prefix, proxyPort, upstreamPort),
    });
    stops.push(nginx.stop);
    const bare = await startBareProxy(temp, upstream.url);
    stops.push(bare.stop);
    const parley = await startParley(temp, upstreamPort, "parley");
    stops.push(parley.stop);
    const { pipe, undiciFloor } = await startFloorProxies(temp, upstreamPort);
    stops.push(pipe.stop, undiciFloor.stop);
    log(`fake upstream ${upstream.url} (CPU ${CLIENT_CPU}); on CPU ${PROXY_CPU}: nginx ${nginx.url}, node ${bare.url}, parley ${parley.url}, pipe ${pipe.url}, undici floor ${undiciFloor.url}`);
    const meter = new CpuMeter([upstream.pid, nginx.pid, bare.pid, parley.pid, pipe.pid, undiciFloor.pid], upstream.pid);

    const pool = (url: string): Pool => new Pool(url, { connections: 512, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 120_000 });
    const arms: Arm[] = [
      { name: "direct", label: "direct (no proxy)", url: upstream.url, pid: undefined, pool: pool(upstream.url) },
      { name: "nginx", label: "nginx", url: nginx.url, pid: nginx.pid, pool: pool(nginx.url) },
      { name: "node", label: "bare Node proxy", url: bare.url, pid: bare.pid, pool: pool(bare.url) },
      { name: "parley", label: "**Parley**", url: parley.url, pid: parley.pid, pool: pool(parley.url) },
    ];
    const [direct, nginxArm, nodeArm, parleyArm] = arms as [Arm, Arm, Arm, Arm];
    // Throughput only: what a Node proxy costs with no HTTP at all, and with undici as its client.
    const floors: Arm[] = [
      { name: "pipe", label: "Node TCP pipe (floor)", url: pipe.url, pid: pipe.pid, pool: pool(pipe.url) },
      { name: "undici-floor", label: "undici floor", url: undiciFloor.url, pid: undiciFloor.pid, pool: pool(undiciFloor.url) },
    ];
    const [pipeArm, undiciFloorArm] = floors as [Arm, Arm];
    const throughputArms = [...arms, ...floors];
    stops.push(async () => {
      for (const arm of throughputArms) await arm.pool.close();
    });
    let requestsToParley = 0;

    const script = path.join(temp, "post.lua");
    writeFileSync(script, WRK_SCRIPT(REQUEST_BODY, REQUEST_HEADERS));

    // Warm-up: JIT, connection pools, SQLite pages; results thrown away.
    for (const arm of throughputArms) {
      const result = await runWrk(tools.wrk, script, arm.url, WARMUP_SECONDS, meter, arm.pid);
      if (arm === parleyArm) requestsToParley += result.requests;
      log(`warm-up ${arm.name}: ${result.rps.toFixed(0)} req/s`);
      const check = newResult();
      for (let i = 0; i < 50; i++) await timeOne(arm, performance.now(), check);
      if (arm === parleyArm) requestsToParley += 50;
      if (check.errors > 0) throw new Error(`warm-up requests to ${arm.name} failed: ${check.errorExamples.join("; ")}`);
    }

    // What each proxy burns idle (timers, health checks), subtracted from its CPU per request below.
    await sleep(2000);
    const idleStart = performance.now();
    const idleBefore = arms.map((arm) => (arm.pid === undefined ? 0 : treeCpuSeconds([arm.pid])));
    await sleep(8000);
    const idleWall = (performance.now() - idleStart) / 1000;
    const idleCores = new Map(arms.map((arm, index) => [arm, arm.pid === undefined ? 0 : (treeCpuSeconds([arm.pid]) - (idleBefore[index] ?? 0)) / idleWall]));
    /** Runs `body` and charges each arm's proxy with the CPU it used meanwhile, above its idle rate. */
    const charged = async (targets: readonly Arm[], results: Map<Arm, LatencyResult>, body: () => Promise<void>): Promise<void> => {
      const from = performance.now();
      const before = targets.map((arm) => (arm.pid === undefined ? 0 : treeCpuSeconds([arm.pid])));
      await body();
      const wall = (performance.now() - from) / 1000;
      targets.forEach((arm, index) => {
        if (arm.pid === undefined) return;
        const used = treeCpuSeconds([arm.pid]) - (before[index] ?? 0) - (idleCores.get(arm) ?? 0) * wall;
        (results.get(arm) as LatencyResult).cpuSeconds += used;
      });
    };

    // Latency at fixed rates.
    const latency: Array<{ rate: number; seconds: number; mode: string; results: Map<Arm, LatencyResult>; cpu: CpuUse }> = [];
    for (const [index, rate] of RATES.entries()) {
      const seconds = LATENCY_SECONDS[index] ?? LATENCY_SECONDS[LATENCY_SECONDS.length - 1] ?? 10;
      const results = new Map(arms.map((arm) => [arm, newResult()]));
      const before = meter.snapshot(undefined);
      let mode: string;
      if (rate <= INTERLEAVE_MAX_RPS) {
        mode = "arms interleaved request by request";
        log(`latency at ${rate} req/s: ${seconds} s, arms interleaved`);
        await charged(arms, results, () => openLoop(arms, results, rate, seconds));
      } else {
        mode = `${LATENCY_ROUNDS} turns of ${(seconds / LATENCY_ROUNDS).toFixed(1)} s per arm, order rotated`;
        for (let round = 0; round < LATENCY_ROUNDS; round++) {
          for (let turn = 0; turn < arms.length; turn++) {
            const arm = arms[(round + turn) % arms.length] as Arm;
            log(`latency at ${rate} req/s: round ${round + 1}, ${arm.name}`);
            await charged([arm], results, () => openLoop([arm], results, rate, seconds / LATENCY_ROUNDS));
            await sleep(200);
          }
        }
      }
      const cpu = CpuMeter.use(before, meter.snapshot(undefined));
      const parleyResult = results.get(parleyArm) as LatencyResult;
      requestsToParley += parleyResult.samples.length + parleyResult.errors;
      latency.push({ rate, seconds, mode, results, cpu });
    }

    // Throughput, closed loop, one core per proxy.
    const throughput = new Map<Arm, WrkResult[]>(throughputArms.map((arm) => [arm, []]));
    for (let round = 0; round < THROUGHPUT_ROUNDS; round++) {
      const order = round % 2 === 0 ? throughputArms : [...throughputArms].reverse();
      for (const arm of order) {
        const result = await runWrk(tools.wrk, script, arm.url, THROUGHPUT_SECONDS, meter, arm.pid);
        if (arm === parleyArm) requestsToParley += result.requests;
        throughput.get(arm)?.push(result);
        log(`throughput round ${round + 1} ${arm.name}: ${result.rps.toFixed(0)} req/s, proxy ${pct(result.cpu.proxyCores)} of a core, ` +
          `CPU busy ${result.cpu.busy.map(pct).join("/")}, other processes ${result.cpu.otherCores.toFixed(2)} cores, ` +
          `non-2xx ${result.non2xx}, bad ${result.bad}, socket errors ${result.socketErrors}`);
        await sleep(500);
      }
    }

    await parley.stop();
    const rows = ledgerRows(parley.dataDir);
    log(`parley ledger: ${rows} rows for ${requestsToParley} requests sent (wrk counts completed requests only)`);
    const parleyStderr = parley.stderr().trim();

    let profileLines: string[] = [];
    if (PROFILE) {
      const profileDir = path.join(temp, "profile");
      mkdirSync(profileDir);
      const profiled = await startParley(temp, upstreamPort, "parley-profiled", ["--cpu-prof", `--cpu-prof-dir=${profileDir}`]);
      stops.push(profiled.stop);
      const profiledMeter = new CpuMeter([upstream.pid, nginx.pid, bare.pid, profiled.pid], upstream.pid);
      await runWrk(tools.wrk, script, profiled.url, WARMUP_SECONDS, profiledMeter, profiled.pid);
      const result = await runWrk(tools.wrk, script, profiled.url, THROUGHPUT_SECONDS, profiledMeter, profiled.pid);
      await profiled.stop();
      const file = readdirSync(profileDir).find((name) => name.endsWith(".cpuprofile"));
      if (file === undefined) throw new Error("no .cpuprofile written");
      if (KEEP_PROFILE) writeFileSync(path.join(RESULTS, "upstream-proxy.cpuprofile"), readFileSync(path.join(profileDir, file)));
      profileLines = [
        "## Where Parley's time goes",
        "",
        `\`node --cpu-prof\` on a fresh Parley (same setup) over start-up, a ${WARMUP_SECONDS} s warm-up and one ${THROUGHPUT_SECONDS} s wrk run`,
        `(${result.rps.toFixed(0)} req/s under the profiler, ${pct(result.cpu.proxyCores)} of its core). Start-up (module loading) is a few percent of it.`,
        "",
        ...summarizeProfile(path.join(profileDir, file)),
        "",
      ];
    }

    // ------------------------------------------------------------------ report
    const latencyRows: string[] = [];
    const errorNotes: string[] = [];
    const lagNotes: string[] = [];
    const addedP50: Array<{ rate: number; arm: Arm; ttft: number; total: number }> = [];
    for (const { rate, results } of latency) {
      const base = results.get(direct) as LatencyResult;
      const baseTtft = base.samples.map((sample) => sample.ttftMs);
      const baseTotal = base.samples.map((sample) => sample.totalMs);
      for (const arm of arms) {
        const result = results.get(arm) as LatencyResult;
        const ttft = result.samples.map((sample) => sample.ttftMs);
        const totals = result.samples.map((sample) => sample.totalMs);
        const added = arm === direct
          ? "— | —"
          : `${signed(percentile(ttft, 50) - percentile(baseTtft, 50))} / ${signed(percentile(ttft, 99) - percentile(baseTtft, 99))} | ` +
            `${signed(percentile(totals, 50) - percentile(baseTotal, 50))} / ${signed(percentile(totals, 99) - percentile(baseTotal, 99))}`;
        const cpuPerRequest = arm.pid === undefined ? "—" : ((1e6 * result.cpuSeconds) / Math.max(1, result.samples.length + result.errors)).toFixed(0);
        latencyRows.push(`| ${rate} | ${arm.label} | ${result.samples.length} | ${result.errors} | ${ms(percentile(ttft, 50))} | ${ms(percentile(ttft, 99))} | ` +
          `${ms(percentile(totals, 50))} | ${ms(percentile(totals, 99))} | ${added} | ${cpuPerRequest} |`);
        if (result.errors > 0) errorNotes.push(`${rate} req/s ${arm.name}: ${result.errors} errors (${result.errorExamples.join("; ")})`);
        lagNotes.push(`${rate}/${arm.name} ${ms(percentile(result.samples.map((sample) => sample.lagMs), 99))}`);
        if (arm !== direct) {
          addedP50.push({ rate, arm, ttft: percentile(ttft, 50) - percentile(baseTtft, 50), total: percentile(totals, 50) - percentile(baseTotal, 50) });
        }
      }
    }
    const otherLoad = latency.map(({ rate, cpu }) => `${rate} req/s ${cpu.otherCores.toFixed(2)}`).join(", ");

    const summary = (arm: Arm) => {
      const runs = throughput.get(arm) ?? [];
      const rps = median(runs.map((run) => run.rps));
      const cores = median(runs.map((run) => run.cpu.proxyCores));
      return { runs, rps, cores, perCore: Number.isFinite(cores) && cores > 0 ? rps / cores : Number.NaN, microsPerRequest: (cores / rps) * 1e6 };
    };
    const throughputRows = throughputArms.map((arm) => {
      const { runs, rps, perCore, microsPerRequest } = summary(arm);
      const errors = runs.reduce((sum, run) => sum + run.non2xx + run.socketErrors + (Number.isFinite(run.bad) ? run.bad : 1), 0);
      return `| ${arm.label} | ${runs.map((run) => run.rps.toFixed(0)).join(", ")} | **${rps.toFixed(0)}** | ` +
        `${ms(median(runs.map((run) => run.p50Ms)))} / ${ms(median(runs.map((run) => run.p99Ms)))} | ` +
        `${arm.pid === undefined ? "—" : runs.map((run) => pct(run.cpu.proxyCores)).join(", ")} | ` +
        `${Number.isFinite(microsPerRequest) ? microsPerRequest.toFixed(1) : "—"} | ${Number.isFinite(perCore) ? perCore.toFixed(0) : "—"} | ` +
        `${runs.map((run) => pct(run.cpu.upstreamCores)).join(", ")} | ${runs.map((run) => run.cpu.busy.slice(0, 2).map(pct).join(" / ")).join(", ")} | ` +
        `${runs.map((run) => run.cpu.otherCores.toFixed(2)).join(", ")} | ${errors} |`;
    });
    const nginxTp = summary(nginxArm);
    const nodeTp = summary(nodeArm);
    const parleyTp = summary(parleyArm);
    const pipeTp = summary(pipeArm);
    const undiciFloorTp = summary(undiciFloorArm);
    const ratio = parleyTp.rps / nginxTp.rps;
    const ratioPerCore = parleyTp.perCore / nginxTp.perCore;
    const steal = Math.max(...[...throughput.values()].flat().map((run) => Math.max(...run.cpu.steal)));

    const parleyAdded = addedP50.filter((entry) => entry.arm === parleyArm);
    const nginxAdded = addedP50.filter((entry) => entry.arm === nginxArm);
    const nodeAdded = addedP50.filter((entry) => entry.arm === nodeArm);
    const worstParley = Math.max(...parleyAdded.map((entry) => Math.max(entry.ttft, entry.total)));
    const listAdded = (entries: typeof addedP50): string =>
      entries.map((entry) => `${signed(entry.ttft)} ms TTFT / ${signed(entry.total)} ms total at ${entry.rate} req/s`).join("; ");

    const wrkVersion = execFileSync("sh", ["-c", '"$0" -v 2>&1 || true', tools.wrk], { encoding: "utf8" }).split("\n")[0]?.replace(/^wrk /, "").split(" ")[0] ?? "?";
    const machine = `${os.cpus()[0]?.model ?? "?"}, ${os.cpus().length} CPUs, Linux ${os.release()}, Node ${process.version}, ${tools.nginxVersion}, wrk ${wrkVersion}`;
    const settings = [
      ...(PROFILE ? ["`PROFILE=1`"] : []),
      ...(nice !== undefined ? [`\`NICE=${nice}\` (every process of the benchmark at nice ${nice}, so that other work on this shared machine disturbs it less)`] : []),
    ];
    const report = [
      "# Upstream proxy overhead: Parley against nginx, in front of the same fast upstream",
      "",
      `Measured ${new Date().toISOString()} on ${machine}; the run took ${((performance.now() - started) / 60_000).toFixed(1)} minutes.`,
      "",
      `Command: \`npm run build && node --import tsx bench/upstream-proxy.ts\` (\`npm run bench:upstream\`)${settings.length > 0 ? `, here with ${settings.join(" and ")}` : ""}.`,
      "",
      "Setup:",
      "",
      "- **Upstream**: a second nginx (1 worker, CPU 1) answering `POST /v1/chat/completions` from memory with a fixed",
      `  streamed chat completion (${fakeStream().length} bytes in one write: a role chunk, ${WORDS.length} content chunks, a finish chunk, a usage`,
      "  chunk with `choices: []`, `data: [DONE]`), and `GET /v1/models` for Parley's health checks.",
      "- **direct**: the client calls that upstream itself.",
      "- **nginx**: Debian's nginx as a plain reverse proxy, 1 worker on CPU 0: `upstream { keepalive 64; }`,",
      "  `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, `proxy_buffering off`, `access_log off`.",
      "- **bare Node proxy** (reference, not a target): `node:http` server + undici Pool, bytes piped through, nothing",
      "  parsed, checked or logged, on CPU 0. What any Node gateway pays before doing anything.",
      "- **Node TCP pipe** and **undici floor** (references, throughput only), on CPU 0: the first pairs each client",
      "  connection with an upstream connection and copies bytes, no HTTP at all: the least any Node program pays.",
      "  The second is the least a Node gateway on undici (as issue 5 asks) pays: the request head parsed by hand on a",
      "  raw socket (no `node:http`), the request sent with undici's lowest-level API (`Pool.dispatch`), the answer's",
      "  bytes relayed chunked as they come; no auth, SSE parsing, ledger or log.",
      "- **Parley**: `parley serve --config` (an upstream pool of one), `--api-key`, SQLite data dir in a temp dir",
      "  (key check and one committed ledger row per request), default log level `info` (one JSON line per request)",
      "  with stdout to /dev/null; on CPU 0, every thread (`taskset -c 0`).",
      "- The client (Node, undici Pool, keep-alive), wrk and the upstream share CPU 1. Every arm gets the same request",
      "  (`stream: true`, an `Authorization` header) and every answer is checked: 200, the 8 content chunks, `[DONE]` last.",
      "",
      "## Latency at fixed request rates (open loop)",
      "",
      "TTFT: from sending the request to the first content chunk; total: to `data: [DONE]` (the upstream sends its whole",
      "answer at once, so the two are close). Percentiles are nearest-rank over all samples of the arm; \"added\" is the",
      "arm's percentile minus direct's. Proxy CPU per request: the proxy's CPU time (scheduler run time of all its threads)",
      "while serving the arm, less its idle rate over the same time (timers, health checks), per request.",
      "",
      "| req/s | arm | requests | errors | TTFT p50 (ms) | TTFT p99 (ms) | total p50 (ms) | total p99 (ms) | added TTFT p50 / p99 (ms) | added total p50 / p99 (ms) | proxy CPU per request (µs) |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
      ...latencyRows,
      "",
      `Schedule: ${latency.map(({ rate, seconds, mode }) => `${rate} req/s for ${seconds} s per arm (${mode})`).join("; ")}.`,
      ...(latency.some(({ results }) => [...results.values()].some((result) => result.samples.length < 100))
        ? ["With fewer than 100 samples, p99 is the slowest request."]
        : []),
      `Client send lag p99 (ms late against the schedule): ${lagNotes.join(", ")}.`,
      `CPU used by other processes on the machine meanwhile (cores): ${otherLoad}.`,
      `Idle CPU of each proxy, subtracted above: ${arms.filter((arm) => arm.pid !== undefined).map((arm) => `${arm.name} ${(100 * (idleCores.get(arm) ?? 0)).toFixed(2)}% of a core`).join(", ")}` +
        " (at 1 req/s this is most of a proxy's CPU, so the per-request figure there is rough).",
      ...(errorNotes.length > 0 ? ["", `Errors: ${errorNotes.join("; ")}.`] : []),
      "",
      "## Throughput on one core (closed loop)",
      "",
      `\`wrk -t1 -c${CONNECTIONS} -d${THROUGHPUT_SECONDS}s\` on CPU 1, ${THROUGHPUT_ROUNDS} rounds, arms alternating (order reversed every other round); medians.`,
      "\"proxy CPU\": the proxy's CPU time (scheduler run time of its processes' threads) over the run's wall time (100% = its one core); \"CPU per",
      "request\" and \"req/s per proxy core\" divide by it, so they hold even when the proxy did not fill its core. CPU busy: each",
      "CPU's non-idle share from /proc/stat. Other processes: CPU used meanwhile by processes this benchmark did not start.",
      "",
      "| arm | req/s per round | req/s (median) | wrk latency p50 / p99 (ms) | proxy CPU | proxy CPU per request (µs) | req/s per proxy core | upstream CPU | CPU 0 / CPU 1 busy | other processes (cores) | errors (non-2xx, socket, bad body) |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
      ...throughputRows,
      "",
      `Parley / nginx: **${ratio.toFixed(2)}×** in requests per second; ${ratioPerCore.toFixed(2)}× in requests per CPU-second of the proxy ` +
        `(bare Node proxy / nginx: ${(nodeTp.rps / nginxTp.rps).toFixed(2)}× and ${(nodeTp.perCore / nginxTp.perCore).toFixed(2)}×; Parley / bare Node: ${(parleyTp.perCore / nodeTp.perCore).toFixed(2)}× per CPU-second).`,
      nginxTp.cores >= 0.9
        ? `nginx used ${pct(nginxTp.cores)} of its core, so its rate is about its one-core capacity (${nginxTp.perCore.toFixed(0)} req/s per CPU-second).`
        : `nginx used ${pct(nginxTp.cores)} of its core: its rate is limited by CPU 1 (wrk plus the upstream) and is a lower bound of its one-core` +
          " rate; \"req/s per proxy core\" extrapolates it to a full core (its CPU per request is about constant).",
      ...(steal > 0.02 ? [`The hypervisor took up to ${pct(steal)} of a CPU (steal) during a run.`] : []),
      `Parley's ledger held ${rows} rows for the ${requestsToParley} requests sent to it (wrk's count leaves out those cut off at the end of a run).`,
      ...(parleyStderr === "" ? [] : ["", `Parley wrote to stderr: \`${parleyStderr.slice(0, 500).replace(/\n/g, " ")}\``]),
      "",
      "## Verdict",
      "",
      `- **Under 1 ms added at p50**: ${worstParley < 1 ? "**met**" : "**missed**"}. Parley adds ${listAdded(parleyAdded)}.`,
      `  For scale, nginx adds ${listAdded(nginxAdded)}; the bare Node proxy ${listAdded(nodeAdded)}.`,
      `- **At least half of nginx's requests per second on one core**: ${ratio >= 0.5 && ratioPerCore >= 0.5 ? "**met**" : "**missed**"}: ` +
        `${ratio.toFixed(2)}× raw, ${ratioPerCore.toFixed(2)}× per proxy CPU-second ` +
        `(${parleyTp.rps.toFixed(0)} against ${nginxTp.rps.toFixed(0)} req/s; ${parleyTp.microsPerRequest.toFixed(0)} µs of CPU per request against ` +
        `${nginxTp.microsPerRequest.toFixed(0)} µs). Even the bare Node proxy reaches only ${(nodeTp.perCore / nginxTp.perCore).toFixed(2)}× of nginx per CPU-second ` +
        `(${nodeTp.microsPerRequest.toFixed(0)} µs per request).`,
      `  The floors: a Node TCP pipe reaches ${(pipeTp.perCore / nginxTp.perCore).toFixed(2)}× of nginx per CPU-second (${pipeTp.microsPerRequest.toFixed(0)} µs per request), ` +
        `so Node itself can move these bytes; with undici as the upstream client and nothing else, ${(undiciFloorTp.perCore / nginxTp.perCore).toFixed(2)}× ` +
        `(${undiciFloorTp.microsPerRequest.toFixed(0)} µs). Half of nginx's rate leaves ${(2 * nginxTp.microsPerRequest).toFixed(0)} µs per request.`,
      "",
      ...profileLines,
    ].join("\n");
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(path.join(RESULTS, "upstream-proxy.md"), report);
    console.log(report);
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    rmSync(temp, { recursive: true, force: true });
  }
}

if (process.env.SUMMARIZE !== undefined) console.log(summarizeProfile(process.env.SUMMARIZE).join("\n"));
else await main();
