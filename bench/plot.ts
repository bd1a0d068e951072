/**
 * A PNG line chart of aggregate decode tokens/s against concurrent streams for Parley,
 * llama-server and llama-batched-bench, from the concurrency benchmark's results.
 *
 *   node --import tsx bench/plot.ts
 *
 * Environment knobs (defaults in brackets):
 *   INPUT     results to read: a .json written by bench/concurrency.ts, or its .md table
 *             [bench/results/concurrency.json if present, else bench/results/concurrency.md]
 *   OUTPUT    the PNG to write [bench/results/concurrency.png]
 *   PARLEY_CHROMIUM  the chromium that renders it [/usr/bin/chromium]
 *
 * The chart is drawn as SVG here, then rendered by Debian's headless chromium through
 * playwright-core (no plotting dependency, no browser download).
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { PROJECT_ROOT } from "./lib/processes.js";

const RESULTS = path.join(PROJECT_ROOT, "bench/results");
const JSON_INPUT = path.join(RESULTS, "concurrency.json");
const INPUT = process.env.INPUT ?? (existsSync(JSON_INPUT) ? JSON_INPUT : path.join(RESULTS, "concurrency.md"));
const OUTPUT = process.env.OUTPUT ?? path.join(RESULTS, "concurrency.png");
const CHROMIUM = process.env.PARLEY_CHROMIUM ?? "/usr/bin/chromium";

interface Series {
  readonly name: string;
  readonly color: string;
  /** [concurrent streams, aggregate tokens/s] */
  readonly points: ReadonlyArray<readonly [number, number]>;
}

interface Chart {
  readonly series: readonly Series[];
  /** Lines saying what was measured, how, where and when. */
  readonly caption: readonly string[];
}

/** Smallest vertical distance between two value labels at one level, in pixels. */
const LABEL_GAP = 17;

const COLORS = { parley: "#d9480f", parleyArm: "#f59f00", llamaServer: "#1c7ed6", batchedBench: "#5f3dc4" } as const;

interface ConcurrencyJson {
  readonly measuredAt: string;
  readonly model: string;
  readonly threads: number;
  readonly tokens: number;
  readonly rounds: number;
  readonly cpu: string;
  readonly cores: number;
  readonly levels: ReadonlyArray<{
    streams: number;
    llamaServer: number;
    parley: number;
    /** The optional second Parley arm (PARLEY_ARM="FLAGS"). */
    parleyArm?: { flags: string; tokensPerS: number };
    batchedBench: number | null;
  }>;
}

function fromJson(text: string): Chart {
  const results = JSON.parse(text) as ConcurrencyJson;
  const pick = (value: (level: ConcurrencyJson["levels"][number]) => number | null) =>
    results.levels.flatMap((level) => {
      const rate = value(level);
      return rate === null || !Number.isFinite(rate) ? [] : [[level.streams, rate] as const];
    });
  const arm = results.levels.find((level) => level.parleyArm !== undefined)?.parleyArm?.flags;
  return {
    series: [
      { name: "Parley (--parallel N)", color: COLORS.parley, points: pick((level) => level.parley) },
      ...(arm === undefined ? [] : [{ name: `Parley ${arm}`, color: COLORS.parleyArm, points: pick((level) => level.parleyArm?.tokensPerS ?? null) }]),
      { name: "llama-server (--parallel N)", color: COLORS.llamaServer, points: pick((level) => level.llamaServer) },
      { name: "llama-batched-bench (native ceiling)", color: COLORS.batchedBench, points: pick((level) => level.batchedBench) },
    ],
    caption: [
      `${results.model.charAt(0).toUpperCase()}${results.model.slice(1)}, ${results.threads} threads for every engine, ${results.tokens} greedy tokens per stream, medians of ${results.rounds} rounds`,
      `${results.cpu} (${results.cores} cores), measured ${results.measuredAt.slice(0, 10)}`,
    ],
  };
}

/** The table of concurrency.md: | streams | llama-server | Parley | Parley / llama-server | llama-batched-bench | … |, plus its header lines. */
function fromMarkdown(text: string): Chart {
  const parley: Array<[number, number]> = [];
  const server: Array<[number, number]> = [];
  const batched: Array<[number, number]> = [];
  for (const line of text.split("\n")) {
    const cells = line.split("|").map((cell) => cell.trim()).filter((cell) => cell !== "");
    if (cells.length < 5 || !/^\d+$/.test(cells[0] ?? "")) continue;
    const streams = Number(cells[0]);
    const add = (into: Array<[number, number]>, cell: string | undefined) => {
      const value = Number(cell);
      if (Number.isFinite(value)) into.push([streams, value]);
    };
    add(server, cells[1]);
    add(parley, cells[2]);
    add(batched, cells[4]);
  }
  const measured = /^Measured (\S+) on (.+?)\.$/m.exec(text);
  const setup = /^(Synthetic .+?), (\d+ threads) .+?, (\d+ greedy tokens per stream)/m.exec(text);
  const rounds = /medians of (\d+) rounds/.exec(text);
  return {
    series: [
      { name: "Parley (--parallel N)", color: COLORS.parley, points: parley },
      { name: "llama-server (--parallel N)", color: COLORS.llamaServer, points: server },
      { name: "llama-batched-bench (native ceiling)", color: COLORS.batchedBench, points: batched },
    ],
    caption: [
      [setup === null ? undefined : `${setup[1]}, ${setup[2]} for every engine, ${setup[3]}`, rounds === null ? undefined : `medians of ${rounds[1]} rounds`]
        .filter((part) => part !== undefined)
        .join(", "),
      measured === null ? "" : `${measured[2]}, measured ${measured[1]?.slice(0, 10)}`,
    ],
  };
}

/** A round axis maximum: 1, 2 or 5 times a power of ten, at least `value`. */
function niceCeiling(value: number): { max: number; step: number } {
  const rough = value / 5;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((factor) => factor * power).find((candidate) => candidate >= rough) ?? 10 * power;
  return { max: Math.ceil(value / step) * step, step };
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function renderSvg(chart: Chart, source: string): { svg: string; width: number; height: number } {
  const width = 960;
  const height = 600;
  const margin = { top: 112, right: 80, bottom: 96, left: 84 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const all = chart.series.flatMap((series) => series.points);
  if (all.length === 0) throw new Error(`no numbers found in ${source}`);
  const levels = [...new Set(all.map(([streams]) => streams))].sort((a, b) => a - b);
  const xMax = Math.max(...levels);
  const { max: yMax, step: yStep } = niceCeiling(Math.max(...all.map(([, rate]) => rate)) * 1.08);
  const x = (streams: number) => margin.left + (streams / xMax) * plotWidth;
  const y = (rate: number) => margin.top + plotHeight - (rate / yMax) * plotHeight;
  const parts: string[] = [];
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(`<text x="${margin.left}" y="40" font-size="22" font-weight="600" fill="#212529">Aggregate decode tokens/s against concurrent streams</text>`);
  chart.caption.forEach((line, index) => parts.push(`<text x="${margin.left}" y="${66 + index * 18}" font-size="13" fill="#495057">${escape(line)}</text>`));
  for (let tick = 0; tick <= yMax + 1e-9; tick += yStep) {
    parts.push(`<line x1="${margin.left}" x2="${margin.left + plotWidth}" y1="${y(tick)}" y2="${y(tick)}" stroke="${tick === 0 ? "#495057" : "#e9ecef"}"/>`);
    parts.push(`<text x="${margin.left - 10}" y="${y(tick) + 4}" font-size="13" text-anchor="end" fill="#495057">${Number(tick.toFixed(2))}</text>`);
  }
  parts.push(`<line x1="${margin.left}" x2="${margin.left}" y1="${margin.top}" y2="${margin.top + plotHeight}" stroke="#495057"/>`);
  for (const streams of levels) {
    parts.push(`<line x1="${x(streams)}" x2="${x(streams)}" y1="${margin.top + plotHeight}" y2="${margin.top + plotHeight + 6}" stroke="#495057"/>`);
    parts.push(`<text x="${x(streams)}" y="${margin.top + plotHeight + 24}" font-size="14" text-anchor="middle" fill="#212529">${streams}</text>`);
  }
  parts.push(`<text x="${margin.left + plotWidth / 2}" y="${margin.top + plotHeight + 52}" font-size="14" text-anchor="middle" fill="#212529">concurrent streams (each server with --parallel N; batched-bench -npl N)</text>`);
  parts.push(`<text transform="translate(24 ${margin.top + plotHeight / 2}) rotate(-90)" font-size="14" text-anchor="middle" fill="#212529">aggregate decode tokens/s</text>`);
  chart.series.forEach((series, index) => {
    const line = series.points.map(([streams, rate], at) => `${at === 0 ? "M" : "L"}${x(streams).toFixed(1)},${y(rate).toFixed(1)}`).join(" ");
    parts.push(`<path d="${line}" fill="none" stroke="${series.color}" stroke-width="3" stroke-linejoin="round"/>`);
    for (const [streams, rate] of series.points) parts.push(`<circle cx="${x(streams)}" cy="${y(rate)}" r="5" fill="${series.color}"/>`);
    const legendY = margin.top + 8 + index * 24;
    parts.push(`<line x1="${margin.left + 20}" x2="${margin.left + 50}" y1="${legendY}" y2="${legendY}" stroke="${series.color}" stroke-width="3"/>`);
    parts.push(`<circle cx="${margin.left + 35}" cy="${legendY}" r="5" fill="${series.color}"/>`);
    parts.push(`<text x="${margin.left + 60}" y="${legendY + 5}" font-size="14" fill="#212529">${escape(series.name)}</text>`);
  });
  // Value labels right of their points; at each level, labels closer than a line's height are pushed apart.
  for (const streams of levels) {
    const labels = chart.series
      .flatMap((series) => series.points.filter(([at]) => at === streams).map(([, rate]) => ({ rate, color: series.color, at: y(rate) })))
      .sort((a, b) => a.at - b.at);
    for (let index = 1; index < labels.length; index++) {
      const previous = labels[index - 1]!;
      const label = labels[index]!;
      label.at = Math.max(label.at, previous.at + LABEL_GAP);
    }
    for (const label of labels) {
      parts.push(
        `<text x="${x(streams) + 10}" y="${label.at + 5}" font-size="13" font-weight="600" fill="${label.color}" stroke="#ffffff" stroke-width="4" paint-order="stroke">${label.rate.toFixed(1)}</text>`,
      );
    }
  }
  parts.push(`<text x="${margin.left}" y="${height - 16}" font-size="12" fill="#868e96">${escape(`from ${path.relative(PROJECT_ROOT, source)} (bench/concurrency.ts); drawn by bench/plot.ts`)}</text>`);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif">${parts.join("")}</svg>`;
  return { svg, width, height };
}

async function main(): Promise<void> {
  const text = readFileSync(INPUT, "utf8");
  const chart = INPUT.endsWith(".json") ? fromJson(text) : fromMarkdown(text);
  const { svg, width, height } = renderSvg(chart, INPUT);
  if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM} (install Debian's 'chromium' package, or set PARLEY_CHROMIUM)`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"] });
  try {
    const page = await browser.newPage({ viewport: { width, height }, deviceScaleFactor: 2 });
    await page.setContent(`<!doctype html><html><body style="margin:0">${svg}</body></html>`);
    await page.locator("svg").screenshot({ path: OUTPUT });
  } finally {
    await browser.close();
  }
  console.log(`wrote ${path.relative(PROJECT_ROOT, OUTPUT)} from ${path.relative(PROJECT_ROOT, INPUT)}`);
}

await main();
