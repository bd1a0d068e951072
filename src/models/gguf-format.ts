// The parts of the GGUF v3 format (ggml's docs/gguf.md) that Parley writes: value types, the
// tensor types of synthetic models, and the byte sizes that follow from them.

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

export const GgufValueType = {
  Uint8: 0,
  Int8: 1,
  Uint16: 2,
  Int16: 3,
  Uint32: 4,
  Int32: 5,
  Float32: 6,
  Bool: 7,
  String: 8,
  Array: 9,
  Uint64: 10,
  Int64: 11,
  Float64: 12
} as const;
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];
export type GgufScalarType = Exclude<GgufValueType, typeof GgufValueType.Array>;

export type GgufScalar = number | bigint | boolean | string;

/** A metadata value with its GGUF type, so that copying a file's metadata keeps its types. */
export type GgufMetadataValue =
  | { readonly type: GgufScalarType; readonly value: GgufScalar }
  | { readonly type: typeof GgufValueType.Array; readonly itemType: GgufScalarType; readonly value: readonly GgufScalar[] };

/** Key order is kept: it is the order the entries are written in. */
export type GgufMetadata = ReadonlyMap<string, GgufMetadataValue>;

/** The ggml tensor types that synthetic models use. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q5_0: 6,
  Q8_0: 8
} as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

interface GgmlTypeLayout {
  readonly name: string;
  /** Elements per block; a tensor's first dimension must be a multiple of it. */
  readonly blockElements: number;
  readonly blockBytes: number;
}

const layouts: Readonly<Record<GgmlType, GgmlTypeLayout>> = {
  [GgmlType.F32]: { name: "F32", blockElements: 1, blockBytes: 4 },
  [GgmlType.F16]: { name: "F16", blockElements: 1, blockBytes: 2 },
  // Q5_0: an f16 scale, the 32 quants' fifth bits (4 bytes), then their low nibbles (16 bytes).
  [GgmlType.Q5_0]: { name: "Q5_0", blockElements: 32, blockBytes: 22 },
  // Q8_0: an f16 scale followed by 32 int8 quants.
  [GgmlType.Q8_0]: { name: "Q8_0", blockElements: 32, blockBytes: 34 }
};

export function ggmlTypeLayout(type: GgmlType): GgmlTypeLayout {
  return layouts[type];
}

/** The number of elements of a tensor with these dimensions (ggml order, innermost first). */
export function countElements(dimensions: readonly number[]): number {
  let count = 1;
  for (const dimension of dimensions)
    count *= dimension;
  return count;
}

/** Bytes of tensor data; throws when the first dimension does not fill whole blocks. */
export function tensorByteLength(dimensions: readonly number[], type: GgmlType): number {
  const layout = ggmlTypeLayout(type);
  const rowLength = dimensions[0] ?? 1;
  if (rowLength % layout.blockElements !== 0)
    throw new GgufError(`a ${layout.name} tensor needs a first dimension that is a multiple of ${layout.blockElements}, got ${rowLength}`);
  return (countElements(dimensions) / layout.blockElements) * layout.blockBytes;
}

export function alignTo(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment;
}

/** A GGUF file that cannot be written or read as asked; its message is fit for a user. */
export class GgufError extends Error {
  override name = "GgufError";
}
