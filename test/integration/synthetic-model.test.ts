import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";
import {
  ChatMLChatWrapper,
  getLlama,
  LlamaChatSession,
  LlamaLogLevel,
  resolveChatWrapper,
  type Llama
} from "node-llama-cpp";
import { registerModelCommand } from "../../src/cli/model.js";
import { inspectModel } from "../../src/models/inspect.js";
import { synthesizeModel } from "../../src/models/synthesize.js";

const QWEN2_VOCAB = fileURLToPath(new URL("../../../shared/models/ggml-vocab-qwen2.gguf", import.meta.url));

let dir: string;
let llama: Llama;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "parley-synthetic-"));
  llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
});

after(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const variants = [
  { label: "Qwen2 vocab, f16", vocabularyPath: QWEN2_VOCAB, type: "f16", vocabularySize: 151_936, quantization: "F16" },
  { label: "built-in vocab, q8_0", vocabularyPath: undefined, type: "q8_0", vocabularySize: undefined, quantization: "Q8_0" }
] as const;

for (const variant of variants) {
  test(`a tiny synthetic Qwen2 (${variant.label}) loads, resolves ChatML and generates`, async () => {
    const path = join(dir, `tiny-${variant.type}.gguf`);
    const result = await synthesizeModel({ shape: "tiny", type: variant.type, vocabularyPath: variant.vocabularyPath, outputPath: path, seed: 1 });
    assert.equal((await stat(path)).size, result.plan.fileSize);

    const inspection = await inspectModel(path);
    assert.equal(inspection.architecture, "qwen2");
    assert.equal(inspection.name, "qwen2-tiny-synthetic");
    assert.equal(inspection.parameterCount, result.plan.parameterCount);
    assert.equal(inspection.contextLength, 32768);
    assert.equal(inspection.quantization, variant.quantization);
    assert.equal(inspection.chatTemplate, "chatml");
    assert.equal(inspection.tokenizerModel, "gpt2");
    assert.equal(inspection.vocabularySize, variant.vocabularySize ?? result.plan.vocabularySize);
    assert.equal(inspection.fileSize, result.plan.fileSize);

    const model = await llama.loadModel({ modelPath: path });
    try {
      const chatWrapper = resolveChatWrapper(model);
      assert.ok(chatWrapper instanceof ChatMLChatWrapper, `resolved ${chatWrapper.wrapperName}`);
      assert.equal(model.detokenize(model.tokenize("Hello, world!\n")), "Hello, world!\n");
      assert.equal(model.tokens.eosString, variant.vocabularyPath === undefined ? "<|im_end|>" : "<|endoftext|>");

      // threads: 1: the library's default thread count makes tiny models ~800x slower on 2 cores.
      const context = await model.createContext({ threads: 1, contextSize: 256 });
      try {
        const session = new LlamaChatSession({ contextSequence: context.getSequence(), chatWrapper });
        let generated = 0;
        const text = await session.prompt("Say something.", {
          maxTokens: 8,
          temperature: 0,
          onToken: (tokens) => { generated += tokens.length; }
        });
        assert.ok(generated > 0, "no tokens generated");
        assert.equal(typeof text, "string");
      } finally {
        await context.dispose();
      }
    } finally {
      await model.dispose();
    }
  });
}

test("the same seed writes the same bytes; another seed other weights", async () => {
  const digest = async (name: string, seed: number): Promise<string> => {
    const path = join(dir, name);
    await synthesizeModel({ shape: "tiny", type: "f16", outputPath: path, seed });
    return createHash("sha256").update(await readFile(path)).digest("hex");
  };
  const first = await digest("seed-a.gguf", 11);
  assert.equal(await digest("seed-b.gguf", 11), first);
  assert.notEqual(await digest("seed-c.gguf", 12), first);
});

test("inspect reports a real model's facts", async () => {
  const path = fileURLToPath(new URL("../../../shared/models/stories260K.gguf", import.meta.url));
  const inspection = await inspectModel(path);
  assert.equal(inspection.architecture, "llama");
  assert.equal(inspection.chatTemplate, "none");
  assert.equal(inspection.quantization, "F32");
  assert.equal(inspection.vocabularySize, 512);
  assert.equal(inspection.tokenizerModel, "llama");
  assert.equal(inspection.contextLength, 2048);
  assert.equal(inspection.fileSize, 1_185_376);
});

/** Runs `parley model …` in process, capturing its output and exit code. */
async function runModelCommand(...args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  let stdout = "";
  let stderr = "";
  const program = new Command("parley")
    .exitOverride()
    .configureOutput({ writeOut: (text) => { stdout += text; }, writeErr: (text) => { stderr += text; } });
  registerModelCommand(program);
  const savedExitCode = process.exitCode;
  process.exitCode = undefined;
  try {
    await program.parseAsync(["model", ...args], { from: "user" });
    return { stdout, stderr, exitCode: Number(process.exitCode ?? 0) };
  } catch (error) {
    if (!(error instanceof CommanderError))
      throw error;
    return { stdout, stderr, exitCode: error.exitCode };
  } finally {
    process.exitCode = savedExitCode;
  }
}

test("parley model synth and inspect print results, and fail with one line and exit code 1", async () => {
  const path = join(dir, "cli.gguf");
  const synth = await runModelCommand("synth", "--shape", "tiny", "--type", "f16", "--out", path, "--seed", "3", "--name", "cli-demo");
  assert.equal(synth.exitCode, 0, synth.stderr);
  assert.match(synth.stdout, new RegExp(`^${path}\n  qwen2 tiny f16: [0-9.]+K parameters, [0-9.]+ KB, \\d+-token vocabulary`));

  const inspect = await runModelCommand("inspect", path, "--json");
  assert.equal(inspect.exitCode, 0, inspect.stderr);
  const facts = JSON.parse(inspect.stdout) as Record<string, unknown>;
  assert.equal(facts.name, "cli-demo");
  assert.equal(facts.quantization, "F16");
  assert.match((await runModelCommand("inspect", path)).stdout, /chat template +chatml/);

  const notGguf = fileURLToPath(new URL("../../../shared/models/README.md", import.meta.url));
  const failures = [
    ["synth", "--shape", "13b", "--out", path],
    ["synth", "--shape", "tiny", "--out", join(dir, "no-such-dir", "x.gguf")],
    ["synth", "--shape", "tiny", "--out", dir],
    ["synth", "--shape", "tiny", "--vocab", join(dir, "missing.gguf"), "--out", path],
    ["synth", "--shape", "tiny", "--vocab", notGguf, "--out", path],
    ["synth", "--shape", "tiny", "--seed", "x", "--out", path],
    ["inspect", notGguf],
    ["inspect", join(dir, "missing.gguf")]
  ];
  for (const args of failures) {
    const result = await runModelCommand(...args);
    assert.equal(result.exitCode, 1, args.join(" "));
    const errorLines = result.stderr.split("\n").filter((line) => line.startsWith("error:"));
    assert.equal(errorLines.length, 1, `${args.join(" ")}: ${result.stderr}`);
    assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
  }
});
