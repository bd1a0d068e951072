/** `GET /metrics`: Prometheus text with request, latency, token, queue, sequence, model-state, engine and attention series. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { tuningStatus } from "../../src/backends/local/llama-tuning.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat, readEvents, startParley, type RunningParley } from "../helpers/parley.js";

let parley: RunningParley;
before(async () => {
  // Flash attention off, as `--flash-attention auto` chooses for this model (attention-calibration.ts).
  parley = await startParley({ modelPath: STORIES_260K, parallel: 2, flashAttention: false });
});
after(() => parley.close());

function value(text: string, series: string): number {
  const line = text.split("\n").find((candidate) => candidate.startsWith(`${series} `));
  assert.ok(line !== undefined, `missing series ${series}`);
  return Number(line.slice(series.length + 1));
}

test("counts requests, tokens and latencies; reads queue, sequences and model state", async () => {
  const body = { model: "test-model", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 12, temperature: 0 };
  const plain = (await (await postChat(parley, body)).json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
  const events = await readEvents(await postChat(parley, { ...body, stream: true, stream_options: { include_usage: true } }));
  const streamed = events.find((event) => typeof event === "object" && event !== null && "usage" in event) as { usage: { prompt_tokens: number; completion_tokens: number } };
  assert.equal((await postChat(parley, { ...body, temperature: 3 })).status, 400);
  assert.equal((await postChat(parley, { ...body, model: "nope" })).status, 404);
  assert.equal((await fetch(`${parley.url}/v1/models`)).status, 200);

  const response = await fetch(`${parley.url}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await response.text();

  assert.equal(value(text, 'parley_requests_total{route="/v1/chat/completions",model="test-model",status="200"}'), 2);
  assert.equal(value(text, 'parley_requests_total{route="/v1/chat/completions",model="",status="400"}'), 1);
  assert.equal(value(text, 'parley_requests_total{route="/v1/chat/completions",model="",status="404"}'), 1);
  assert.equal(value(text, 'parley_requests_total{route="/v1/models",model="",status="200"}'), 1);
  assert.equal(value(text, 'parley_tokens_total{model="test-model",kind="prompt"}'), plain.usage.prompt_tokens + streamed.usage.prompt_tokens);
  assert.equal(value(text, 'parley_tokens_total{model="test-model",kind="completion"}'), plain.usage.completion_tokens + streamed.usage.completion_tokens);
  assert.ok(value(text, 'parley_tokens_total{model="test-model",kind="cached"}') >= 0);
  assert.equal(value(text, 'parley_time_to_first_token_seconds_count{model="test-model"}'), 2);
  assert.ok(value(text, 'parley_inter_token_latency_seconds_count{model="test-model"}') > 0);
  assert.equal(value(text, 'parley_request_duration_seconds_count{route="/v1/chat/completions",model="test-model"}'), 2);
  assert.equal(value(text, 'parley_queue_depth{model="test-model"}'), 0);
  assert.equal(value(text, 'parley_sequences{model="test-model",state="free"}'), 2);
  assert.equal(value(text, 'parley_sequences{model="test-model",state="busy"}'), 0);
  assert.equal(value(text, 'parley_model_state{model="test-model",state="ready"}'), 1);
  assert.equal(value(text, 'parley_model_state{model="test-model",state="loading"}'), 0);
  // How the engine runs: the kernels this process loaded, as the tuning addon reports them
  // (no series where the addon could not be built).
  const tuning = tuningStatus();
  if (tuning.active && tuning.cpuKernelsLoaded !== null) {
    const loop = tuning.nativeLoop ? "native" : "library";
    assert.equal(value(text, `parley_engine_info{cpu_kernels="${tuning.cpuKernelsLoaded}",decode_loop="${loop}",threadpool="${tuning.threadpool}"}`), 1);
  } else {
    assert.doesNotMatch(text, /^parley_engine_info\{/m);
  }
  assert.equal(value(text, 'parley_model_attention_info{model="test-model",flash_attention="off"}'), 1);
  assert.equal(value(text, "parley_requests_in_flight"), 0);
  assert.match(text, /^parley_process_resident_memory_bytes /m);
});

test("/metrics needs no key even when keys are required", async () => {
  const keyed = await startParley({ modelPath: STORIES_260K, apiKeys: ["metrics-test-key"] });
  try {
    const metrics = await fetch(`${keyed.url}/metrics`);
    assert.equal(metrics.status, 200);
    // Without a setting, llama.cpp's own choice.
    assert.equal(value(await metrics.text(), 'parley_model_attention_info{model="test-model",flash_attention="auto"}'), 1);
    assert.equal((await fetch(`${keyed.url}/v1/models`)).status, 401);
  } finally {
    await keyed.close();
  }
});
