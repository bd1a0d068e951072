import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError } from "../../src/protocol/errors.js";
import { StaticKeyAuthenticator } from "../../src/server/auth.js";

const unauthorized = (error: unknown) => error instanceof ApiError && error.code === "invalid_api_key" && error.status === 401;

test("without keys every request passes", () => {
  const auth = new StaticKeyAuthenticator([]);
  assert.equal(auth.enabled, false);
  auth.authenticate(undefined);
});

test("a configured key passes, others fail with 401", () => {
  const auth = new StaticKeyAuthenticator(["key-one-123", "key-two-456"]);
  auth.authenticate("Bearer key-two-456");
  auth.authenticate("bearer key-one-123");
  assert.throws(() => auth.authenticate("Bearer key-three"), unauthorized);
  assert.throws(() => auth.authenticate(undefined), unauthorized);
  assert.throws(() => auth.authenticate("key-one-123"), unauthorized);
  assert.throws(() => auth.authenticate("Basic a2V5"), unauthorized);
  assert.throws(() => auth.authenticate("Bearer key-one-1234"), unauthorized);
});

test("the error never echoes the key", () => {
  const auth = new StaticKeyAuthenticator(["right-key-123"]);
  try {
    auth.authenticate("Bearer wrong-key-secret");
    assert.fail("should throw");
  } catch (error) {
    assert.ok(error instanceof ApiError);
    assert.ok(!error.message.includes("wrong-key-secret"));
  }
});
