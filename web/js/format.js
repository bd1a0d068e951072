// Number and time formatting shared by the playground and the dashboard.

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** 12,345 (locale grouping); "—" for null or a non-finite number. */
export function formatCount(value) {
  return typeof value === "number" && Number.isFinite(value) ? integer.format(value) : "—";
}

/** 1.5 tokens/s style numbers, one decimal at most. */
export function formatRate(value) {
  return typeof value === "number" && Number.isFinite(value) ? oneDecimal.format(value) : "—";
}

/** 850 ms, 12.3 s. */
export function formatMs(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "—";
  return value < 1000 ? `${integer.format(value)} ms` : `${oneDecimal.format(value / 1000)} s`;
}

/** A wire value as JSON shows it: strings quoted with escapes ("\n"), null as null. */
export function formatWireValue(value) {
  return value === undefined ? "—" : JSON.stringify(value);
}

/** A bucket's start as the chart's axis shows it: the time of day for short buckets, the date for days. */
export function formatBucket(iso, bucketSeconds) {
  const date = new Date(iso);
  if (bucketSeconds >= 86_400) return date.toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/** hh:mm:ss, local time. */
export function formatClock(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
