import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { SseWriter } from "../../src/server/sse.js";

/** A loopback server answering with `respond`, and one POST to it; `close()` stops the server. */
async function serveOnce(respond: (response: http.ServerResponse) => void): Promise<{ response: http.IncomingMessage; close(): void }> {
  const server = http.createServer((_request, response) => respond(response));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    const request = http.request({ host: "127.0.0.1", port, method: "POST", path: "/" });
    request.end();
    const [response] = (await once(request, "response")) as [http.IncomingMessage];
    return { response, close: () => server.close() };
  } catch (error) {
    server.close();
    throw error;
  }
}

/** Serves one SSE response written by `write`, and reads it as a client, noting what had arrived at each server step. */
async function exchange(write: (sse: SseWriter, step: (name: string) => void) => Promise<void>): Promise<{ body: string; seenAt: Map<string, string> }> {
  let received = "";
  const seenAt = new Map<string, string>();
  const { response, close } = await serveOnce((raw) => {
    void write(new SseWriter(raw, "req-test"), (name) => seenAt.set(name, received));
  });
  try {
    assert.equal(response.headers["x-request-id"], "req-test");
    for await (const chunk of response) received += String(chunk);
    return { body: received, seenAt };
  } finally {
    close();
  }
}

test("events go out as they are sent, and [DONE] ends the stream", async () => {
  const { body, seenAt } = await exchange(async (sse, step) => {
    await sse.send({ n: 1 });
    await sleep(50);
    step("after first");
    await sse.send({ n: 2 });
    await sse.done();
  });
  assert.equal(body, 'data: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n');
  assert.equal(seenAt.get("after first"), 'data: {"n":1}\n\n', "the first event (with the headers) arrived before the second was sent");
});

test("after hold(), nothing more leaves until done()", async () => {
  const { body, seenAt } = await exchange(async (sse, step) => {
    await sse.send({ n: 1 });
    await sleep(50);
    sse.hold();
    await sse.send({ n: 2 });
    await sse.send({ n: 3 });
    await sleep(50); // e.g. the ledger commit
    step("before done");
    await sse.done();
  });
  assert.equal(body, 'data: {"n":1}\n\ndata: {"n":2}\n\ndata: {"n":3}\n\ndata: [DONE]\n\n');
  assert.equal(seenAt.get("before done"), 'data: {"n":1}\n\n', "the held events waited for done()");
});

test("while the client does not read, send() waits for its buffer to drain", async () => {
  const event = { text: "x".repeat(256 * 1024) };
  let blocked: Promise<void> | undefined;
  let sentBeforeBlocking = 0;
  const { response, close } = await serveOnce((raw) => {
    const sse = new SseWriter(raw, "req-slow");
    void (async () => {
      for (let index = 0; index < 256 && blocked === undefined; index++) {
        const sent = sse.send(event);
        if ((await Promise.race([sent.then(() => "sent"), sleep(200).then(() => "waiting")])) === "waiting") blocked = sent;
        else sentBeforeBlocking += 1;
      }
      await blocked;
      await sse.done();
    })();
  });
  try {
    response.pause();
    for (const deadline = Date.now() + 20_000; blocked === undefined; await sleep(20)) {
      assert.ok(Date.now() < deadline, "send() never waited");
    }
    assert.ok(sentBeforeBlocking < 255, "sends stopped resolving before all 64 MiB were buffered");
    let body = "";
    response.resume();
    for await (const chunk of response) body += String(chunk);
    assert.ok(body.endsWith("data: [DONE]\n\n"));
    assert.equal(body.split("\n\n").length - 1, sentBeforeBlocking + 2, "every event, then [DONE]");
  } finally {
    close();
  }
});
