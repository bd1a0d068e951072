/**
 * `parley serve` as a child process with only the flags a benchmark names (everything else
 * at Parley's defaults) and its own throw-away data directory, so the keys-and-usage
 * database of the person running the benchmark is neither read nor grown.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PROJECT_ROOT, freePort, startServer, type ServerProcess } from "./processes.js";
import { readResidentMemory, type ResidentMemory } from "./proc-memory.js";

export interface ParleyFlags {
  readonly model: string;
  readonly parallel: number;
  /** Omitted: Parley's default (4096 tokens per sequence, capped at the model's training context). */
  readonly contextSize?: number | undefined;
  /** Omitted: Parley's measured default rule. */
  readonly threads?: number | undefined;
  /** Flags for node itself, before the script (e.g. --expose-gc). Defaults to none. */
  readonly nodeOptions?: readonly string[] | undefined;
}

export interface ParleyProcess extends ServerProcess {
  readonly pid: number;
  /** The last 20,000 characters the server wrote to stdout and stderr. */
  log(): string;
  /** Throws, with the server's log, when the server is no longer running. */
  assertRunning(): void;
  /** Its resident memory now (throws, with the server's log, when it is no longer running). */
  memory(): ResidentMemory;
}

export async function startParleyProcess(flags: ParleyFlags): Promise<ParleyProcess> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "parley-bench-"));
  const port = await freePort();
  const args = [
    ...(flags.nodeOptions ?? []),
    path.join(PROJECT_ROOT, "dist/cli/main.js"), "serve", "--model", flags.model, "--model-name", "bench",
    "--parallel", String(flags.parallel), "--port", String(port), "--data-dir", dataDir, "--log-level", "warn",
    ...(flags.contextSize !== undefined ? ["--context-size", String(flags.contextSize)] : []),
    ...(flags.threads !== undefined ? ["--threads", String(flags.threads)] : []),
  ];
  let server: ServerProcess;
  try {
    server = await startServer("parley", process.execPath, args, port);
  } catch (error) {
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  const pid = server.child.pid;
  if (pid === undefined) throw new Error("parley has no pid");
  let log = "";
  const keep = (data: Buffer): void => {
    log = (log + data.toString("utf8")).slice(-20_000);
  };
  server.child.stdout?.on("data", keep);
  server.child.stderr?.on("data", keep);
  const { child } = server;
  const assertRunning = (): void => {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`parley (pid ${pid}) exited (${child.exitCode ?? child.signalCode}):\n${log}`);
    }
  };
  return {
    ...server,
    pid,
    log: () => log,
    assertRunning,
    memory: () => {
      assertRunning();
      try {
        return readResidentMemory(pid);
      } catch (error) {
        throw new Error(`reading parley's memory (pid ${pid}): ${String(error)}\n${log}`);
      }
    },
    stop: async () => {
      try {
        await server.stop();
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}
