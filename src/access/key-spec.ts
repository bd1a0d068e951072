/**
 * Validation of a key's name and limits, shared by `parley keys create` and
 * `POST /admin/v1/keys` (snake_case JSON fields). Bad input is an `ApiError` naming the
 * field, and nothing is written.
 */
import { ApiError } from "../protocol/errors.js";
import { parseDateText } from "./dates.js";
import type { ApiKeyRecord, BudgetPeriod, KeyLimits } from "./types.js";

export interface KeySpec extends KeyLimits {
  readonly name: string;
}

const FIELDS = ["name", "models", "rpm", "tpm", "max_concurrent", "budget_tokens", "budget_period", "expires_at"] as const;
const MAX_LIMIT = 1e12;
const MAX_NAME = 200;
const MAX_MODELS = 100;

function invalid(param: string, message: string): ApiError {
  return new ApiError("invalid_value", `Invalid '${param}': ${message}`, { param });
}

function positiveInteger(input: Record<string, unknown>, field: string): number | null {
  const value = input[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1 || value > MAX_LIMIT) {
    throw invalid(field, `expected a positive integer up to ${MAX_LIMIT}, got ${JSON.stringify(value)?.slice(0, 40) ?? String(value)}.`);
  }
  return value;
}

function readName(value: unknown): string {
  if (typeof value !== "string") throw invalid("name", "expected a string.");
  const name = value.trim();
  if (name.length === 0 || name.length > MAX_NAME) throw invalid("name", `expected 1 to ${MAX_NAME} characters.`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw invalid("name", "control characters are not allowed.");
  return name;
}

function readModels(value: unknown): string[] | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_MODELS) {
    throw invalid("models", `expected a non-empty array of up to ${MAX_MODELS} model names.`);
  }
  return value.map((model: unknown, index) => {
    if (typeof model !== "string" || model.trim().length === 0 || model.length > MAX_NAME) {
      throw invalid(`models[${index}]`, "expected a non-empty model name.");
    }
    return model.trim();
  });
}

/** Accepts `YYYY-MM-DD` (midnight UTC) or a full ISO 8601 timestamp; it must lie ahead of `now`. */
export function parseExpiry(value: unknown, now: number): Date | null {
  if (value === undefined || value === null) return null;
  const date = typeof value === "string" ? parseDateText(value) : null;
  if (date === null) {
    throw invalid("expires_at", `expected a real date such as 2027-01-31 or 2027-01-31T12:00:00Z, got ${JSON.stringify(value)?.slice(0, 60)}.`);
  }
  if (date.getTime() <= now) throw invalid("expires_at", "the date must be in the future.");
  return date;
}

export function parseKeySpec(input: unknown, now: number = Date.now()): KeySpec {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new ApiError("invalid_type", "Expected a JSON object describing the key.");
  }
  const fields = input as Record<string, unknown>;
  for (const field of Object.keys(fields)) {
    if (!(FIELDS as readonly string[]).includes(field)) {
      throw new ApiError("invalid_value", `Unknown field '${field.slice(0, 60)}'; expected one of ${FIELDS.join(", ")}.`, { param: field.slice(0, 60) });
    }
  }
  const budgetTokens = positiveInteger(fields, "budget_tokens");
  const period = fields.budget_period;
  let budgetPeriod: BudgetPeriod | null = null;
  if (period !== undefined && period !== null) {
    if (period !== "day" && period !== "month" && period !== "total") throw invalid("budget_period", "expected 'day', 'month' or 'total'.");
    budgetPeriod = period;
  }
  if ((budgetTokens === null) !== (budgetPeriod === null)) {
    throw invalid(budgetTokens === null ? "budget_tokens" : "budget_period", "'budget_tokens' and 'budget_period' go together.");
  }
  return {
    name: readName(fields.name),
    models: readModels(fields.models),
    rpm: positiveInteger(fields, "rpm"),
    tpm: positiveInteger(fields, "tpm"),
    maxConcurrent: positiveInteger(fields, "max_concurrent"),
    budgetTokens,
    budgetPeriod,
    expiresAt: parseExpiry(fields.expires_at, now),
  };
}

export type KeyStatus = "active" | "revoked" | "expired";

export function keyStatus(record: ApiKeyRecord, now: number = Date.now()): KeyStatus {
  if (record.revokedAt !== null) return "revoked";
  if (record.expiresAt !== null && record.expiresAt.getTime() <= now) return "expired";
  return "active";
}

/** A key as the admin API and the CLI show it: never the hash, never the secret. */
export function keyView(record: ApiKeyRecord, now: number = Date.now()): Record<string, unknown> {
  return {
    id: record.id,
    name: record.name,
    prefix: record.prefix,
    status: keyStatus(record, now),
    models: record.models,
    rpm: record.rpm,
    tpm: record.tpm,
    max_concurrent: record.maxConcurrent,
    budget_tokens: record.budgetTokens,
    budget_period: record.budgetPeriod,
    expires_at: record.expiresAt?.toISOString() ?? null,
    created_at: record.createdAt.toISOString(),
    revoked_at: record.revokedAt?.toISOString() ?? null,
  };
}
