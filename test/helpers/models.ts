/** Paths of the real GGUF models shared with the project, and synthetic ones written once per test process. */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { synthesizeModel } from "../../src/models/synthesize.js";

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SHARED_MODELS = path.resolve(PROJECT_ROOT, "../shared/models");

export const STORIES_260K = path.join(SHARED_MODELS, "stories260K.gguf");
export const LLAMA2_TINY_RANDOM = path.join(SHARED_MODELS, "llama-2-tiny-random.gguf");
export const QWEN2_VOCAB = path.join(SHARED_MODELS, "ggml-vocab-qwen2.gguf");

let scratch: string | undefined;
const written = new Map<string, Promise<string>>();

function scratchDir(): string {
  if (scratch === undefined) {
    scratch = mkdtempSync(path.join(os.tmpdir(), "parley-test-models-"));
    process.once("exit", () => rmSync(scratch ?? "", { recursive: true, force: true }));
  }
  return scratch;
}

/** A tiny Qwen2 with random weights and the real Qwen2 tokenizer and ChatML template. */
export function tinyQwen2(): Promise<string> {
  let file = written.get("qwen2-tiny");
  if (file === undefined) {
    const outputPath = path.join(scratchDir(), "qwen2-tiny-q8_0.gguf");
    file = synthesizeModel({ architecture: "qwen2", shape: "tiny", type: "q8_0", vocabularyPath: QWEN2_VOCAB, outputPath }).then(() => outputPath);
    written.set("qwen2-tiny", file);
  }
  return file;
}
