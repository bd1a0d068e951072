/**
 * Strict parsing of the dates users type (`--expires`, `--since`, `expires_at`):
 * `YYYY-MM-DD` (midnight UTC) or an ISO 8601 instant. JavaScript's Date rolls impossible
 * dates forward (2099-02-30 becomes 2 March), so the calendar date is checked as written.
 */

const DATE_OR_INSTANT = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** The instant, or null when the text is not a real date or instant. */
export function parseDateText(value: string): Date | null {
  const text = value.trim();
  const match = DATE_OR_INSTANT.exec(text);
  if (match === null) return null;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const calendar = new Date(Date.UTC(year, month - 1, day));
  if (calendar.getUTCFullYear() !== year || calendar.getUTCMonth() !== month - 1 || calendar.getUTCDate() !== day) return null;
  if (match[4] !== undefined && (Number(match[4]) > 23 || Number(match[5]) > 59 || Number(match[6] ?? 0) > 59)) return null;
  const date = new Date(match[4] === undefined ? `${match[1]}-${match[2]}-${match[3]}T00:00:00Z` : text.replace(" ", "T"));
  return Number.isNaN(date.getTime()) ? null : date;
}
