/**
 * `parley serve --flash-attention`: `auto` times llama.cpp's two attention paths on the model
 * in child processes, creates the context with the cheaper one and caches the choice; `on` and
 * `off` force it. Each local model of a config file is measured with its own settings. /metrics
 * says what each local model's context was created with.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, runCli } from "../helpers/cli.js";
import { LLAMA2_TINY_RANDOM, STORIES_260K } from "../helpers/models.js";
import { until } from "../helpers/wait.js";

const CHOSEN = /\{[^\n]*"msg":"llama.cpp attention path chosen"\}/;

interface Chosen {
  flashAttention?: boolean | "auto";
  why?: string;
  measured?: { on: { stepMs: number; deepStepMs?: number }; off: { stepMs: number; deepStepMs?: number } };
}

async function serve(args: readonly string[]): Promise<{ chosen: Chosen; output: string; attention: string; completion: string }> {
  // ggml's own kernels: only the attention stage is measured here (llama-tuning.test.ts covers the kernels).
  const server = runCli(["serve", "--model", STORIES_260K, "--model-name", "stories", "--port", "0", "--threads", "1", "--parallel", "4", "--cpu-kernels", "ggml", "--log-level", "info", ...args]);
  try {
    const chosen = JSON.parse((await server.waitFor(CHOSEN, 120_000))[0]) as Chosen;
    const address = (await server.waitFor(/Parley listening on (http:\/\/[^\s"]+)/))[1] ?? "";
    await server.waitFor(/Model '[^']+' loaded/);
    const metrics = await (await fetch(`${address}/metrics`)).text();
    const attention = metrics.split("\n").find((line) => line.startsWith("parley_model_attention_info{")) ?? "";
    const response = await fetch(`${address}/model/api/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "stories", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 16, temperature: 0 }),
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { choices: Array<{ message: { content: string } }>; usage: { completion_tokens: number } };
    assert.equal(body.usage.completion_tokens, 16);
    return { chosen, output: server.output(), attention, completion: body.choices[0]?.message.content ?? "" };
  } finally {
    assert.equal(await server.stop(), 0);
  }
}

describe("parley serve --flash-attention", () => {
  let cacheDir: string;
  before(() => {
    assert.ok(existsSync(CLI), `${CLI} is missing: run \`npm run build\` first (npm test does)`);
    cacheDir = mkdtempSync(path.join(os.tmpdir(), "parley-attention-"));
  });
  after(() => rmSync(cacheDir, { recursive: true, force: true }));

  test("auto measures both paths once, serves with the cheaper and caches the choice", async () => {
    const first = await serve(["--cache-dir", cacheDir]);
    assert.match(first.output, /Measuring llama.cpp's two attention paths on this model/);
    assert.equal(first.chosen.why, "measured now on this model");
    const { on, off } = first.chosen.measured ?? assert.fail(first.output);
    for (const each of [on, off]) assert.ok(each.stepMs > 0 && (each.deepStepMs ?? 0) > 0, first.output);
    // stories260K's 8-dimension heads: llama.cpp's flash path costs 3x the plain one on the
    // reference turn on the machine measured (docs/engine.md), far beyond the 25% margin.
    assert.equal(first.chosen.flashAttention, false, first.output);
    assert.equal(first.attention, 'parley_model_attention_info{model="stories",flash_attention="off"} 1');
    assert.ok(existsSync(path.join(cacheDir, "attention.json")));

    const second = await serve(["--cache-dir", cacheDir]);
    assert.doesNotMatch(second.output, /Measuring llama.cpp's two attention paths/);
    assert.match(second.chosen.why ?? "", /^measured [^ ]+ \(cached in .*attention\.json\)$/);
    assert.equal(second.chosen.flashAttention, first.chosen.flashAttention);
  });

  test("on and off are used as given, without measuring", async () => {
    for (const mode of ["on", "off"] as const) {
      const run = await serve(["--cache-dir", cacheDir, "--flash-attention", mode]);
      assert.doesNotMatch(run.output, /Measuring llama.cpp's two attention paths/);
      assert.equal(run.chosen.why, "--flash-attention");
      assert.equal(run.chosen.flashAttention, mode === "on");
      assert.equal(run.attention, `parley_model_attention_info{model="stories",flash_attention="${mode}"} 1`);
    }
  });

  test("each local model of a config file is measured with its own settings", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "parley-attention-config-"));
    try {
      const config = path.join(dir, "parley.yaml");
      writeFileSync(
        config,
        ["models:", "  - name: one", "    backend: local", `    model: ${STORIES_260K}`, "    parallel: 2", "    threads: 1",
          "  - name: two", "    backend: local", `    model: ${LLAMA2_TINY_RANDOM}`, "    parallel: 1", "    threads: 1", ""].join("\n"),
      );
      const server = runCli(["serve", "--config", config, "--port", "0", "--cpu-kernels", "ggml", "--cache-dir", dir, "--log-level", "info"]);
      try {
        const address = (await server.waitFor(/Parley listening on (http:\/\/[^\s"]+)/))[1] ?? "";
        await server.waitFor(/Model 'one' loaded[\s\S]*Model 'two' loaded|Model 'two' loaded[\s\S]*Model 'one' loaded/, 120_000);
        const chosen = server.output().split("\n").filter((line) => line.includes('"msg":"llama.cpp attention path chosen"'));
        assert.equal(chosen.length, 2, server.output());
        assert.equal(server.output().match(/Measuring llama.cpp's two attention paths/g)?.length, 2, "one measurement per model's settings");
        // stories260K goes off (as above); the tiny Llama 2 (random weights) times alike on both
        // paths, far inside the margin, so it keeps llama.cpp's choice: a mix-up shows.
        assert.deepEqual(
          chosen.map((line) => JSON.parse(line) as Chosen & { file: string }).map(({ file, flashAttention }) => [path.basename(file), flashAttention]),
          [["stories260K.gguf", false], ["llama-2-tiny-random.gguf", "auto"]],
        );
        const metrics = await (await fetch(`${address}/metrics`)).text();
        assert.match(metrics, /^parley_model_attention_info\{model="one",flash_attention="off"\} 1$/m);
        assert.match(metrics, /^parley_model_attention_info\{model="two",flash_attention="auto"\} 1$/m);
      } finally {
        assert.equal(await server.stop(), 0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("SIGTERM while measuring ends the server at once, and its measuring children with it", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "parley-attention-stop-"));
    const server = runCli(["serve", "--model", STORIES_260K, "--port", "0", "--threads", "1", "--cache-dir", dir, "--log-level", "info"]);
    try {
      await server.waitFor(/Measuring llama.cpp's (CPU kernels|two attention paths)/);
      const pid = server.child.pid ?? assert.fail("no pid");
      const children = execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).trim().split("\n").map(Number);
      assert.ok(children.length >= 1, "a measuring child runs");
      assert.equal(await server.stop(), 0);
      // It did not wait for the measurements to finish and the engine to open.
      assert.doesNotMatch(server.output(), /llama.cpp engine tuned/);
      // Gone, or a zombie (killed, not yet reaped by whoever inherited it).
      const alive = (child: number): boolean => {
        try {
          return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${child}/stat`, "utf8"));
        } catch {
          return false;
        }
      };
      for (const child of children) await until(() => !alive(child), `measuring child ${child} to end with the server`, 2_000);
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
