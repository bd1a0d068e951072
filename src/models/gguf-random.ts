import { GgmlType, ggmlTypeLayout } from "./gguf-format.js";

/** A seeded PRNG (sfc32): the same seed gives the same sequence on every machine. */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spareGaussian: number | undefined;

  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = (seed ^ 0xb7e15162) >>> 0;
    this.d = (Math.floor(seed / 0x1_0000_0000) ^ 0x85a308d3) >>> 0;
    for (let i = 0; i < 16; i++)
      this.nextUint32();
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  nextFloat(): number {
    return this.nextUint32() / 0x1_0000_0000;
  }

  /** Uniform integer in [0, bound). */
  nextInt(bound: number): number {
    return Math.floor(this.nextFloat() * bound);
  }

  /** Normal with the given mean and standard deviation (Box-Muller). */
  nextGaussian(mean = 0, std = 1): number {
    let value = this.spareGaussian;
    if (value === undefined) {
      const u = 1 - this.nextFloat();
      const v = this.nextFloat();
      const radius = Math.sqrt(-2 * Math.log(u));
      value = radius * Math.cos(2 * Math.PI * v);
      this.spareGaussian = radius * Math.sin(2 * Math.PI * v);
    } else {
      this.spareGaussian = undefined;
    }
    return mean + std * value;
  }
}

const float32 = new Float32Array(1);
const uint32 = new Uint32Array(float32.buffer);

/** IEEE half-precision bits of `value`, rounded to nearest even. */
export function float16Bits(value: number): number {
  float32[0] = value;
  const bits = uint32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff)
    return sign | 0x7c00 | (mantissa === 0 ? 0 : 0x200);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f)
    return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10)
      return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    const rounded = mantissa >>> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    return sign | (rounded + (remainder > halfway || (remainder === halfway && (rounded & 1) === 1) ? 1 : 0));
  }
  const rounded = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent.
  return sign | (rounded + (remainder > 0x1000 || (remainder === 0x1000 && (rounded & 1) === 1) ? 1 : 0));
}

/** Pool size per weight type: enough variety that copies at random offsets look random. */
const POOL_BYTES = 2 * 1024 * 1024;
/** Longest run copied from one pool offset. */
const SEGMENT_BYTES = 64 * 1024;

/**
 * Precomputed random weights (normal, mean 0) in one ggml encoding. Filling a tensor copies runs
 * of whole elements or blocks from random offsets, which is memcpy-fast: writing a 7B model is
 * bound by the disk, not by random number generation.
 */
export class RandomWeightPool {
  readonly bytes: Buffer;
  readonly unitBytes: number;

  constructor(readonly type: typeof GgmlType.F16 | typeof GgmlType.Q8_0 | typeof GgmlType.Q5_0, std: number, random: SeededRandom) {
    const layout = ggmlTypeLayout(type);
    this.unitBytes = layout.blockBytes;
    const units = Math.floor(POOL_BYTES / layout.blockBytes);
    this.bytes = Buffer.alloc(units * layout.blockBytes);
    if (type === GgmlType.F16) {
      for (let i = 0; i < units; i++)
        this.bytes.writeUInt16LE(float16Bits(random.nextGaussian(0, std)), i * 2);
      return;
    }
    const values = new Float64Array(32);
    for (let block = 0; block < units; block++) {
      let absMax = 0;
      let signedMax = 0;
      for (let i = 0; i < 32; i++) {
        values[i] = random.nextGaussian(0, std);
        if (Math.abs(values[i]!) > absMax) {
          absMax = Math.abs(values[i]!);
          signedMax = values[i]!;
        }
      }
      const offset = block * layout.blockBytes;
      if (type === GgmlType.Q8_0) {
        const scale = absMax / 127;
        this.bytes.writeUInt16LE(float16Bits(scale), offset);
        for (let i = 0; i < 32; i++)
          this.bytes.writeInt8(scale === 0 ? 0 : Math.round(values[i]! / scale), offset + 2 + i);
      } else {
        // As ggml's quantize_row_q5_0_ref: the largest value maps to -16, quants are 0..31 with
        // 16 subtracted; value i's fifth bit is bit i of qh, its low four bits a nibble of qs
        // (values 0-15 low nibbles, 16-31 high nibbles).
        const scale = signedMax / -16;
        const inverse = scale === 0 ? 0 : 1 / scale;
        let fifthBits = 0;
        this.bytes.writeUInt16LE(float16Bits(scale), offset);
        for (let i = 0; i < 16; i++) {
          const low = Math.min(31, Math.trunc(values[i]! * inverse + 16.5));
          const high = Math.min(31, Math.trunc(values[i + 16]! * inverse + 16.5));
          this.bytes.writeUInt8((low & 0x0f) | ((high & 0x0f) << 4), offset + 6 + i);
          fifthBits |= ((low >> 4) & 1) << i;
          fifthBits |= ((high >> 4) & 1) << (i + 16);
        }
        this.bytes.writeUInt32LE(fifthBits >>> 0, offset + 2);
      }
    }
  }

  /** Fills `target` (whole units) with runs copied from random unit-aligned pool offsets. */
  fill(target: Buffer, random: SeededRandom): void {
    const units = this.bytes.length / this.unitBytes;
    const segmentUnits = Math.max(1, Math.floor(SEGMENT_BYTES / this.unitBytes));
    let done = 0;
    while (done < target.length) {
      const runUnits = Math.min(segmentUnits, (target.length - done) / this.unitBytes);
      const start = random.nextInt(units - runUnits + 1) * this.unitBytes;
      done += this.bytes.copy(target, done, start, start + runUnits * this.unitBytes);
    }
  }
}

/** Fills an F32 tensor element by element: for small tensors (norms, biases) only. */
export function fillGaussianFloat32(target: Buffer, random: SeededRandom, mean: number, std: number): void {
  for (let offset = 0; offset < target.length; offset += 4)
    target.writeFloatLE(random.nextGaussian(mean, std), offset);
}
