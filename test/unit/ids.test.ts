import assert from "node:assert/strict";
import { test } from "node:test";
import { acceptRequestId, newCompletionId, newRequestId } from "../../src/protocol/ids.js";

test("completion and request ids: the seed's shape, and no repeats across many pool refills", () => {
  const seen = new Set<string>();
  for (let index = 0; index < 5000; index++) {
    const completion = newCompletionId();
    const request = newRequestId();
    assert.match(completion, /^cmpl-[0-9a-f]{32}$/);
    assert.match(request, /^req-[0-9a-f]{24}$/);
    seen.add(completion.slice(5));
    seen.add(request.slice(4));
  }
  assert.equal(seen.size, 10_000);
});

test("a client's x-request-id is echoed only when short and safe", () => {
  assert.equal(acceptRequestId("abc-123_x.y:z"), "abc-123_x.y:z");
  assert.equal(acceptRequestId(["first", "second"]), "first");
  for (const unusable of [undefined, "", "has space", "a".repeat(129), "semi;colon"]) assert.match(acceptRequestId(unusable), /^req-[0-9a-f]{24}$/);
});
