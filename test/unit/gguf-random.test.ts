import { test } from "node:test";
import assert from "node:assert/strict";
import { GgmlType } from "../../src/models/gguf-format.js";
import { RandomWeightPool, SeededRandom, fillGaussianFloat32, float16Bits } from "../../src/models/gguf-random.js";

/** Decodes IEEE half-precision bits, to check the encoder and the pools. */
function float16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0)
    return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f)
    return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

test("float16Bits encodes like IEEE half precision, rounding to nearest even", () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [0.1, 0x2e66],
    [65504, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-Infinity, 0xfc00], [2 ** -24, 0x0001],
    [2 ** -14, 0x0400], [2 ** -26, 0x0000], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02]
  ];
  for (const [value, bits] of cases)
    assert.equal(float16Bits(value), bits, `${value}`);
  assert.ok(Number.isNaN(float16Value(float16Bits(NaN))));
  for (const value of [0.02, -0.013, 1.5e-5, 3.3, -1234.5])
    assert.ok(Math.abs(float16Value(float16Bits(value)) - value) <= Math.max(Math.abs(value) * 2 ** -11, 2 ** -25), `${value}`);
  // Subnormals round to the nearest multiple of 2^-24, ties to even.
  assert.deepEqual([2 ** -25, 3 * 2 ** -26, 1.5 * 2 ** -24].map(float16Bits), [0, 1, 2]);
});

test("SeededRandom is reproducible per seed and roughly standard normal", () => {
  const a = new SeededRandom(42);
  const b = new SeededRandom(42);
  const c = new SeededRandom(43);
  const first = Array.from({ length: 8 }, () => a.nextUint32());
  assert.deepEqual(first, Array.from({ length: 8 }, () => b.nextUint32()));
  assert.notDeepEqual(first, Array.from({ length: 8 }, () => c.nextUint32()));

  const random = new SeededRandom(1);
  let sum = 0;
  let squares = 0;
  const count = 20000;
  for (let i = 0; i < count; i++) {
    const value = random.nextGaussian();
    sum += value;
    squares += value * value;
  }
  const mean = sum / count;
  assert.ok(Math.abs(mean) < 0.05, `mean ${mean}`);
  assert.ok(Math.abs(Math.sqrt(squares / count - mean * mean) - 1) < 0.05);
  for (let i = 0; i < 1000; i++) {
    const value = random.nextInt(7);
    assert.ok(Number.isInteger(value) && value >= 0 && value < 7);
  }
});

/**
 * The standard deviation of a block-quantized pool's weights: each block of `blockBytes` starts
 * with an f16 scale that must pass `validScale`, and `quant(offset, i)` reads its value i as
 * ggml does; the weight is their product.
 */
function decodedStd(pool: RandomWeightPool, blockBytes: number, validScale: (scale: number) => boolean, quant: (offset: number, i: number) => number): number {
  assert.equal(pool.unitBytes, blockBytes);
  assert.equal(pool.bytes.length % blockBytes, 0);
  let squares = 0;
  let count = 0;
  for (let offset = 0; offset < pool.bytes.length; offset += blockBytes) {
    const scale = float16Value(pool.bytes.readUInt16LE(offset));
    assert.ok(Number.isFinite(scale) && validScale(scale), `scale ${scale}`);
    for (let i = 0; i < 32; i++) {
      const weight = scale * quant(offset, i);
      squares += weight * weight;
      count++;
    }
  }
  return Math.sqrt(squares / count);
}

test("Q8_0 pool blocks decode to small finite weights (std ~0.02)", () => {
  const pool = new RandomWeightPool(GgmlType.Q8_0, 0.02, new SeededRandom(3));
  const std = decodedStd(pool, 34, (scale) => scale > 0, (offset, i) => pool.bytes.readInt8(offset + 2 + i));
  assert.ok(std > 0.018 && std < 0.022, `std ${std}`);
});

test("Q5_0 pool blocks decode, as ggml reads them, to small finite weights (std ~0.02)", () => {
  const pool = new RandomWeightPool(GgmlType.Q5_0, 0.02, new SeededRandom(3));
  let extremes = 0;
  const std = decodedStd(pool, 22, (scale) => scale !== 0, (offset, i) => {
    // ggml's dequantize_row_q5_0: values 0-15 from the low nibbles, 16-31 from the high ones.
    const byte = pool.bytes.readUInt8(offset + 6 + (i % 16));
    const nibble = i < 16 ? byte & 0x0f : byte >> 4;
    const quant = (nibble | (((pool.bytes.readUInt32LE(offset + 2) >>> i) & 1) << 4)) - 16;
    assert.ok(quant >= -16 && quant <= 15);
    if (quant === -16) extremes++;
    return quant;
  });
  assert.ok(std > 0.018 && std < 0.022, `std ${std}`);
  // Each block's largest value maps to -16, as ggml's quantizer does.
  assert.ok(extremes >= pool.bytes.length / 22, `${extremes} quants of -16`);
});

test("F16 pool values are small and finite; fills copy whole elements reproducibly", () => {
  const pool = new RandomWeightPool(GgmlType.F16, 0.02, new SeededRandom(3));
  for (let offset = 0; offset < pool.bytes.length; offset += 2) {
    const value = float16Value(pool.bytes.readUInt16LE(offset));
    assert.ok(Number.isFinite(value) && Math.abs(value) < 0.2);
  }
  const fill = (seed: number): Buffer => {
    const target = Buffer.alloc(300_000);
    pool.fill(target, new SeededRandom(seed));
    return target;
  };
  assert.deepEqual(fill(9), fill(9));
  assert.notDeepEqual(fill(9), fill(10));
});

test("fillGaussianFloat32 writes norms near 1 and small biases", () => {
  const target = Buffer.alloc(4 * 1000);
  fillGaussianFloat32(target, new SeededRandom(5), 1, 0.01);
  for (let offset = 0; offset < target.length; offset += 4)
    assert.ok(Math.abs(target.readFloatLE(offset) - 1) < 0.1);
});
