/** Reading Parley's Prometheus text from `GET /metrics`: samples keyed by name and sorted labels. */

export type MetricSamples = ReadonlyMap<string, number>;

export async function scrapeMetrics(url: string): Promise<MetricSamples> {
  const response = await fetch(`${url}/metrics`);
  if (!response.ok) throw new Error(`GET /metrics: HTTP ${response.status}`);
  const samples = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match === null) continue;
    samples.set(`${match[1]}${match[2] ?? ""}`, Number(match[3]));
  }
  return samples;
}

/** The sum of every sample of `name` whose labels include all of `labels` (in any order). */
export function metricValue(samples: MetricSamples, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  let total = 0;
  let found = false;
  for (const [key, value] of samples) {
    if (!(key === name || key.startsWith(`${name}{`))) continue;
    if (!wanted.every((pair) => key.includes(pair))) continue;
    total += value;
    found = true;
  }
  return found ? total : Number.NaN;
}
