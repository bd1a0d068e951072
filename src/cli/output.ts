/** Small helpers for command output: aligned tables, and errors as one line with exit code 1. */
import { ApiError } from "../protocol/errors.js";

export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)));
  const line = (cells: readonly string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** API field names as the CLI's flags spell them. */
const FLAGS: Record<string, string> = {
  name: "--name",
  models: "--models",
  rpm: "--rpm",
  tpm: "--tpm",
  max_concurrent: "--max-concurrent",
  budget_tokens: "--budget-tokens",
  budget_period: "--budget-period",
  expires_at: "--expires",
  since: "--since",
  until: "--until",
  by: "--by",
};

/** Prints `parley: <message>` and exits 1; field names in the message become the flags that set them. */
export function fail(error: unknown): never {
  let message = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError) {
    message = message.replace(/'(models)\[\d+\]'|'([a-z_]+)'/g, (quoted: string, list: string | undefined, field: string | undefined) => FLAGS[list ?? field ?? ""] ?? quoted);
  }
  process.stderr.write(`parley: ${message}\n`);
  process.exit(1);
}

/** Parses an integer flag; undefined when absent. */
export function integerFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value.trim())) throw new Error(`${flag} must be an integer, got '${value.slice(0, 40)}'.`);
  return Number(value);
}
