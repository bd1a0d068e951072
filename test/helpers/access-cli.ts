/**
 * The built `parley` CLI for the access suites: one-shot commands with stdout and stderr
 * apart, and `parley serve` children that are waited for until healthy and always stopped.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { CLI, runCli, type CliProcess } from "./cli.js";
import { STORIES_260K } from "./models.js";

/** Where keys and usage live for a CLI run: `--data-dir` and, for PostgreSQL, `--database-url`. */
export interface StoreFlags {
  readonly dataDir: string;
  readonly databaseUrl?: string | undefined;
}

export function storeArgs(flags: StoreFlags): string[] {
  return ["--data-dir", flags.dataDir, ...(flags.databaseUrl !== undefined ? ["--database-url", flags.databaseUrl] : [])];
}

/** The environment of every child: nothing ambient decides where keys live. */
export function isolatedEnv(home: string): NodeJS.ProcessEnv {
  return { PARLEY_HOME: home, DATABASE_URL: "", REDIS_URL: "", PARLEY_API_KEYS: "", PARLEY_ADMIN_TOKEN: "" };
}

export function assertBuilt(): void {
  assert.ok(existsSync(CLI), `${CLI} is missing: run \`npm run build\` first (npm test does)`);
}

export interface CommandResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `parley <args>` to completion (killed after 60 s, which fails the caller's assertions). */
export function parley(args: readonly string[], env: NodeJS.ProcessEnv): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (data: Buffer) => (stdout += data.toString("utf8")));
    child.stderr.on("data", (data: Buffer) => (stderr += data.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `parley keys create ... --json`, checked: the issued key's view and its secret. */
export async function createKeyWithCli(flags: StoreFlags, env: NodeJS.ProcessEnv, extra: readonly string[] = [], name = "cli key"): Promise<{ id: string; secret: string; key: Record<string, unknown> }> {
  const result = await parley(["keys", "create", "--name", name, ...extra, ...storeArgs(flags), "--json"], env);
  assert.equal(result.code, 0, `keys create failed: ${result.stderr}`);
  const parsed = JSON.parse(result.stdout) as { key: Record<string, unknown>; secret: string };
  return { id: String(parsed.key.id), secret: parsed.secret, key: parsed.key };
}

const LISTENING = /Parley listening on (http:\/\/[^"\s]+)/;

export interface ServeProcess {
  readonly url: string;
  readonly process: CliProcess;
}

/** `parley serve` on an ephemeral loopback port with stories260K, waited for until /health is 200. */
export async function startServe(args: readonly string[], env: NodeJS.ProcessEnv): Promise<ServeProcess> {
  const child = runCli(["serve", "--model", STORIES_260K, "--port", "0", "--threads", "1", ...args], env);
  try {
    const url = (await child.waitFor(LISTENING, 60_000))[1] ?? "";
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(`${url}/health`).catch(() => undefined);
      if (response?.status === 200) break;
      await response?.body?.cancel();
      if (attempt > 600) throw new Error(`never became healthy:\n${child.output()}`);
      await sleep(100);
    }
    return { url, process: child };
  } catch (error) {
    await child.stop(2000);
    throw error;
  }
}
