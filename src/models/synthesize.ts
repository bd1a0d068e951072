import { stat } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import {
  countParameters,
  findArchitecture,
  findShape,
  weightFileType,
  weightGgmlType,
  weightTypes,
  type PlannedTensor,
  type WeightType
} from "./architectures.js";
import { GGUF_DEFAULT_ALIGNMENT, GgmlType, GgufError, GgufValueType, type GgufMetadata, type GgufMetadataValue } from "./gguf-format.js";
import { RandomWeightPool, SeededRandom, fillGaussianFloat32 } from "./gguf-random.js";
import { layoutGguf, writeGguf, type GgufTensorSource } from "./gguf-writer.js";
import { padVocabulary, readBuiltinVocabulary, readVocabulary, type Vocabulary } from "./synthesize-vocab.js";

export interface SyntheticModelOptions {
  /** `general.architecture` of the model to imitate. Defaults to `"qwen2"`. */
  readonly architecture?: string | undefined;
  /** A shape of that architecture, e.g. `"tiny"`, `"0.5b"`, `"7b"`. */
  readonly shape: string;
  /** Type of the weight matrices. Defaults to `"q8_0"`. */
  readonly type?: WeightType | undefined;
  /** A GGUF whose `tokenizer.*` metadata (tokenizer and chat template) is copied. Defaults to the built-in ChatML vocabulary. */
  readonly vocabularyPath?: string | undefined;
  /** `general.name`. Defaults to `"<architecture>-<shape>-synthetic"`. */
  readonly name?: string | undefined;
  /** The same seed writes the same bytes. Defaults to `0`. */
  readonly seed?: number | undefined;
}

export interface SynthesizeModelOptions extends SyntheticModelOptions {
  readonly outputPath: string;
  readonly onProgress?: ((bytesWritten: number, totalBytes: number) => void) | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface SyntheticModelPlan {
  readonly architecture: string;
  readonly shape: string;
  readonly type: WeightType;
  readonly seed: number;
  readonly metadata: GgufMetadata;
  readonly tensors: readonly PlannedTensor[];
  readonly parameterCount: number;
  /** Embedding rows, equal to the (padded) token count. */
  readonly vocabularySize: number;
  readonly fileSize: number;
}

export interface SynthesizedModel {
  readonly path: string;
  readonly plan: SyntheticModelPlan;
  readonly seconds: number;
}

/** Standard deviation of random weights and biases: small enough that activations stay finite. */
const WEIGHT_STD = 0.02;
const NORM_STD = 0.01;

/** Plans a synthetic model (metadata, tensors, parameter count, file size) without writing it. */
export async function planSyntheticModel(options: SyntheticModelOptions): Promise<SyntheticModelPlan> {
  const architecture = findArchitecture(options.architecture ?? "qwen2");
  const shape = findShape(architecture, options.shape);
  const type = options.type ?? "q8_0";
  if (!weightTypes.includes(type))
    throw new GgufError(`unknown weight type "${String(type)}" (known: ${weightTypes.join(", ")})`);
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new GgufError(`seed must be a non-negative integer, got ${seed}`);

  let vocabulary: Vocabulary = options.vocabularyPath === undefined
    ? readBuiltinVocabulary()
    : await readVocabulary(options.vocabularyPath);
  vocabulary = padVocabulary(vocabulary, shape.vocabularySize ?? 0);

  const tensors = architecture.tensors(shape, type, vocabulary.tokenCount);
  const name = options.name ?? `${architecture.name}-${options.shape}-synthetic`;
  const entries: [string, GgufMetadataValue][] = [
    ["general.architecture", string(architecture.name)],
    ["general.type", string("model")],
    ["general.name", string(name)],
    ["general.description", string(`Synthetic model with random weights (seed ${seed}), written by Parley. Its output is gibberish.`)],
    ["general.size_label", string(shape.sizeLabel)],
    ...architecture.metadata(shape),
    ["general.file_type", u32(weightFileType(type))],
    ["general.quantization_version", u32(2)],
    ["general.alignment", u32(GGUF_DEFAULT_ALIGNMENT)],
    ...vocabulary.metadata
  ];
  const metadata = new Map(entries);
  const { fileSize } = layoutGguf(metadata, tensors);
  return {
    architecture: architecture.name,
    shape: options.shape,
    type,
    seed,
    metadata,
    tensors,
    parameterCount: countParameters(tensors),
    vocabularySize: vocabulary.tokenCount,
    fileSize
  };
}

/**
 * Writes a GGUF with random weights in the exact tensor shapes of a real model, so that loading,
 * memory, speed, tokenization and chat templates are real while the output is gibberish.
 */
export async function synthesizeModel(options: SynthesizeModelOptions): Promise<SynthesizedModel> {
  const started = performance.now();
  if ((await stat(options.outputPath).catch(() => undefined))?.isDirectory() === true)
    throw new GgufError(`cannot write ${options.outputPath}: it is a directory`);
  const plan = await planSyntheticModel(options);
  const random = new SeededRandom(plan.seed);
  const pool = new RandomWeightPool(weightGgmlType(plan.type), WEIGHT_STD, random);
  const tensors: GgufTensorSource[] = plan.tensors.map((tensor) => ({
    ...tensor,
    fill: tensor.role === "weight"
      ? (target) => pool.fill(target, random)
      : (target) => fillGaussianFloat32(target, random, tensor.role === "norm" ? 1 : 0, tensor.role === "norm" ? NORM_STD : WEIGHT_STD)
  }));
  try {
    await writeGguf(options.outputPath, {
      metadata: plan.metadata,
      tensors,
      onProgress: options.onProgress,
      signal: options.signal
    });
  } catch (error) {
    throw describeWriteError(options.outputPath, error);
  }
  return { path: options.outputPath, plan, seconds: (performance.now() - started) / 1000 };
}

function describeWriteError(path: string, error: unknown): unknown {
  if (error instanceof Error && typeof (error as NodeJS.ErrnoException).code === "string") {
    // "EACCES: permission denied, open '/x.partial'" → "EACCES: permission denied"
    const reason = error.message.split(", ")[0] ?? error.message;
    return new GgufError(`cannot write ${path}: ${reason}`, { cause: error });
  }
  return error;
}

function string(value: string): GgufMetadataValue {
  return { type: GgufValueType.String, value };
}

function u32(value: number): GgufMetadataValue {
  return { type: GgufValueType.Uint32, value };
}
