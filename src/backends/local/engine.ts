/**
 * The process's one llama.cpp engine: Parley's tuning addon first (it must precede
 * node-llama-cpp's own addon, see llama-tuning.ts), then node-llama-cpp's `getLlama`, CPU only.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { getLlama, LlamaLogLevel, type Llama } from "node-llama-cpp";
import { loadTuning, tuningStatus, type TuningOptions, type TuningStatus } from "./llama-tuning.js";

export interface EngineOptions extends TuningOptions {
  readonly logLevel?: LlamaLogLevel | undefined;
  readonly logger?: ((level: LlamaLogLevel, message: string) => void) | undefined;
}

export interface Engine {
  readonly llama: Llama;
  /** The tuning in force when the engine loaded. */
  readonly tuning: TuningStatus;
}

export async function openEngine(options: EngineOptions = {}): Promise<Engine> {
  loadTuning(options);
  const llama = await getLlama({
    gpu: false,
    logLevel: options.logLevel ?? LlamaLogLevel.warn,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  });
  return { llama, tuning: tuningStatus() };
}

/** node-llama-cpp's version (its package.json, found from its entry point; its exports hide the file). */
export function engineVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.resolve("node-llama-cpp")));
  for (;;) {
    const file = path.join(dir, "package.json");
    if (existsSync(file)) {
      const parsed = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
      if (parsed.name === "node-llama-cpp") return parsed.version ?? "unknown";
    }
    const parent = path.dirname(dir);
    if (parent === dir) return "unknown";
    dir = parent;
  }
}
