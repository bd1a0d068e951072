/**
 * A process's resident memory as Linux reports it in /proc/<pid>/status, read from outside
 * (the process need not cooperate). VmRSS = RssAnon (heap, KV cache, JS heap) + RssFile
 * (file pages mapped in: node-llama-cpp maps GGUF weights, so touched weight pages count
 * here) + RssShmem.
 */
import { readFileSync } from "node:fs";

export interface ResidentMemory {
  /** Bytes resident in total (VmRSS). */
  readonly rss: number;
  /** Anonymous memory resident (RssAnon). */
  readonly anon: number;
  /** File-backed pages resident (RssFile), the mapped model weights among them. */
  readonly file: number;
  /** The peak VmRSS so far (VmHWM). */
  readonly peak: number;
}

export function readResidentMemory(pid: number): ResidentMemory {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kibibytes = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
    if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(match[1]) * 1024;
  };
  return { rss: kibibytes("VmRSS"), anon: kibibytes("RssAnon"), file: kibibytes("RssFile"), peak: kibibytes("VmHWM") };
}

export const MIB = 1024 * 1024;

/** Bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return (bytes / MIB).toFixed(1);
}

export interface LinearFit {
  readonly slope: number;
  readonly intercept: number;
  /** Largest distance of a point from the line, in the units of y. */
  readonly maxResidual: number;
}

/** Ordinary least squares of y on x. */
export function linearFit(points: ReadonlyArray<readonly [number, number]>): LinearFit {
  const count = points.length;
  if (count < 2) throw new Error("a line needs at least two points");
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / count;
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / count;
  let covariance = 0;
  let variance = 0;
  for (const [x, y] of points) {
    covariance += (x - meanX) * (y - meanY);
    variance += (x - meanX) ** 2;
  }
  const slope = covariance / variance;
  const intercept = meanY - slope * meanX;
  const maxResidual = Math.max(...points.map(([x, y]) => Math.abs(y - (intercept + slope * x))));
  return { slope, intercept, maxResidual };
}
