/**
 * The process's one llama.cpp engine: Parley's tuning addon first (it must precede
 * node-llama-cpp's own addon, see llama-tuning.ts), then node-llama-cpp's `getLlama`, CPU only.
 */
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
