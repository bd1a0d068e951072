/** Small helpers for command output: aligned tables, and errors as one line with exit code 1. */
import { ApiError } from "../protocol/errors.js";

export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)));
  const line = (cells: readonly string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** Turns an API field name into the flag that sets it: `max_concurrent` → `--max-concurrent`. */
function flagFor(param: string): string {
  return `--${param.replace(/_at$/, "").replace(/_/g, "-")}`;
}

/** Prints `parley: <message>` and exits 1; ApiErrors name the flag at fault. */
export function fail(error: unknown): never {
  let message = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError && error.param !== null) message = message.replace(`'${error.param}'`, flagFor(error.param));
  process.stderr.write(`parley: ${message}\n`);
  process.exit(1);
}

/** Parses an integer flag; undefined when absent. */
export function integerFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value.trim())) throw new Error(`${flag} must be an integer, got '${value.slice(0, 40)}'.`);
  return Number(value);
}
