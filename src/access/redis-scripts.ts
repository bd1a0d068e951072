/**
 * The Lua scripts of `RedisLimiter`: admission and settlement, each one atomic script.
 * They repeat `memory-limiter.ts` formula for formula (same floating-point operations in
 * the same order), so that both implementations give the same answers. Time is the
 * caller's (`ARGV[1]`), never Redis's, and -1 stands for "not set" / "never".
 *
 * A bucket is a hash {l = level, t = ms of the last update}; a missing bucket is full.
 * Key TTLs are in real time and idle keys expire once they would be full (buckets), once
 * every lease is past its expiry (leases), or after a day without use (budgets: the next
 * admission re-seeds from the ledger).
 */

/** Margin on bucket and lease-set TTLs, so that a key never expires while it still matters. */
export const TTL_MARGIN_MS = 60_000;
/** How long an unused budget counter lives before it is re-seeded from the ledger. Defaults to 1 day. */
export const BUDGET_IDLE_TTL_MS = 86_400_000;

const BUCKETS = `
local WINDOW = 60000
local MARGIN = ${TTL_MARGIN_MS}
local function load(key, capacity, now)
  local stored = redis.call('HMGET', key, 'l', 't')
  local level, at = tonumber(stored[1]), tonumber(stored[2])
  if level == nil or at == nil then return capacity, now end
  local elapsed = math.max(0, now - at)
  return math.min(capacity, level + (elapsed * capacity) / WINDOW), math.max(now, at)
end
local function store(key, capacity, level, at)
  redis.call('HSET', key, 'l', string.format('%.17g', level), 't', string.format('%.17g', at))
  local full = 0
  if capacity > 0 and level < capacity then full = math.ceil(((capacity - level) * WINDOW) / capacity) end
  redis.call('PEXPIRE', key, full + MARGIN)
end
local function state(capacity, level)
  if capacity < 0 then return -1, -1 end
  local reset = 0
  if capacity > 0 and level < capacity then reset = math.ceil(((capacity - level) * WINDOW) / capacity) end
  return math.max(0, math.floor(level)), reset
end
`;

/**
 * KEYS: requests bucket, tokens bucket, lease set, budget counter.
 * ARGV: now, rpm, tpm, maxConcurrent, budgetTokens, reserve, lease name, lease TTL,
 *   ms to the budget period's end, concurrency retry hint.
 * Returns {-1} when the budget counter must be seeded first; otherwise {admitted (1/0),
 * reason (0 none, 1 budget, 2 concurrency, 3 requests, 4 tokens), retryAfterMs,
 * requests remaining, requests reset, tokens remaining, tokens reset, budget remaining}.
 */
export const ADMIT_SCRIPT = `${BUCKETS}
local now = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local maxConcurrent, budgetTokens = tonumber(ARGV[4]), tonumber(ARGV[5])
local reserve = tonumber(ARGV[6])
local lease, leaseTtl = ARGV[7], tonumber(ARGV[8])
local budgetRetry, concurrencyRetry = tonumber(ARGV[9]), tonumber(ARGV[10])

local used = 0
if budgetTokens >= 0 then
  local value = redis.call('GET', KEYS[4])
  if not value then return {-1} end
  used = tonumber(value)
end

local inFlight = 0
if maxConcurrent >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.17g', now))
  inFlight = redis.call('ZCARD', KEYS[3])
end
local requests, requestsAt, tokens, tokensAt = 0, now, 0, now
if rpm >= 0 then requests, requestsAt = load(KEYS[1], rpm, now) end
if tpm >= 0 then tokens, tokensAt = load(KEYS[2], tpm, now) end

local reason, retry = 0, 0
local function fail(code, wait)
  if reason == 0 then reason = code end
  if retry >= 0 then
    if wait < 0 then retry = -1 elseif wait > retry then retry = wait end
  end
end
local function waitFor(need, level, capacity)
  if capacity <= 0 then return -1 end
  return math.ceil(((need - level) * WINDOW) / capacity)
end
if maxConcurrent >= 0 and inFlight >= maxConcurrent then
  if maxConcurrent > 0 then fail(2, concurrencyRetry) else fail(2, -1) end
end
if rpm >= 0 and requests < 1 then fail(3, waitFor(1, requests, rpm)) end
local needed = 0
if tpm >= 0 then needed = math.min(reserve, tpm) end
if tpm >= 0 and (tpm <= 0 or tokens < needed) then fail(4, waitFor(needed, tokens, tpm)) end
local budgetRemaining = -1
if budgetTokens >= 0 and used + reserve > budgetTokens then
  reason, retry = 1, budgetRetry
  budgetRemaining = math.max(0, budgetTokens - used)
end

if reason ~= 0 then
  local rr, rs = state(rpm, requests)
  local tr, ts = state(tpm, tokens)
  return {0, reason, retry, rr, rs, tr, ts, budgetRemaining}
end
if rpm >= 0 then
  requests = requests - 1
  store(KEYS[1], rpm, requests, requestsAt)
end
if tpm >= 0 then
  tokens = tokens - reserve
  store(KEYS[2], tpm, tokens, tokensAt)
end
if maxConcurrent >= 0 then
  redis.call('ZADD', KEYS[3], string.format('%.17g', now + leaseTtl), lease)
  redis.call('PEXPIRE', KEYS[3], leaseTtl + MARGIN)
end
if budgetTokens >= 0 then
  redis.call('INCRBY', KEYS[4], reserve)
  redis.call('PEXPIRE', KEYS[4], ${BUDGET_IDLE_TTL_MS})
end
local rr, rs = state(rpm, requests)
local tr, ts = state(tpm, tokens)
return {1, 0, 0, rr, rs, tr, ts, -1}
`;

/**
 * KEYS: tokens bucket, lease set, budget counter.
 * ARGV: now, tpm (-1: none), refund (reserved - used), lease name ('' when none), budget (1/0).
 * A budget counter that has expired is left alone: the ledger that re-seeds it is exact.
 */
export const SETTLE_SCRIPT = `${BUCKETS}
local now, tpm, refund = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm >= 0 and refund ~= 0 then
  local level, at = load(KEYS[1], tpm, now)
  store(KEYS[1], tpm, math.min(tpm, level + refund), at)
end
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[2], ARGV[4]) end
if ARGV[5] == '1' and refund ~= 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBY', KEYS[3], -refund)
  redis.call('PEXPIRE', KEYS[3], ${BUDGET_IDLE_TTL_MS})
end
return 1
`;
