import {
  GGUF_MAGIC,
  GGUF_VERSION,
  GgufError,
  GgufValueType,
  alignTo,
  type GgmlType,
  type GgufMetadata,
  type GgufMetadataValue,
  type GgufScalar,
  type GgufScalarType
} from "./gguf-format.js";

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order: the innermost (row) dimension first. */
  readonly dimensions: readonly number[];
  readonly type: GgmlType;
  /** Offset of the tensor's data from the start of the data section; a multiple of the alignment. */
  readonly offset: number;
}

/**
 * Encodes everything before the tensor data: header, metadata, tensor infos and the padding up
 * to the data section. Held in memory whole: it is a few MB even with a 150K-token vocabulary.
 */
export function encodeGgufHeader(metadata: GgufMetadata, tensors: readonly GgufTensorInfo[], alignment: number): Buffer {
  let size = 4 + 4 + 8 + 8;
  for (const [key, value] of metadata)
    size += stringSize(key) + 4 + valueSize(value);
  for (const tensor of tensors)
    size += stringSize(tensor.name) + 4 + 8 * tensor.dimensions.length + 4 + 8;
  const buffer = Buffer.alloc(alignTo(size, alignment));
  const writer = new ByteWriter(buffer);
  writer.u32(GGUF_MAGIC);
  writer.u32(GGUF_VERSION);
  writer.u64(tensors.length);
  writer.u64(metadata.size);
  for (const [key, value] of metadata) {
    writer.string(key);
    writer.u32(value.type);
    try {
      writer.value(value);
    } catch (error) {
      throw new GgufError(`metadata ${key}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  for (const tensor of tensors) {
    writer.string(tensor.name);
    writer.u32(tensor.dimensions.length);
    for (const dimension of tensor.dimensions)
      writer.u64(dimension);
    writer.u32(tensor.type);
    writer.u64(tensor.offset);
  }
  if (writer.offset !== size)
    throw new Error(`GGUF header size mismatch: measured ${size}, wrote ${writer.offset}`);
  return buffer;
}

function stringSize(text: string): number {
  return 8 + Buffer.byteLength(text, "utf8");
}

const fixedSizes: Partial<Record<GgufScalarType, number>> = {
  [GgufValueType.Uint8]: 1,
  [GgufValueType.Int8]: 1,
  [GgufValueType.Bool]: 1,
  [GgufValueType.Uint16]: 2,
  [GgufValueType.Int16]: 2,
  [GgufValueType.Uint32]: 4,
  [GgufValueType.Int32]: 4,
  [GgufValueType.Float32]: 4,
  [GgufValueType.Uint64]: 8,
  [GgufValueType.Int64]: 8,
  [GgufValueType.Float64]: 8
};

function scalarSize(type: GgufScalarType, value: GgufScalar): number {
  if (type === GgufValueType.String)
    return stringSize(typeof value === "string" ? value : String(value));
  const size = fixedSizes[type];
  if (size === undefined)
    throw new GgufError(`unknown GGUF value type ${type}`);
  return size;
}

function valueSize(value: GgufMetadataValue): number {
  if (value.type !== GgufValueType.Array)
    return scalarSize(value.type, value.value);
  let size = 4 + 8;
  const fixed = fixedSizes[value.itemType];
  if (fixed !== undefined)
    return size + fixed * value.value.length;
  for (const item of value.value)
    size += scalarSize(value.itemType, item);
  return size;
}

class ByteWriter {
  offset = 0;

  constructor(private readonly buffer: Buffer) {}

  u32(value: number): void {
    this.offset = this.buffer.writeUInt32LE(value, this.offset);
  }

  u64(value: number | bigint): void {
    this.offset = this.buffer.writeBigUInt64LE(BigInt(value), this.offset);
  }

  string(text: string): void {
    const length = this.buffer.write(text, this.offset + 8, "utf8");
    this.u64(length);
    this.offset += length;
  }

  value(value: GgufMetadataValue): void {
    if (value.type !== GgufValueType.Array) {
      this.scalar(value.type, value.value);
      return;
    }
    if ((value.itemType as number) === GgufValueType.Array)
      throw new GgufError("nested arrays are not supported");
    this.u32(value.itemType);
    this.u64(value.value.length);
    for (const item of value.value)
      this.scalar(value.itemType, item);
  }

  private scalar(type: GgufScalarType, value: GgufScalar): void {
    const buffer = this.buffer;
    switch (type) {
      case GgufValueType.String:
        return this.string(expect(value, "string"));
      case GgufValueType.Bool:
        this.offset = buffer.writeUInt8(expect(value, "boolean") ? 1 : 0, this.offset);
        return;
      case GgufValueType.Uint64:
        this.offset = buffer.writeBigUInt64LE(integer64(value), this.offset);
        return;
      case GgufValueType.Int64:
        this.offset = buffer.writeBigInt64LE(integer64(value), this.offset);
        return;
    }
    const number = expect(value, "number");
    switch (type) {
      case GgufValueType.Uint8: this.offset = buffer.writeUInt8(number, this.offset); return;
      case GgufValueType.Int8: this.offset = buffer.writeInt8(number, this.offset); return;
      case GgufValueType.Uint16: this.offset = buffer.writeUInt16LE(number, this.offset); return;
      case GgufValueType.Int16: this.offset = buffer.writeInt16LE(number, this.offset); return;
      case GgufValueType.Uint32: this.offset = buffer.writeUInt32LE(number, this.offset); return;
      case GgufValueType.Int32: this.offset = buffer.writeInt32LE(number, this.offset); return;
      case GgufValueType.Float32: this.offset = buffer.writeFloatLE(number, this.offset); return;
      case GgufValueType.Float64: this.offset = buffer.writeDoubleLE(number, this.offset); return;
    }
  }
}

function expect<T extends "string" | "number" | "boolean">(
  value: GgufScalar,
  kind: T
): T extends "string" ? string : T extends "number" ? number : boolean {
  if (typeof value !== kind)
    throw new GgufError(`expected a ${kind}, got ${typeof value}`);
  return value as never;
}

function integer64(value: GgufScalar): bigint {
  if (typeof value === "bigint")
    return value;
  if (typeof value === "number" && Number.isSafeInteger(value))
    return BigInt(value);
  throw new GgufError(`expected an integer, got ${typeof value} ${String(value)}`);
}
