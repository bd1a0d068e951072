import { randomBytes } from "node:crypto";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import {
  GGUF_DEFAULT_ALIGNMENT,
  GgufError,
  GgufValueType,
  alignTo,
  ggmlTypeLayout,
  tensorByteLength,
  type GgmlType,
  type GgufMetadata
} from "./gguf-format.js";
import { encodeGgufHeader, type GgufTensorInfo } from "./gguf-header.js";

export interface GgufTensorSource {
  readonly name: string;
  /** ggml order: the innermost (row) dimension first. */
  readonly dimensions: readonly number[];
  readonly type: GgmlType;
  /**
   * Writes the tensor's bytes from `byteOffset` on into the whole of `target`. Called in order
   * of `byteOffset`, with `target` a whole number of the type's blocks.
   */
  fill(target: Buffer, byteOffset: number): void;
}

export interface WriteGgufOptions {
  readonly metadata: GgufMetadata;
  readonly tensors: readonly GgufTensorSource[];
  /** Called after each chunk reaches the file. */
  readonly onProgress?: ((bytesWritten: number, totalBytes: number) => void) | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface GgufLayout {
  readonly alignment: number;
  readonly header: Buffer;
  readonly tensors: readonly (GgufTensorInfo & { readonly byteLength: number })[];
  /** File offset of the data section. */
  readonly dataOffset: number;
  readonly fileSize: number;
}

/** Write chunk size: large enough that syscalls are cheap, small enough to stay out of the way. */
const CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Lays out the file: alignment from `general.alignment` when present (else 32), each tensor's
 * data offset, and the encoded header.
 */
export function layoutGguf(metadata: GgufMetadata, tensors: readonly Omit<GgufTensorSource, "fill">[]): GgufLayout {
  const alignmentEntry = metadata.get("general.alignment");
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (alignmentEntry !== undefined) {
    if (alignmentEntry.type !== GgufValueType.Uint32 || typeof alignmentEntry.value !== "number" ||
      alignmentEntry.value <= 0 || alignmentEntry.value % 8 !== 0)
      throw new GgufError("general.alignment must be a u32 multiple of 8");
    alignment = alignmentEntry.value;
  }
  const names = new Set<string>();
  let dataSize = 0;
  const infos = tensors.map((tensor) => {
    if (names.has(tensor.name))
      throw new GgufError(`duplicate tensor name ${tensor.name}`);
    names.add(tensor.name);
    const offset = alignTo(dataSize, alignment);
    const byteLength = tensorByteLength(tensor.dimensions, tensor.type);
    dataSize = offset + byteLength;
    return { name: tensor.name, dimensions: tensor.dimensions, type: tensor.type, offset, byteLength };
  });
  const header = encodeGgufHeader(metadata, infos, alignment);
  return { alignment, header, tensors: infos, dataOffset: header.length, fileSize: header.length + dataSize };
}

/**
 * Streams a GGUF v3 file to `path`, holding at most two chunks of tensor data in memory. The file
 * is written beside `path` under a unique name and renamed into place at the end, so `path` never
 * holds a partial model, even with two writers racing; on failure or abort the partial file is removed.
 */
export async function writeGguf(path: string, options: WriteGgufOptions): Promise<GgufLayout> {
  const layout = layoutGguf(options.metadata, options.tensors);
  const partialPath = `${path}.${randomBytes(4).toString("hex")}.partial`;
  const handle = await open(partialPath, "w");
  const sink = new ChunkSink(handle, layout.fileSize, options.onProgress);
  try {
    await sink.writeAll(layout.header);
    let position = 0;
    for (const [index, tensor] of options.tensors.entries()) {
      const info = layout.tensors[index]!;
      await sink.zeros(info.offset - position);
      await sink.fill(info.byteLength, ggmlTypeLayout(tensor.type).blockBytes, (target, offset) => {
        options.signal?.throwIfAborted();
        tensor.fill(target, offset);
      });
      position = info.offset + info.byteLength;
    }
    await sink.close();
    await handle.close();
    await rename(partialPath, path);
    return layout;
  } catch (error) {
    await sink.settle();
    await handle.close().catch(() => undefined);
    await rm(partialPath, { force: true });
    throw error;
  }
}

/** Double-buffered sequential writer: one chunk fills while the previous one is written. */
class ChunkSink {
  private current = Buffer.allocUnsafe(CHUNK_BYTES);
  private spare = Buffer.allocUnsafe(CHUNK_BYTES);
  private used = 0;
  private written = 0;
  private pending: Promise<void> = Promise.resolve();

  constructor(
    private readonly handle: FileHandle,
    private readonly totalBytes: number,
    private readonly onProgress: ((bytesWritten: number, totalBytes: number) => void) | undefined
  ) {}

  async writeAll(bytes: Buffer): Promise<void> {
    await this.fill(bytes.length, 1, (target, offset) => bytes.copy(target, 0, offset, offset + target.length));
  }

  async zeros(count: number): Promise<void> {
    await this.fill(count, 1, (target) => target.fill(0));
  }

  async fill(byteLength: number, unitBytes: number, fill: (target: Buffer, byteOffset: number) => void): Promise<void> {
    let offset = 0;
    while (offset < byteLength) {
      const room = Math.min(CHUNK_BYTES - this.used, byteLength - offset);
      const length = room - (room % unitBytes);
      if (length === 0) {
        await this.flush();
        continue;
      }
      fill(this.current.subarray(this.used, this.used + length), offset);
      this.used += length;
      offset += length;
      if (this.used === CHUNK_BYTES)
        await this.flush();
    }
  }

  async close(): Promise<void> {
    await this.flush();
    await this.pending;
    if (this.written !== this.totalBytes)
      throw new Error(`GGUF size mismatch: planned ${this.totalBytes} bytes, wrote ${this.written}`);
  }

  /** Waits for the write in flight, if any, ignoring its outcome: before closing after a failure. */
  async settle(): Promise<void> {
    await this.pending.catch(() => undefined);
  }

  private async flush(): Promise<void> {
    await this.pending;
    if (this.used === 0)
      return;
    const chunk = this.current;
    const length = this.used;
    this.current = this.spare;
    this.spare = chunk;
    this.used = 0;
    this.pending = this.writeChunk(chunk, length);
    // The rejection is observed by the next flush; this only keeps it from counting as unhandled.
    this.pending.catch(() => undefined);
  }

  private async writeChunk(chunk: Buffer, length: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesWritten } = await this.handle.write(chunk, done, length - done);
      done += bytesWritten;
    }
    this.written += length;
    this.onProgress?.(this.written, this.totalBytes);
  }
}
