// Small inline-SVG charts for the dashboard, drawn with the DOM (no library, nothing
// fetched): stacked bars over time buckets, and a sparkline. Every chart is an image with
// a text alternative that states the totals, and each bar names its value on hover.

const SVG = "http://www.w3.org/2000/svg";

/** Eight colours distinguishable in light and dark schemes (Okabe–Ito based). */
export const PALETTE = ["#3b6fe0", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#8f7cf0", "#8a8f98"];

/** Gives each group one colour for the page's lifetime, so a key keeps its colour across charts and refreshes. */
export function colourRegistry() {
  const assigned = new Map();
  return (group) => {
    if (!assigned.has(group)) assigned.set(group, PALETTE[assigned.size % PALETTE.length]);
    return assigned.get(group);
  };
}

function svgElement(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The smallest 1, 2 or 5 × 10^k step that covers `max` in about four ticks. */
function niceStep(max) {
  if (max <= 0) return 1;
  const rough = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((factor) => factor * magnitude).find((candidate) => candidate >= rough) ?? 10 * magnitude;
  return Math.max(1, step);
}

/**
 * @param {{ title: string, labels: string[], series: Array<{name: string, group: string, values: number[]}>,
 *           colourOf: (group: string) => string, format: (value: number) => string, width?: number }} chart
 * @returns {HTMLElement} a <figure> with the chart, its caption and its legend
 */
export function stackedBarChart(chart) {
  // Drawn at the size it is shown (default 640 wide), so text stays legible on a phone.
  const width = Math.max(260, Math.round(chart.width ?? 640));
  const height = 220;
  const margin = { top: 12, right: 10, bottom: 28, left: 52 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const count = chart.labels.length;
  const totals = chart.labels.map((_, index) => chart.series.reduce((sum, series) => sum + (series.values[index] ?? 0), 0));
  const max = Math.max(0, ...totals);
  const step = niceStep(max);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const y = (value) => margin.top + plotHeight - (value / top) * plotHeight;
  const slot = plotWidth / Math.max(1, count);

  const grand = totals.reduce((sum, value) => sum + value, 0);
  const breakdown = chart.series.map((series) => `${series.name} ${chart.format(series.values.reduce((a, b) => a + b, 0))}`).join(", ");
  const svg = svgElement("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `${chart.title}: ${chart.format(grand)} in total${breakdown === "" ? "" : ` (${breakdown})`}.`,
    class: "chart",
  });

  for (let tick = 0; tick <= top; tick += step) {
    svg.append(
      svgElement("line", { x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick), class: tick === 0 ? "axis" : "grid" }),
      svgElement("text", { x: margin.left - 6, y: y(tick) + 4, "text-anchor": "end", class: "tick" }, chart.format(tick)),
    );
  }
  const labelEvery = Math.max(1, Math.ceil(count / Math.max(2, Math.floor(plotWidth / 70))));
  chart.labels.forEach((label, index) => {
    if (index % labelEvery === 0) {
      svg.append(svgElement("text", { x: margin.left + slot * (index + 0.5), y: height - 8, "text-anchor": "middle", class: "tick" }, label));
    }
    let base = 0;
    for (const series of chart.series) {
      const value = series.values[index] ?? 0;
      if (value <= 0) continue;
      const bar = svgElement("rect", {
        x: margin.left + slot * index + slot * 0.15,
        y: y(base + value),
        width: Math.max(1, slot * 0.7),
        height: Math.max(1, y(base) - y(base + value)),
        fill: chart.colourOf(series.group),
      });
      bar.append(svgElement("title", {}, `${label} · ${series.name}: ${chart.format(value)}`));
      svg.append(bar);
      base += value;
    }
  });
  if (grand === 0) {
    svg.append(svgElement("text", { x: margin.left + plotWidth / 2, y: margin.top + plotHeight / 2, "text-anchor": "middle", class: "empty" }, "No requests in this window"));
  }

  const figure = document.createElement("figure");
  figure.className = "chart-figure";
  const caption = document.createElement("figcaption");
  const name = document.createElement("span");
  name.className = "chart-title";
  name.textContent = chart.title;
  const total = document.createElement("span");
  total.className = "chart-total";
  total.textContent = `${chart.format(grand)} total`;
  caption.append(name, total);
  figure.append(caption, svg, legend(chart.series, chart.colourOf));
  return figure;
}

function legend(series, colourOf) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const entry of series) {
    const item = document.createElement("li");
    const swatch = svgElement("svg", { viewBox: "0 0 10 10", width: 10, height: 10, "aria-hidden": "true" });
    swatch.append(svgElement("rect", { width: 10, height: 10, rx: 2, fill: colourOf(entry.group) }));
    const text = document.createElement("span");
    text.textContent = entry.name;
    item.title = entry.group;
    item.append(swatch, text);
    list.append(item);
  }
  return list;
}

/** A line of recent values (e.g. tokens per second at each refresh), scaled to its own maximum. */
export function sparkline(values, label) {
  const width = 160;
  const height = 36;
  const max = Math.max(1, ...values);
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, class: "sparkline", role: "img", "aria-label": label });
  if (values.length > 1) {
    const points = values.map((value, index) => `${((index / (values.length - 1)) * width).toFixed(1)},${(height - 2 - (value / max) * (height - 4)).toFixed(1)}`);
    svg.append(svgElement("polyline", { points: points.join(" "), fill: "none", class: "sparkline-line" }));
  }
  return svg;
}
