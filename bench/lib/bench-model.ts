/**
 * The benchmarks' model, chosen with BENCH_MODEL:
 * - `qwen2-0.5b` (the default): a synthetic Qwen2-0.5B q8_0 with the real Qwen2 tokenizer,
 *   written once into bench/.work;
 * - `qwen2-0.5b-q5_0`: the same with Q5_0 matrices, the type most of a Q4_K_M Qwen2-0.5B is
 *   (its 896-wide matrices fall back from Q4_K to Q5_0);
 * - `stories260K`: the tiny real model in ../shared/models, where a decode step costs well
 *   under a millisecond and what a server adds per token shows.
 */
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { synthesizeModel } from "../../src/models/synthesize.js";
import { PROJECT_ROOT, SHARED_MODELS } from "./processes.js";

export interface BenchModel {
  readonly file: string;
  /** For reports, e.g. "synthetic Qwen2-0.5B q8_0". */
  readonly label: string;
  /** For result file names: "" for the default model, else e.g. "-stories260K". */
  readonly suffix: string;
  /**
   * llama-server's built-in template that renders the benchmarks' chats as Parley renders them
   * for this model (node-llama-cpp picks ChatML for Qwen2 and Llama 2's `[INST] <<SYS>>` format
   * for stories260K, which has no template of its own). Both servers then decode from (nearly)
   * the same prompt length: on stories260K a step's cost grows with the position (attention
   * dominates a model this small), so a longer prompt on one side would skew the comparison.
   */
  readonly llamaServerTemplate: string;
}

export async function benchModel(name = process.env.BENCH_MODEL ?? "qwen2-0.5b"): Promise<BenchModel> {
  if (name === "stories260K") {
    return { file: path.join(SHARED_MODELS, "stories260K.gguf"), label: "stories260K (real, 1.2 MB)", suffix: "-stories260K", llamaServerTemplate: "llama2-sys" };
  }
  const types = { "qwen2-0.5b": "q8_0", "qwen2-0.5b-q5_0": "q5_0" } as const;
  if (!(name in types)) throw new Error(`BENCH_MODEL must be qwen2-0.5b, qwen2-0.5b-q5_0 or stories260K, got '${name}'`);
  const type = types[name as keyof typeof types];
  const work = path.join(PROJECT_ROOT, "bench/.work");
  const file = path.join(work, `qwen2-0.5b-${type}.gguf`);
  if (!existsSync(file)) {
    mkdirSync(work, { recursive: true });
    console.log(`writing ${file} (synthetic Qwen2-0.5B, ${type})…`);
    await synthesizeModel({ architecture: "qwen2", shape: "0.5b", type, vocabularyPath: path.join(SHARED_MODELS, "ggml-vocab-qwen2.gguf"), outputPath: file });
  }
  return { file, label: `synthetic Qwen2-0.5B ${type}`, suffix: type === "q8_0" ? "" : `-${name}`, llamaServerTemplate: "chatml" };
}
