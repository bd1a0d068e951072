/**
 * Parley as a gateway: an in-process Parley whose models come from a config document
 * (YAML, as `parley serve --config` reads it), and real Parley upstreams as child
 * processes of `parley serve`, each on its own ephemeral port, that a test may kill.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AccessControl } from "../../src/access/access-control.js";
import { LocalBackend } from "../../src/backends/local/local-backend.js";
import { ModelRegistry } from "../../src/backends/registry.js";
import { UpstreamBackend } from "../../src/backends/upstream/upstream-backend.js";
import { parseModelFile } from "../../src/config/model-file.js";
import { SEED_RANGES } from "../../src/protocol/parameters.js";
import { buildServer } from "../../src/server/app.js";
import { runCli, type CliProcess } from "./cli.js";
import { openTestAccess, testLlama } from "./parley.js";
import { until } from "./wait.js";

export const ADMIN_TOKEN = "gateway-admin-token-0123456789";

export interface RunningGateway {
  readonly url: string;
  readonly registry: ModelRegistry;
  /** Its keys and ledger (a fresh SQLite file). */
  readonly access: AccessControl;
  /** GETs an admin route with the admin token. */
  admin<T>(route: string): Promise<T>;
  close(): Promise<void>;
}

/** A Parley serving the models of `yaml` (local ones load from their GGUF, with 1 thread). */
export async function startGateway(yaml: string, options: { apiKeys?: readonly string[]; env?: NodeJS.ProcessEnv } = {}): Promise<RunningGateway> {
  const registry = new ModelRegistry();
  for (const model of parseModelFile(yaml, "gateway.yaml", options.env ?? {})) {
    if (model.backend === "upstream") {
      const backend = new UpstreamBackend(model);
      registry.add(backend, model.names.slice(1));
      backend.start();
    } else {
      const [id = "local", ...aliases] = model.names;
      const backend = new LocalBackend(await testLlama(), { id, modelPath: model.source ?? "", threads: model.threads ?? 1, parallel: model.parallel });
      await backend.load();
      registry.add(backend, aliases);
    }
  }
  const { access, close: closeAccess } = await openTestAccess(options.apiKeys ?? []);
  const app = buildServer({ registry, access, adminToken: ADMIN_TOKEN, ranges: SEED_RANGES, logger: false });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  return {
    url,
    registry,
    access,
    admin: async <T>(route: string) => {
      const response = await fetch(`${url}${route}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      if (response.status !== 200) throw new Error(`${route}: HTTP ${response.status} ${await response.text()}`);
      return (await response.json()) as T;
    },
    close: async () => {
      await app.close();
      await registry.dispose();
      await closeAccess();
    },
  };
}

export interface UpstreamParley {
  /** The OpenAI base URL, `http://127.0.0.1:PORT/v1`. */
  readonly url: string;
  readonly process: CliProcess;
  /** SIGKILL: the process dies at once, mid-stream, as a crashed machine would. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** `parley serve` in a child process on an ephemeral port, ready (model loaded) when this resolves. */
export async function spawnUpstreamParley(modelPath: string, args: readonly string[] = []): Promise<UpstreamParley> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "parley-upstream-"));
  const child = runCli(["serve", "--model", modelPath, "--port", "0", "--threads", "1", "--data-dir", dataDir, "--log-level", "info", ...args]);
  const cleanup = () => rmSync(dataDir, { recursive: true, force: true });
  try {
    const [, origin] = await child.waitFor(/listening on (http:\/\/[\d.:]+)/);
    await until(async () => (await fetch(`${origin}/health`).catch(() => null))?.status === 200, "the upstream Parley's model to load", 60_000);
    return {
      url: `${origin}/v1`,
      process: child,
      kill: async () => {
        child.child.kill("SIGKILL");
        await child.exited();
        cleanup();
      },
      stop: async () => {
        await child.stop();
        cleanup();
      },
    };
  } catch (error) {
    await child.stop();
    cleanup();
    throw error;
  }
}
