import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { builtinVocabulary, gpt2ByteTokens } from "../../src/models/builtin-vocab.js";
import { GgmlType, GgufError, GgufValueType, type GgufMetadataValue } from "../../src/models/gguf-format.js";
import { planSyntheticModel, type SyntheticModelPlan } from "../../src/models/synthesize.js";
import { padVocabulary, readBuiltinVocabulary } from "../../src/models/synthesize-vocab.js";

const QWEN2_VOCAB = fileURLToPath(new URL("../../../shared/models/ggml-vocab-qwen2.gguf", import.meta.url));

function entry(plan: SyntheticModelPlan, key: string): GgufMetadataValue {
  const value = plan.metadata.get(key);
  assert.ok(value, `missing ${key}`);
  return value;
}

function arrayValues(value: GgufMetadataValue): readonly unknown[] {
  assert.equal(value.type, GgufValueType.Array);
  return value.value as readonly unknown[];
}

test("the 0.5b shape has Qwen2-0.5B's tensors and 494M parameters, with tied embeddings", async () => {
  const plan = await planSyntheticModel({ shape: "0.5b", type: "q8_0" });
  assert.equal(plan.parameterCount, 494_032_768);
  assert.equal(plan.vocabularySize, 151_936);
  assert.equal(plan.tensors.length, 2 + 24 * 12);
  const byName = new Map(plan.tensors.map((tensor) => [tensor.name, tensor]));
  assert.equal(byName.has("output.weight"), false);
  assert.deepEqual(byName.get("token_embd.weight")?.dimensions, [896, 151_936]);
  assert.deepEqual(byName.get("blk.0.attn_k.weight")?.dimensions, [896, 128]);
  assert.deepEqual(byName.get("blk.0.attn_k.bias")?.dimensions, [128]);
  assert.deepEqual(byName.get("blk.23.ffn_down.weight")?.dimensions, [4864, 896]);
  for (const tensor of plan.tensors)
    assert.equal(tensor.type, tensor.role === "weight" ? GgmlType.Q8_0 : GgmlType.F32, tensor.name);
  assert.deepEqual(entry(plan, "general.file_type"), { type: GgufValueType.Uint32, value: 7 });
  assert.deepEqual(entry(plan, "general.quantization_version"), { type: GgufValueType.Uint32, value: 2 });
  assert.deepEqual(entry(plan, "qwen2.attention.head_count_kv"), { type: GgufValueType.Uint32, value: 2 });
  assert.deepEqual(entry(plan, "qwen2.rope.freq_base"), { type: GgufValueType.Float32, value: 1_000_000 });
  // ~530 MB in Q8_0: 34 bytes per 32 weights, plus the header.
  assert.ok(plan.fileSize > 525e6 && plan.fileSize < 535e6, `${plan.fileSize}`);
});

test("the 7b shape copies the Qwen2 tokenizer with its types and pads it to 152064 tokens", async () => {
  const plan = await planSyntheticModel({ shape: "7b", type: "f16", vocabularyPath: QWEN2_VOCAB });
  assert.equal(plan.parameterCount, 7_615_616_512);
  assert.equal(plan.vocabularySize, 152_064);
  const byName = new Map(plan.tensors.map((tensor) => [tensor.name, tensor]));
  assert.deepEqual(byName.get("output.weight")?.dimensions, [3584, 152_064]);
  assert.deepEqual(byName.get("token_embd.weight")?.dimensions, [3584, 152_064]);
  assert.equal(byName.get("blk.0.attn_q.weight")?.type, GgmlType.F16);
  assert.deepEqual(entry(plan, "general.file_type"), { type: GgufValueType.Uint32, value: 1 });

  const tokens = arrayValues(entry(plan, "tokenizer.ggml.tokens"));
  const tokenTypes = entry(plan, "tokenizer.ggml.token_type");
  assert.equal(tokens.length, 152_064);
  assert.deepEqual(tokens.slice(151_643, 151_646), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
  assert.deepEqual(tokens.slice(151_936, 151_938), ["[PAD151936]", "[PAD151937]"]);
  assert.equal(tokens.at(-1), "[PAD152063]");
  assert.equal(tokenTypes.type === GgufValueType.Array && tokenTypes.itemType, GgufValueType.Int32);
  assert.equal(arrayValues(tokenTypes).length, 152_064);
  assert.equal(arrayValues(tokenTypes).at(-1), 5);
  assert.equal(arrayValues(entry(plan, "tokenizer.ggml.merges")).length, 151_387);
  assert.deepEqual(entry(plan, "tokenizer.ggml.eos_token_id"), { type: GgufValueType.Uint32, value: 151_643 });
  assert.equal(entry(plan, "tokenizer.ggml.pre").value, "qwen2");
  assert.match(String(entry(plan, "tokenizer.chat_template").value), /<\|im_start\|>/);
});

test("tiny takes its vocabulary size from the vocabulary", async () => {
  const builtin = await planSyntheticModel({ shape: "tiny" });
  assert.equal(builtin.vocabularySize, builtinVocabulary().tokenCount);
  assert.equal(builtin.type, "q8_0");
  for (const tensor of builtin.tensors)
    assert.ok(tensor.dimensions.every((dimension) => dimension % 32 === 0 || tensor.name === "token_embd.weight"), tensor.name);
  const qwen2 = await planSyntheticModel({ shape: "tiny", vocabularyPath: QWEN2_VOCAB, name: "demo", seed: 9 });
  assert.equal(qwen2.vocabularySize, 151_936);
  assert.equal(entry(qwen2, "general.name").value, "demo");
});

test("bad options are GgufErrors with a clear message", async () => {
  await assert.rejects(planSyntheticModel({ shape: "13b" }), (error: unknown) =>
    error instanceof GgufError && /unknown qwen2 shape "13b" \(known: tiny, 0\.5b, 7b\)/.test(error.message));
  await assert.rejects(planSyntheticModel({ shape: "tiny", architecture: "gpt9" }), /unknown architecture "gpt9"/);
  await assert.rejects(planSyntheticModel({ shape: "tiny", seed: -1 }), /seed must be a non-negative integer/);
  await assert.rejects(planSyntheticModel({ shape: "tiny", vocabularyPath: "/nonexistent/vocab.gguf" }), /vocabulary file not found/);
  const notGguf = fileURLToPath(new URL("../../../shared/models/README.md", import.meta.url));
  await assert.rejects(planSyntheticModel({ shape: "tiny", vocabularyPath: notGguf }), /cannot read .* as GGUF/);
});

test("the built-in vocabulary: 256 byte tokens, valid merges, ChatML special tokens", () => {
  const bytes = gpt2ByteTokens();
  assert.equal(bytes.length, 256);
  assert.equal(new Set(bytes).size, 256);
  assert.equal(bytes[0], "!");
  assert.equal(bytes[220], "Ġ"); // GPT-2's id of the space byte

  const vocabulary = readBuiltinVocabulary();
  const tokens = arrayValues(vocabulary.metadata.get("tokenizer.ggml.tokens")!) as string[];
  const types = arrayValues(vocabulary.metadata.get("tokenizer.ggml.token_type")!);
  const merges = arrayValues(vocabulary.metadata.get("tokenizer.ggml.merges")!) as string[];
  assert.equal(tokens.length, vocabulary.tokenCount);
  assert.equal(new Set(tokens).size, tokens.length);
  for (const merge of merges) {
    const [left, right] = merge.split(" ");
    assert.ok(tokens.includes(left!) && tokens.includes(right!) && tokens.includes(left! + right!), merge);
  }
  const id = (token: string): number => tokens.indexOf(token);
  assert.deepEqual(vocabulary.metadata.get("tokenizer.ggml.eos_token_id"), { type: GgufValueType.Uint32, value: id("<|im_end|>") });
  assert.deepEqual(vocabulary.metadata.get("tokenizer.ggml.bos_token_id"), { type: GgufValueType.Uint32, value: id("<|endoftext|>") });
  for (const special of ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert.equal(types[id(special)], 3, special);
  assert.equal(vocabulary.metadata.get("tokenizer.ggml.model")?.value, "gpt2");
});

test("padVocabulary grows tokens, types and scores together and never shrinks", () => {
  const vocabulary = {
    metadata: new Map<string, GgufMetadataValue>([
      ["tokenizer.ggml.tokens", { type: GgufValueType.Array, itemType: GgufValueType.String, value: ["a", "b"] }],
      ["tokenizer.ggml.scores", { type: GgufValueType.Array, itemType: GgufValueType.Float32, value: [0, -1] }],
      ["tokenizer.ggml.token_type", { type: GgufValueType.Array, itemType: GgufValueType.Int32, value: [1, 1] }]
    ]),
    tokenCount: 2,
    source: undefined
  };
  const padded = padVocabulary(vocabulary, 4);
  assert.equal(padded.tokenCount, 4);
  assert.deepEqual(padded.metadata.get("tokenizer.ggml.tokens")?.value, ["a", "b", "[PAD2]", "[PAD3]"]);
  assert.deepEqual(padded.metadata.get("tokenizer.ggml.scores")?.value, [0, -1, -1000, -1000]);
  assert.deepEqual(padded.metadata.get("tokenizer.ggml.token_type")?.value, [1, 1, 5, 5]);
  assert.equal(arrayValues(vocabulary.metadata.get("tokenizer.ggml.tokens")!).length, 2);
  assert.equal(padVocabulary(vocabulary, 1), vocabulary);
});
