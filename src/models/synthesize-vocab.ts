import { stat } from "node:fs/promises";
import { gguf } from "@huggingface/gguf";
import { builtinVocabulary, TokenType } from "./builtin-vocab.js";
import { GgufError, GgufValueType, type GgufMetadataValue, type GgufScalar, type GgufScalarType } from "./gguf-format.js";

/** A tokenizer for a synthetic model: the `tokenizer.*` metadata entries and the token count. */
export interface Vocabulary {
  readonly metadata: ReadonlyMap<string, GgufMetadataValue>;
  readonly tokenCount: number;
  /** The vocab file it came from; `undefined` for the built-in vocabulary. */
  readonly source: string | undefined;
}

/**
 * Reads every `tokenizer.*` entry of a GGUF file with its GGUF value type, so the copy in a
 * synthetic model is byte-for-byte the same metadata (ids stay u32, token types i32, and so on).
 */
export async function readVocabulary(path: string): Promise<Vocabulary> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined || !info.isFile())
    throw new GgufError(`vocabulary file not found: ${path}`);
  let typed: Record<string, { value: unknown; type: number; subType?: number }>;
  try {
    ({ typedMetadata: typed } = await gguf(path, { typedMetadata: true, allowLocalFile: true }));
  } catch (error) {
    throw new GgufError(`cannot read ${path} as GGUF: ${error instanceof Error ? error.message : String(error)}`);
  }
  const metadata = new Map<string, GgufMetadataValue>();
  for (const [key, entry] of Object.entries(typed)) {
    if (key.startsWith("tokenizer."))
      metadata.set(key, toMetadataValue(key, entry));
  }
  const tokens = metadata.get("tokenizer.ggml.tokens");
  if (tokens?.type !== GgufValueType.Array || tokens.value.length === 0)
    throw new GgufError(`${path} has no tokenizer (no tokenizer.ggml.tokens)`);
  return { metadata, tokenCount: tokens.value.length, source: path };
}

export function readBuiltinVocabulary(): Vocabulary {
  const { metadata, tokenCount } = builtinVocabulary();
  return { metadata: new Map(metadata), tokenCount, source: undefined };
}

/**
 * Pads the vocabulary to `size` tokens with `[PAD<id>]` tokens of type unused, as llama.cpp's
 * converter does when a model's embedding has more rows than its tokenizer has tokens (Qwen2-7B:
 * 152064 rows, 151936 tokens). Per-token arrays (tokens, types, scores) grow together.
 */
export function padVocabulary(vocabulary: Vocabulary, size: number): Vocabulary {
  if (size <= vocabulary.tokenCount)
    return vocabulary;
  const metadata = new Map(vocabulary.metadata);
  const extend = (key: string, item: (id: number) => GgufScalar): void => {
    const entry = metadata.get(key);
    if (entry?.type !== GgufValueType.Array || entry.value.length !== vocabulary.tokenCount)
      return;
    const value = [...entry.value];
    for (let id = vocabulary.tokenCount; id < size; id++)
      value.push(item(id));
    metadata.set(key, { ...entry, value });
  };
  extend("tokenizer.ggml.tokens", (id) => `[PAD${id}]`);
  extend("tokenizer.ggml.token_type", () => TokenType.Unused);
  extend("tokenizer.ggml.scores", () => -1000);
  return { ...vocabulary, metadata, tokenCount: size };
}

function toMetadataValue(key: string, entry: { value: unknown; type: number; subType?: number }): GgufMetadataValue {
  if (entry.type === GgufValueType.Array) {
    const itemType = entry.subType;
    if (itemType === undefined || !isScalarType(itemType) || !Array.isArray(entry.value))
      throw new GgufError(`metadata ${key}: unsupported array (item type ${String(itemType)})`);
    return { type: GgufValueType.Array, itemType, value: entry.value as GgufScalar[] };
  }
  if (!isScalarType(entry.type))
    throw new GgufError(`metadata ${key}: unsupported value type ${entry.type}`);
  return { type: entry.type, value: entry.value as GgufScalar };
}

function isScalarType(type: number): type is GgufScalarType {
  return Number.isInteger(type) && type >= GgufValueType.Uint8 && type <= GgufValueType.Float64 && type !== GgufValueType.Array;
}
