/** Starting and stopping the servers a benchmark compares, on free loopback ports. */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const TOOLS = path.resolve(PROJECT_ROOT, "../shared/tools/llama-server");
export const SHARED_MODELS = path.resolve(PROJECT_ROOT, "../shared/models");

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

export interface ServerProcess {
  readonly name: string;
  readonly url: string;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

async function waitHealthy(url: string, child: ChildProcess, log: () => string): Promise<void> {
  for (let attempt = 0; attempt < 1200; attempt++) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}:\n${log()}`);
    const response = await fetch(`${url}/health`).catch(() => undefined);
    if (response?.status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`server at ${url} never became healthy:\n${log()}`);
}

export async function startServer(name: string, command: string, args: string[], port: number): Promise<ServerProcess> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const keep = (data: Buffer): void => {
    log = (log + data.toString("utf8")).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, child, () => log);
  return {
    name,
    url,
    child,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await once(child, "exit");
      clearTimeout(timer);
    },
  };
}

export interface EngineSettings {
  readonly model: string;
  readonly threads: number;
  readonly contextSize: number;
  readonly parallel: number;
  /** llama-server's built-in chat template (`--chat-template`); ChatML when omitted. */
  readonly chatTemplate?: string | undefined;
}

/** `extraArgs`: more llama-server flags, e.g. `-fa off` to match the attention path Parley chose. */
export async function startLlamaServer(settings: EngineSettings, extraArgs: readonly string[] = []): Promise<ServerProcess> {
  const port = await freePort();
  // --no-jinja and a built-in template (ChatML unless the settings name one): llama-server's Jinja
  // tool-call parser rejects random-weight output (tools/README.md).
  const args = [
    "-m", settings.model, "-t", String(settings.threads), "-c", String(settings.contextSize * settings.parallel),
    "-np", String(settings.parallel), "--no-jinja", "--chat-template", settings.chatTemplate ?? "chatml", "--host", "127.0.0.1", "--port", String(port),
    "--no-webui", ...extraArgs,
  ];
  return startServer("llama-server", path.join(TOOLS, "llama-server"), args, port);
}

/** `extraArgs`: more `parley serve` flags, e.g. `--cpu-kernels haswell` for a second arm. */
export async function startParley(settings: EngineSettings, extraArgs: readonly string[] = []): Promise<ServerProcess> {
  const port = await freePort();
  const args = [
    path.join(PROJECT_ROOT, "dist/cli/main.js"), "serve", "--model", settings.model, "--model-name", "bench",
    "--threads", String(settings.threads), "--context-size", String(settings.contextSize),
    "--parallel", String(settings.parallel), "--port", String(port), "--log-level", "warn", ...extraArgs,
  ];
  return startServer("parley", process.execPath, args, port);
}

/**
 * How a running Parley's engine runs, from its metrics: the CPU kernels (`parley_engine_info`)
 * and the bench model's flash attention, `on`, `off` or `auto` (`parley_model_attention_info`);
 * "?" where it does not say.
 */
export async function parleyEngineOf(server: ServerProcess): Promise<{ kernels: string; flashAttention: string }> {
  const text = await fetch(`${server.url}/metrics`).then((response) => response.text()).catch(() => "");
  return {
    kernels: /^parley_engine_info\{cpu_kernels="([^"]*)"/m.exec(text)?.[1] ?? "?",
    flashAttention: /^parley_model_attention_info\{model="bench",flash_attention="([^"]*)"/m.exec(text)?.[1] ?? "?",
  };
}

/** How a report names Parley's engine: its CPU kernels, and flash attention where it is not llama.cpp's choice. */
export function engineLabel(engine: { kernels: string; flashAttention: string }): string {
  return engine.flashAttention === "auto" ? engine.kernels : `${engine.kernels}, flash attention ${engine.flashAttention}`;
}

/** A second Parley arm for side-by-side runs (the PARLEY_ARM knob): `parley serve` with these extra flags. */
export function parleyArm(flags: string): [name: string, start: (settings: EngineSettings) => Promise<ServerProcess>] {
  return [`parley ${flags}`, (settings) => startParley(settings, flags.split(/\s+/))];
}
