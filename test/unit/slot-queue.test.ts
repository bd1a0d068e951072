import assert from "node:assert/strict";
import { test } from "node:test";
import { SlotQueue } from "../../src/backends/local/slot-queue.js";

const never = new AbortController().signal;

test("reservations stop at slots plus waiting places", () => {
  const queue = new SlotQueue(["a"], 1);
  assert.equal(queue.tryReserve(), true);
  assert.equal(queue.tryReserve(), true);
  assert.equal(queue.tryReserve(), false);
  queue.cancelReservation();
  assert.equal(queue.tryReserve(), true);
});

test("waiters get slots first in, first out", async () => {
  const queue = new SlotQueue(["only"], 4);
  queue.tryReserve();
  const held = await queue.acquire(never);
  const order: number[] = [];
  const waiters = [1, 2, 3].map((n) => {
    queue.tryReserve();
    return queue.acquire(never).then((slot) => {
      order.push(n);
      queue.release(slot);
    });
  });
  assert.equal(queue.waiting, 3);
  queue.release(held);
  await Promise.all(waiters);
  assert.deepEqual(order, [1, 2, 3]);
  assert.equal(queue.waiting, 0);
  assert.equal(queue.busy, 0);
});

test("an aborted waiter leaves the queue at once", async () => {
  const queue = new SlotQueue(["only"], 2);
  queue.tryReserve();
  const held = await queue.acquire(never);
  queue.tryReserve();
  const controller = new AbortController();
  const waiting = queue.acquire(controller.signal);
  assert.equal(queue.waiting, 1);
  controller.abort(new Error("gone"));
  await assert.rejects(waiting, /gone/);
  assert.equal(queue.waiting, 0);
  queue.cancelReservation();
  queue.release(held);
  assert.equal(queue.busy, 0);
});

test("a newcomer does not overtake waiters when a slot frees", async () => {
  const queue = new SlotQueue(["s"], 2);
  queue.tryReserve();
  const held = await queue.acquire(never);
  queue.tryReserve();
  const first = queue.acquire(never);
  queue.release(held);
  queue.tryReserve();
  const second = queue.acquire(never);
  assert.equal(await first, "s");
  assert.equal(queue.waiting, 1);
  queue.release("s");
  assert.equal(await second, "s");
});

test("when several slots are free, the chooser picks which", async () => {
  const queue = new SlotQueue(["a", "b", "c"], 0);
  queue.tryReserve();
  assert.equal(await queue.acquire(never, (free) => free.indexOf("b")), "b");
  queue.tryReserve();
  assert.equal(await queue.acquire(never), "c", "without a chooser: the most recently released");
});

test("a freed slot goes to the owner served longest ago, first in first out within an owner", async () => {
  const queue = new SlotQueue(["s"], 8);
  queue.tryReserve();
  const held = await queue.acquire(never, undefined, "alice");
  const order: string[] = [];
  const wait = (name: string, owner: string) => {
    queue.tryReserve();
    return queue.acquire(never, undefined, owner).then((slot) => {
      order.push(name);
      queue.release(slot);
    });
  };
  const all = [wait("a1", "alice"), wait("a2", "alice"), wait("b1", "bob"), wait("a3", "alice"), wait("c1", "carol")];
  queue.release(held);
  await Promise.all(all);
  assert.deepEqual(order, ["b1", "c1", "a1", "a2", "a3"]);
});
