import { GgmlType, GgufError, GgufValueType, countElements, type GgufMetadataValue } from "./gguf-format.js";

/** Type of the 2-D weight matrices; norms and biases are always F32, as llama.cpp's converter writes them. */
export type WeightType = "f16" | "q8_0" | "q5_0";
export const weightTypes: readonly WeightType[] = ["f16", "q8_0", "q5_0"];

/** Each weight type's ggml tensor type, and the llama_ftype a file of it declares (`general.file_type`). */
const WEIGHT_TYPE_CODES = {
  f16: { ggml: GgmlType.F16, fileType: 1 }, // MOSTLY_F16
  q8_0: { ggml: GgmlType.Q8_0, fileType: 7 }, // MOSTLY_Q8_0
  q5_0: { ggml: GgmlType.Q5_0, fileType: 8 }, // MOSTLY_Q5_0
} as const satisfies Record<WeightType, { ggml: GgmlType; fileType: number }>;

/** The ggml type of a weight type's matrices. */
export function weightGgmlType(type: WeightType): (typeof WEIGHT_TYPE_CODES)[WeightType]["ggml"] {
  return WEIGHT_TYPE_CODES[type].ggml;
}

/** The llama_ftype of a file whose matrices are of this type. */
export function weightFileType(type: WeightType): number {
  return WEIGHT_TYPE_CODES[type].fileType;
}

export type TensorRole = "weight" | "norm" | "bias";

export interface PlannedTensor {
  readonly name: string;
  /** ggml order: the innermost (row) dimension first. */
  readonly dimensions: readonly number[];
  readonly type: GgmlType;
  readonly role: TensorRole;
}

export interface ModelShape {
  /** `general.size_label`, e.g. "0.5B". */
  readonly sizeLabel: string;
  readonly embeddingLength: number;
  readonly blockCount: number;
  readonly headCount: number;
  readonly headCountKv: number;
  readonly feedForwardLength: number;
  readonly contextLength: number;
  /** Embedding rows; a smaller vocabulary is padded up to it. `undefined`: the vocabulary's own size. */
  readonly vocabularySize: number | undefined;
  /** No `output.weight`: the output projection reuses `token_embd.weight`. */
  readonly tiedEmbeddings: boolean;
  readonly ropeFreqBase: number;
  readonly rmsEpsilon: number;
}

export interface Architecture {
  /** `general.architecture`, as llama.cpp names it. */
  readonly name: string;
  readonly shapes: Readonly<Record<string, ModelShape>>;
  /** The `<architecture>.*` hyperparameter keys, in the order llama.cpp's converter writes them. */
  metadata(shape: ModelShape): [string, GgufMetadataValue][];
  tensors(shape: ModelShape, weightType: WeightType, vocabularySize: number): PlannedTensor[];
}

const qwen2: Architecture = {
  name: "qwen2",
  shapes: {
    // Small enough to load and generate in milliseconds; every dimension a multiple of 32 so Q8_0 works.
    tiny: {
      sizeLabel: "tiny", embeddingLength: 64, blockCount: 2, headCount: 4, headCountKv: 2,
      feedForwardLength: 128, contextLength: 32768, vocabularySize: undefined, tiedEmbeddings: true,
      ropeFreqBase: 1_000_000, rmsEpsilon: 1e-6
    },
    // Qwen2-0.5B(-Instruct) config.json.
    "0.5b": {
      sizeLabel: "0.5B", embeddingLength: 896, blockCount: 24, headCount: 14, headCountKv: 2,
      feedForwardLength: 4864, contextLength: 32768, vocabularySize: 151936, tiedEmbeddings: true,
      ropeFreqBase: 1_000_000, rmsEpsilon: 1e-6
    },
    // Qwen2-7B(-Instruct) config.json.
    "7b": {
      sizeLabel: "7B", embeddingLength: 3584, blockCount: 28, headCount: 28, headCountKv: 4,
      feedForwardLength: 18944, contextLength: 32768, vocabularySize: 152064, tiedEmbeddings: false,
      ropeFreqBase: 1_000_000, rmsEpsilon: 1e-6
    }
  },
  metadata(shape) {
    return [
      ["qwen2.block_count", u32(shape.blockCount)],
      ["qwen2.context_length", u32(shape.contextLength)],
      ["qwen2.embedding_length", u32(shape.embeddingLength)],
      ["qwen2.feed_forward_length", u32(shape.feedForwardLength)],
      ["qwen2.attention.head_count", u32(shape.headCount)],
      ["qwen2.attention.head_count_kv", u32(shape.headCountKv)],
      ["qwen2.rope.freq_base", f32(shape.ropeFreqBase)],
      ["qwen2.attention.layer_norm_rms_epsilon", f32(shape.rmsEpsilon)]
    ];
  },
  tensors(shape, weightType, vocabularySize) {
    const weight = weightGgmlType(weightType);
    const embedding = shape.embeddingLength;
    const kvLength = (embedding / shape.headCount) * shape.headCountKv;
    const matrix = (name: string, columns: number, rows: number): PlannedTensor =>
      ({ name, dimensions: [columns, rows], type: weight, role: "weight" });
    const vector = (name: string, length: number, role: TensorRole): PlannedTensor =>
      ({ name, dimensions: [length], type: GgmlType.F32, role });

    const tensors = [matrix("token_embd.weight", embedding, vocabularySize), vector("output_norm.weight", embedding, "norm")];
    if (!shape.tiedEmbeddings)
      tensors.push(matrix("output.weight", embedding, vocabularySize));
    for (let block = 0; block < shape.blockCount; block++) {
      const prefix = `blk.${block}`;
      tensors.push(
        vector(`${prefix}.attn_norm.weight`, embedding, "norm"),
        matrix(`${prefix}.attn_q.weight`, embedding, embedding),
        vector(`${prefix}.attn_q.bias`, embedding, "bias"),
        matrix(`${prefix}.attn_k.weight`, embedding, kvLength),
        vector(`${prefix}.attn_k.bias`, kvLength, "bias"),
        matrix(`${prefix}.attn_v.weight`, embedding, kvLength),
        vector(`${prefix}.attn_v.bias`, kvLength, "bias"),
        matrix(`${prefix}.attn_output.weight`, embedding, embedding),
        vector(`${prefix}.ffn_norm.weight`, embedding, "norm"),
        matrix(`${prefix}.ffn_gate.weight`, embedding, shape.feedForwardLength),
        matrix(`${prefix}.ffn_up.weight`, embedding, shape.feedForwardLength),
        matrix(`${prefix}.ffn_down.weight`, shape.feedForwardLength, embedding)
      );
    }
    return tensors;
  }
};

export const architectures: Readonly<Record<string, Architecture>> = { qwen2 };

export function findArchitecture(name: string): Architecture {
  const architecture = Object.hasOwn(architectures, name) ? architectures[name] : undefined;
  if (architecture === undefined)
    throw new GgufError(`unknown architecture "${name}" (known: ${Object.keys(architectures).join(", ")})`);
  return architecture;
}

export function findShape(architecture: Architecture, name: string): ModelShape {
  const shape = Object.hasOwn(architecture.shapes, name) ? architecture.shapes[name] : undefined;
  if (shape === undefined)
    throw new GgufError(`unknown ${architecture.name} shape "${name}" (known: ${Object.keys(architecture.shapes).join(", ")})`);
  return shape;
}

export function countParameters(tensors: readonly { readonly dimensions: readonly number[] }[]): number {
  let count = 0;
  for (const tensor of tensors)
    count += countElements(tensor.dimensions);
  return count;
}

function u32(value: number): GgufMetadataValue {
  return { type: GgufValueType.Uint32, value };
}

function f32(value: number): GgufMetadataValue {
  return { type: GgufValueType.Float32, value };
}
