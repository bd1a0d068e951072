/** Polling for a condition in tests. Not a timing assertion: the deadline only stops a test that would hang. */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";

export async function until(condition: () => boolean | Promise<boolean>, what: string, deadlineMs = 20_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`still waiting for: ${what}`);
    await sleep(10);
  }
}
