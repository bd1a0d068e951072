import { stat } from "node:fs/promises";
import { GgmlType as LlamaGgmlType, GgufFileType, readGgufFileInfo, type GgufFileInfo } from "node-llama-cpp";
import { countElements, GgufError } from "./gguf-format.js";

/** The chat template family, judged by its marker tokens as llama.cpp's template detection does. */
export type ChatTemplateKind = "chatml" | "llama2" | "llama3" | "gemma" | "other" | "none";

export interface ModelInspection {
  readonly path: string;
  readonly fileSize: number;
  readonly architecture: string;
  readonly name: string | undefined;
  /** The sum of the tensors' element counts. */
  readonly parameterCount: number;
  readonly tensorCount: number;
  /** The context length the model was trained with (`<architecture>.context_length`). */
  readonly contextLength: number | undefined;
  /** The file type (`general.file_type`, e.g. "Q8_0", "Q4_K_M"), else the type holding most parameters. */
  readonly quantization: string;
  readonly chatTemplate: ChatTemplateKind;
  readonly vocabularySize: number | undefined;
  /** `tokenizer.ggml.model`, e.g. "gpt2" (byte-level BPE) or "llama" (SentencePiece). */
  readonly tokenizerModel: string | undefined;
}

/** Reads a GGUF file's header (metadata and tensor infos, not the weights) and summarises it. */
export async function inspectModel(path: string): Promise<ModelInspection> {
  const file = await stat(path).catch(() => undefined);
  if (file === undefined || !file.isFile())
    throw new GgufError(`model file not found: ${path}`);
  let info: GgufFileInfo;
  try {
    info = await readGgufFileInfo(path, { logWarnings: false, sourceType: "filesystem" });
  } catch (error) {
    throw new GgufError(`cannot read ${path} as GGUF: ${error instanceof Error ? error.message : String(error)}`);
  }
  const metadata = info.metadata;
  const tensors = (info.tensorInfo ?? []).map((tensor) => ({
    name: tensor.name,
    type: tensor.ggmlType,
    elements: countElements(tensor.dimensions.map(Number))
  }));
  const tokens = metadata.tokenizer?.ggml?.tokens;
  const embeddingRows = info.tensorInfo?.find((tensor) => tensor.name === "token_embd.weight")?.dimensions[1];
  const contextLength = (info.architectureMetadata as { context_length?: unknown }).context_length;
  return {
    path,
    fileSize: file.size,
    architecture: String(metadata.general?.architecture ?? "unknown"),
    name: metadata.general?.name,
    parameterCount: tensors.reduce((sum, tensor) => sum + tensor.elements, 0),
    tensorCount: tensors.length,
    contextLength: typeof contextLength === "number" ? contextLength : undefined,
    quantization: quantizationName(metadata.general?.file_type, tensors),
    chatTemplate: classifyChatTemplate(metadata.tokenizer?.chat_template),
    vocabularySize: tokens?.length ?? (embeddingRows === undefined ? undefined : Number(embeddingRows)),
    tokenizerModel: metadata.tokenizer?.ggml?.model
  };
}

export function classifyChatTemplate(template: string | undefined): ChatTemplateKind {
  if (template === undefined || template.trim() === "")
    return "none";
  if (template.includes("<|im_start|>"))
    return "chatml";
  if (template.includes("<|start_header_id|>") && template.includes("<|end_header_id|>"))
    return "llama3";
  if (template.includes("[INST]"))
    return "llama2";
  if (template.includes("<start_of_turn>"))
    return "gemma";
  return "other";
}

function quantizationName(fileType: number | undefined, tensors: readonly { type: number; elements: number }[]): string {
  if (fileType !== undefined) {
    const name = GgufFileType[fileType];
    if (name !== undefined)
      return name.replace(/^(MOSTLY|ALL)_/, "");
  }
  const elementsByType = new Map<number, number>();
  for (const tensor of tensors)
    elementsByType.set(tensor.type, (elementsByType.get(tensor.type) ?? 0) + tensor.elements);
  let dominant: number | undefined;
  for (const [type, elements] of elementsByType)
    if (dominant === undefined || elements > (elementsByType.get(dominant) ?? 0))
      dominant = type;
  return dominant === undefined ? "unknown" : (LlamaGgmlType[dominant] ?? `ggml type ${dominant}`);
}
