/**
 * Turns what the user passed as `--model` into a local GGUF path: a file path as it is,
 * or an `hf:user/repo:quant` / `https://…gguf` URI downloaded once into the cache
 * directory by node-llama-cpp's downloader (with its progress bar). A small manifest maps
 * each URI to its file, so a model downloaded once is found again offline.
 */
import { access, mkdir, readFile, writeFile, constants } from "node:fs/promises";
import path from "node:path";
import { resolveModelFile } from "node-llama-cpp";

/** Qwen2-0.5B-Instruct, Q4_K_M: small, real, and chat-tuned; what `parley serve` runs by default. */
export const DEFAULT_MODEL_URI = "hf:Qwen/Qwen2-0.5B-Instruct-GGUF:Q4_K_M";

export function isRemoteModelUri(source: string): boolean {
  return /^(hf:|huggingface:|https?:\/\/)/i.test(source);
}

/**
 * The model name a source is served as when no `--model-name` is given: a file's name
 * without `.gguf`, or an `hf:` URI's `user/repo` without a `-GGUF` suffix.
 */
export function defaultModelName(source: string): string {
  const hf = /^(?:hf|huggingface):([^:/\s]+\/[^:/\s]+)/i.exec(source);
  if (hf?.[1] !== undefined) return hf[1].replace(/-GGUF$/i, "");
  const base = path.basename(source.split(/[?#]/)[0] ?? source);
  return base.replace(/\.gguf$/i, "");
}

export class ModelSourceError extends Error {
  override readonly name = "ModelSourceError";
}

interface Manifest {
  [uri: string]: string;
}

async function readManifest(file: string): Promise<Manifest> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, "utf8"));
    return typeof parsed === "object" && parsed !== null ? (parsed as Manifest) : {};
  } catch {
    return {};
  }
}

async function isReadable(file: string): Promise<boolean> {
  try {
    await access(file, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

export interface ResolveOptions {
  /** Where downloads go. */
  readonly cacheDir: string;
  /** Show node-llama-cpp's download progress bar. Defaults to true. */
  readonly progress?: boolean;
  readonly signal?: AbortSignal;
}

export async function resolveModelSource(source: string, options: ResolveOptions): Promise<string> {
  if (!isRemoteModelUri(source)) {
    const file = path.resolve(source);
    if (!(await isReadable(file))) throw new ModelSourceError(`Model file not found or not readable: ${file}`);
    return file;
  }
  await mkdir(options.cacheDir, { recursive: true });
  const manifestFile = path.join(options.cacheDir, "downloads.json");
  const manifest = await readManifest(manifestFile);
  const known = manifest[source];
  if (known !== undefined && (await isReadable(known))) return known;
  let file: string;
  try {
    file = await resolveModelFile(source, {
      directory: options.cacheDir,
      cli: options.progress ?? true,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ModelSourceError(`Could not download ${source} into ${options.cacheDir}: ${reason}`);
  }
  await writeFile(manifestFile, JSON.stringify({ ...manifest, [source]: file }, null, 2));
  return file;
}
