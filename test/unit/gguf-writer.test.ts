import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, open, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gguf } from "@huggingface/gguf";
import { readGgufFileInfo } from "node-llama-cpp";
import { GgmlType, GgufError, GgufValueType, type GgufMetadataValue } from "../../src/models/gguf-format.js";
import { layoutGguf, writeGguf, type GgufTensorSource } from "../../src/models/gguf-writer.js";

const metadataEntries: [string, GgufMetadataValue][] = [
  ["general.architecture", { type: GgufValueType.String, value: "llama" }],
  ["test.uint8", { type: GgufValueType.Uint8, value: 250 }],
  ["test.int8", { type: GgufValueType.Int8, value: -120 }],
  ["test.uint16", { type: GgufValueType.Uint16, value: 65000 }],
  ["test.int16", { type: GgufValueType.Int16, value: -32000 }],
  ["test.uint32", { type: GgufValueType.Uint32, value: 4_000_000_000 }],
  ["test.int32", { type: GgufValueType.Int32, value: -2_000_000_000 }],
  ["test.float32", { type: GgufValueType.Float32, value: 1e-6 }],
  ["test.bool", { type: GgufValueType.Bool, value: true }],
  ["test.string", { type: GgufValueType.String, value: "héllo, 世界 <|im_start|>\n" }],
  ["test.uint64", { type: GgufValueType.Uint64, value: 2n ** 63n + 5n }],
  ["test.int64", { type: GgufValueType.Int64, value: -(2n ** 40n) }],
  ["test.float64", { type: GgufValueType.Float64, value: Math.PI }],
  ["test.strings", { type: GgufValueType.Array, itemType: GgufValueType.String, value: ["Ġ", "", "a b", "ünï"] }],
  ["test.ints", { type: GgufValueType.Array, itemType: GgufValueType.Int32, value: [1, -2, 3, 2_000_000_000] }],
  ["test.floats", { type: GgufValueType.Array, itemType: GgufValueType.Float32, value: [0.5, -1.25, 3.1] }],
  ["test.bytes", { type: GgufValueType.Array, itemType: GgufValueType.Uint8, value: [] }],
  ["test.bools", { type: GgufValueType.Array, itemType: GgufValueType.Bool, value: [true, false] }]
];

/** Tensors whose bytes are a function of their position, so the data can be checked after reading. */
function patternTensor(name: string, dimensions: number[], type: GgmlType, seed: number): GgufTensorSource {
  return { name, dimensions, type, fill: (target, offset) => { for (let i = 0; i < target.length; i++) target[i] = (offset + i + seed) % 251; } };
}

const tensors = [
  patternTensor("norm.weight", [3], GgmlType.F32, 1), // 12 bytes: the next tensor needs padding
  patternTensor("matrix.weight", [5, 2], GgmlType.F16, 2),
  patternTensor("quant.weight", [64, 3], GgmlType.Q8_0, 3)
];

async function withTempDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "parley-gguf-writer-"));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("writes GGUF v3 that a maintained parser reads back with the same types, values and offsets", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "model.gguf");
    const layout = await writeGguf(path, { metadata: new Map(metadataEntries), tensors });
    assert.equal((await stat(path)).size, layout.fileSize);

    const parsed = await gguf(path, { typedMetadata: true, allowLocalFile: true });
    assert.equal(parsed.metadata.version, 3);
    const typed = parsed.typedMetadata as Record<string, { value: unknown; type: number; subType?: number }>;
    assert.deepEqual(Object.keys(typed).filter((key) => !["version", "tensor_count", "kv_count"].includes(key)), metadataEntries.map(([key]) => key));
    for (const [key, expected] of metadataEntries) {
      const actual = typed[key];
      assert.ok(actual, key);
      assert.equal(actual.type, expected.type, `${key} type`);
      if (expected.type === GgufValueType.Array) {
        assert.equal(actual.subType, expected.itemType, `${key} item type`);
        const values = expected.itemType === GgufValueType.Float32 ? expected.value.map((v) => Math.fround(v as number)) : expected.value;
        assert.deepEqual(actual.value, values, key);
      } else {
        const value = expected.type === GgufValueType.Float32 ? Math.fround(expected.value as number) : expected.value;
        assert.equal(actual.value, value, key);
      }
    }

    assert.equal(Number(parsed.tensorDataOffset) % 32, 0);
    assert.equal(Number(parsed.tensorDataOffset), layout.dataOffset);
    assert.deepEqual(
      parsed.tensorInfos.map((t) => ({ name: t.name, shape: t.shape.map(Number), type: t.dtype as number, offset: Number(t.offset) })),
      [
        { name: "norm.weight", shape: [3], type: 0, offset: 0 },
        { name: "matrix.weight", shape: [5, 2], type: 1, offset: 32 },
        { name: "quant.weight", shape: [64, 3], type: 8, offset: 64 }
      ]
    );

    const file = await open(path, "r");
    try {
      for (const [index, info] of layout.tensors.entries()) {
        const bytes = Buffer.alloc(info.byteLength);
        await file.read(bytes, 0, bytes.length, layout.dataOffset + info.offset);
        const expected = Buffer.alloc(info.byteLength);
        tensors[index]!.fill(expected, 0);
        assert.deepEqual(bytes, expected, info.name);
      }
      // Padding between tensors is zeros.
      const padding = Buffer.alloc(32 - 12);
      await file.read(padding, 0, padding.length, layout.dataOffset + 12);
      assert.ok(padding.every((byte) => byte === 0));
    } finally {
      await file.close();
    }
    assert.equal(layout.tensors[2]!.byteLength, 2 * 3 * 34);
  });
});

test("node-llama-cpp's reader agrees on the layout", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "model.gguf");
    const layout = await writeGguf(path, { metadata: new Map(metadataEntries), tensors });
    const info = await readGgufFileInfo(path, { logWarnings: false });
    assert.equal(info.version, 3);
    assert.deepEqual(info.tensorInfo?.map((t) => Number(t.fileOffset)), layout.tensors.map((t) => layout.dataOffset + t.offset));
  });
});

test("general.alignment sets the alignment of the data section and of every tensor", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "aligned.gguf");
    const metadata = new Map<string, GgufMetadataValue>([["general.alignment", { type: GgufValueType.Uint32, value: 64 }]]);
    const layout = await writeGguf(path, { metadata, tensors });
    assert.equal(layout.alignment, 64);
    assert.equal(layout.dataOffset % 64, 0);
    assert.deepEqual(layout.tensors.map((t) => t.offset), [0, 64, 128]);
    const parsed = await gguf(path, { allowLocalFile: true });
    assert.deepEqual(parsed.tensorInfos.map((t) => Number(t.offset)), [0, 64, 128]);
  });
});

test("streams tensors larger than one write chunk", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "large.gguf");
    // 160 rows of 1024 Q8_0 blocks (5.6 MB): more than one 4 MiB write chunk.
    const big = patternTensor("big.weight", [32 * 1024, 160], GgmlType.Q8_0, 7);
    const offsets: number[] = [];
    const layout = await writeGguf(path, {
      metadata: new Map(),
      tensors: [{ ...big, fill: (target, offset) => { assert.equal(target.length % 34, 0); offsets.push(offset); big.fill(target, offset); } }]
    });
    assert.ok(offsets.length > 1);
    const info = layout.tensors[0]!;
    const file = await open(path, "r");
    try {
      const tail = Buffer.alloc(1000);
      await file.read(tail, 0, tail.length, layout.dataOffset + info.byteLength - tail.length);
      const expected = Buffer.alloc(tail.length);
      big.fill(expected, info.byteLength - tail.length);
      assert.deepEqual(tail, expected);
    } finally {
      await file.close();
    }
  });
});

test("rejects bad input with a GgufError and leaves no file behind", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "bad.gguf");
    const metadata = new Map<string, GgufMetadataValue>();
    await assert.rejects(writeGguf(path, { metadata, tensors: [patternTensor("q", [48, 2], GgmlType.Q8_0, 0)] }), GgufError);
    await assert.rejects(writeGguf(path, { metadata, tensors: [tensors[0]!, tensors[0]!] }), /duplicate tensor name/);
    await assert.rejects(
      writeGguf(path, { metadata: new Map([["x.count", { type: GgufValueType.Uint32, value: "seven" }]]), tensors: [] }),
      (error: unknown) => error instanceof GgufError && error.message.includes("x.count")
    );
    await assert.rejects(
      writeGguf(path, { metadata: new Map([["x.count", { type: GgufValueType.Uint8, value: 300 }]]), tensors: [] }),
      /x\.count/
    );
    const failing: GgufTensorSource = { ...tensors[1]!, fill: () => { throw new Error("disk on fire"); } };
    await assert.rejects(writeGguf(path, { metadata, tensors: [failing] }), /disk on fire/);
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(writeGguf(path, { metadata, tensors, signal: controller.signal }), { name: "AbortError" });
    assert.deepEqual(await readdir(dir), []);
  });
});

test("layoutGguf predicts the file size without writing", () => {
  const layout = layoutGguf(new Map(metadataEntries), tensors);
  assert.equal(layout.fileSize, layout.dataOffset + 64 + 3 * 2 * 34);
  assert.equal(layout.header.length, layout.dataOffset);
});
