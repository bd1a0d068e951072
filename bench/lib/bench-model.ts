/** The benchmarks' model: a synthetic Qwen2-0.5B q8_0 with the real Qwen2 tokenizer, written once into bench/.work. */
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { synthesizeModel } from "../../src/models/synthesize.js";
import { PROJECT_ROOT, SHARED_MODELS } from "./processes.js";

export async function benchModel(): Promise<string> {
  const work = path.join(PROJECT_ROOT, "bench/.work");
  const file = path.join(work, "qwen2-0.5b-q8_0.gguf");
  if (!existsSync(file)) {
    mkdirSync(work, { recursive: true });
    console.log(`writing ${file} (synthetic Qwen2-0.5B, q8_0)…`);
    await synthesizeModel({ architecture: "qwen2", shape: "0.5b", type: "q8_0", vocabularyPath: path.join(SHARED_MODELS, "ggml-vocab-qwen2.gguf"), outputPath: file });
  }
  return file;
}
