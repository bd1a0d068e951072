/**
 * Parses usage filters from the CLI (`parley usage --since 7d --by model`) and the admin
 * API (`GET /admin/v1/usage?since=7d&by=model`). Times are ISO 8601 dates or instants, or
 * a look-back such as `30m`, `24h`, `7d`.
 */
import { ApiError } from "../protocol/errors.js";
import { parseDateText } from "./dates.js";
import type { UsageBucket, UsageGrouping, UsageQuery } from "./types.js";

export interface UsageQueryInput {
  readonly key?: string | undefined;
  readonly model?: string | undefined;
  readonly since?: string | undefined;
  readonly until?: string | undefined;
  readonly by?: string | undefined;
}

const UNITS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };
const GROUPINGS: readonly UsageGrouping[] = ["day", "key", "model", "none"];

export function parseInstant(param: string, value: string, now: number): Date {
  const text = value.trim();
  const lookBack = /^(\d{1,6})([mhd])$/.exec(text);
  if (lookBack?.[1] !== undefined && lookBack[2] !== undefined) return new Date(now - Number(lookBack[1]) * (UNITS[lookBack[2]] ?? 0));
  const date = parseDateText(text);
  if (date !== null) return date;
  throw new ApiError("invalid_value", `Invalid '${param}': expected a real date (2027-01-31), an instant (2027-01-31T12:00:00Z) or a look-back (30m, 24h, 7d), got '${text.slice(0, 60)}'.`, {
    param,
  });
}

export function parseUsageQuery(input: UsageQueryInput, now: number = Date.now()): UsageQuery {
  const by = input.by ?? "none";
  if (!(GROUPINGS as readonly string[]).includes(by)) {
    throw new ApiError("invalid_value", `Invalid 'by': expected one of ${GROUPINGS.join(", ")}, got '${by.slice(0, 40)}'.`, { param: "by" });
  }
  const query: UsageQuery = {
    groupBy: by as UsageGrouping,
    ...(input.key !== undefined && input.key !== "" ? { keyId: input.key } : {}),
    ...(input.model !== undefined && input.model !== "" ? { model: input.model } : {}),
    ...(input.since !== undefined && input.since !== "" ? { since: parseInstant("since", input.since, now) } : {}),
    ...(input.until !== undefined && input.until !== "" ? { until: parseInstant("until", input.until, now) } : {}),
  };
  if (query.since !== undefined && query.until !== undefined && query.since >= query.until) {
    throw new ApiError("invalid_value", "Invalid 'until': it must be later than 'since'.", { param: "until" });
  }
  return query;
}

/** A usage bucket as the admin API and `parley usage --json` show it (snake_case, like OpenAI's usage). */
export function usageView(bucket: UsageBucket): Record<string, string | number> {
  return {
    group: bucket.group,
    requests: bucket.requests,
    prompt_tokens: bucket.promptTokens,
    completion_tokens: bucket.completionTokens,
    cached_tokens: bucket.cachedTokens,
    total_tokens: bucket.totalTokens,
  };
}
