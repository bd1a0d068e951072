/** Paths of the real GGUF models shared with the project, and synthetic ones written once per test process. */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { WeightType } from "../../src/models/architectures.js";
import { writeGguf } from "../../src/models/gguf-writer.js";
import { planSyntheticModel, synthesizeModel } from "../../src/models/synthesize.js";

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

/** A tiny Qwen2 with random weights (Q8_0 matrices unless asked) and the real Qwen2 tokenizer and ChatML template. */
export function tinyQwen2(type: WeightType = "q8_0"): Promise<string> {
  const key = `qwen2-tiny-${type}`;
  let file = written.get(key);
  if (file === undefined) {
    const outputPath = path.join(scratchDir(), `${key}.gguf`);
    file = synthesizeModel({ architecture: "qwen2", shape: "tiny", type, vocabularyPath: QWEN2_VOCAB, outputPath }).then(() => outputPath);
    written.set(key, file);
  }
  return file;
}

/**
 * A tiny Qwen2 (real tokenizer, ChatML) whose first sampled token is always its
 * end-of-generation token, at any temperature: every layer's weights are zero, so the output is
 * the input token's embedding through the final norm (all ones); every embedding row is all
 * ones except EOS's, all twos, so with tied embeddings EOS's logit is twice any other's (the
 * embedding width apart). For tests of how generation ends at the model's own end token.
 */
export function endsAtOnceQwen2(): Promise<string> {
  let file = written.get("qwen2-ends-at-once");
  if (file === undefined) {
    const outputPath = path.join(scratchDir(), "qwen2-ends-at-once-f16.gguf");
    file = (async () => {
      const plan = await planSyntheticModel({ architecture: "qwen2", shape: "tiny", type: "f16", vocabularyPath: QWEN2_VOCAB, name: "ends-at-once" });
      const eos = plan.metadata.get("tokenizer.ggml.eos_token_id")?.value;
      if (typeof eos !== "number") throw new Error("the vocabulary has no EOS token");
      const tensors = plan.tensors.map((tensor) => ({
        ...tensor,
        fill: (target: Buffer, byteOffset: number): void => {
          if (tensor.name === "token_embd.weight") {
            const width = tensor.dimensions[0] as number;
            for (let index = 0; index < target.length / 2; index++) {
              const row = Math.floor((byteOffset / 2 + index) / width);
              target.writeUInt16LE(row === eos ? 0x4000 : 0x3c00, index * 2); // f16 2.0 and 1.0
            }
          } else if (tensor.role === "norm") {
            for (let index = 0; index < target.length / 4; index++) target.writeFloatLE(1, index * 4);
          } else {
            target.fill(0);
          }
        },
      }));
      await writeGguf(outputPath, { metadata: plan.metadata, tensors });
      return outputPath;
    })();
    written.set("qwen2-ends-at-once", file);
  }
  return file;
}
