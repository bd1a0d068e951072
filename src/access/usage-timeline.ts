/**
 * Usage over time, by key and by model, for the dashboard's charts: a window (the last
 * 15 minutes … 30 days) cut into equal buckets aligned to the epoch (UTC), each bucket
 * summed by the store's own `usage()` query — one query per bucket and grouping, so any
 * store serves it without a time-series query of its own.
 */
import { ApiError } from "../protocol/errors.js";
import type { AccessStore } from "./store.js";
import type { UsageBucket, UsageGrouping } from "./types.js";

export interface UsageWindow {
  /** How clients name it: `15m`, `1h`, `6h`, `24h`, `7d`, `30d`. */
  readonly name: string;
  readonly bucketMs: number;
  readonly buckets: number;
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export const USAGE_WINDOWS: readonly UsageWindow[] = [
  { name: "15m", bucketMs: MINUTE, buckets: 15 },
  { name: "1h", bucketMs: 5 * MINUTE, buckets: 12 },
  { name: "6h", bucketMs: 30 * MINUTE, buckets: 12 },
  { name: "24h", bucketMs: HOUR, buckets: 24 },
  { name: "7d", bucketMs: DAY, buckets: 7 },
  { name: "30d", bucketMs: DAY, buckets: 30 },
];

export const DEFAULT_USAGE_WINDOW = "1h";

/** Series beyond this many (the largest by tokens) are summed into one `(other)` series. */
export const MAX_SERIES = 8;
export const OTHER_SERIES = "(other)";

/** One key's or model's usage, bucket by bucket (arrays as long as `bucketStarts`). */
export interface UsageSeries {
  readonly group: string;
  readonly requests: number[];
  readonly promptTokens: number[];
  readonly completionTokens: number[];
  readonly totalTokens: number[];
}

export interface UsageTimeline {
  readonly window: UsageWindow;
  readonly since: Date;
  readonly until: Date;
  readonly bucketStarts: readonly Date[];
  readonly byKey: readonly UsageSeries[];
  readonly byModel: readonly UsageSeries[];
}

export function parseUsageWindow(name: string | undefined): UsageWindow {
  const wanted = name ?? DEFAULT_USAGE_WINDOW;
  const window = USAGE_WINDOWS.find((candidate) => candidate.name === wanted);
  if (window === undefined) {
    const names = USAGE_WINDOWS.map((candidate) => candidate.name).join(", ");
    throw new ApiError("invalid_value", `Invalid 'window': expected one of ${names}, got '${wanted.slice(0, 40)}'.`, { param: "window" });
  }
  return window;
}

export async function usageTimeline(store: AccessStore, window: UsageWindow, now: number = Date.now()): Promise<UsageTimeline> {
  const until = Math.floor(now / window.bucketMs) * window.bucketMs + window.bucketMs;
  const bucketStarts = Array.from({ length: window.buckets }, (_, index) => new Date(until - (window.buckets - index) * window.bucketMs));
  const query = (start: Date, groupBy: UsageGrouping): Promise<UsageBucket[]> =>
    store.usage({ since: start, until: new Date(start.getTime() + window.bucketMs), groupBy });
  const [byKey, byModel] = await Promise.all([
    Promise.all(bucketStarts.map((start) => query(start, "key"))),
    Promise.all(bucketStarts.map((start) => query(start, "model"))),
  ]);
  return { window, since: bucketStarts[0] ?? new Date(until), until: new Date(until), bucketStarts, byKey: toSeries(byKey), byModel: toSeries(byModel) };
}

function emptySeries(group: string, length: number): UsageSeries {
  const zeros = (): number[] => new Array<number>(length).fill(0);
  return { group, requests: zeros(), promptTokens: zeros(), completionTokens: zeros(), totalTokens: zeros() };
}

function add(series: UsageSeries, index: number, bucket: UsageBucket): void {
  series.requests[index] = (series.requests[index] ?? 0) + bucket.requests;
  series.promptTokens[index] = (series.promptTokens[index] ?? 0) + bucket.promptTokens;
  series.completionTokens[index] = (series.completionTokens[index] ?? 0) + bucket.completionTokens;
  series.totalTokens[index] = (series.totalTokens[index] ?? 0) + bucket.totalTokens;
}

const sum = (values: readonly number[]): number => values.reduce((total, value) => total + value, 0);

/** Buckets-by-group into series, largest first (by tokens, then requests), the tail folded into `(other)`. */
function toSeries(perBucket: readonly UsageBucket[][]): UsageSeries[] {
  const groups = new Map<string, UsageSeries>();
  perBucket.forEach((buckets, index) => {
    for (const bucket of buckets) {
      let series = groups.get(bucket.group);
      if (series === undefined) groups.set(bucket.group, (series = emptySeries(bucket.group, perBucket.length)));
      add(series, index, bucket);
    }
  });
  const ranked = [...groups.values()].sort(
    (a, b) => sum(b.totalTokens) - sum(a.totalTokens) || sum(b.requests) - sum(a.requests) || a.group.localeCompare(b.group),
  );
  if (ranked.length <= MAX_SERIES) return ranked;
  const other = emptySeries(OTHER_SERIES, perBucket.length);
  for (const series of ranked.slice(MAX_SERIES - 1)) {
    series.requests.forEach((_, index) =>
      add(other, index, {
        group: OTHER_SERIES,
        requests: series.requests[index] ?? 0,
        promptTokens: series.promptTokens[index] ?? 0,
        completionTokens: series.completionTokens[index] ?? 0,
        cachedTokens: 0,
        totalTokens: series.totalTokens[index] ?? 0,
      }),
    );
  }
  return [...ranked.slice(0, MAX_SERIES - 1), other];
}
