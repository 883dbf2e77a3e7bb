/**
 * Line charts of a benchmark's series: an SVG drawn here, turned into a PNG by Debian's chromium
 * through playwright-core (the same browser the dashboard test drives; it downloads nothing).
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

export interface Series {
  name: string;
  /** [x, y] points, x ascending. */
  points: [number, number][];
}

export interface LineChart {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
}

const palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf'];
const width = 960;
const height = 540;
const margin = { top: 70, right: 30, bottom: 60, left: 90 };

/** 1, 2 or 5 times a power of ten: tick steps people read at a glance. */
function niceStep(span: number, ticks: number): number {
  const raw = span / Math.max(1, ticks);
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function format(value: number): string {
  if (Math.abs(value) >= 1_000_000) return `${value / 1_000_000}M`;
  if (Math.abs(value) >= 1_000) return `${value / 1_000}k`;
  return String(Math.round(value * 100) / 100);
}

/** The chart as a standalone SVG document. */
export function lineChartSvg(chart: LineChart): string {
  const all = chart.series.flatMap((s) => s.points);
  const xMax = Math.max(1, ...all.map(([x]) => x));
  const yMax = Math.max(1, ...all.map(([, y]) => y));
  const xStep = niceStep(xMax, 10);
  const yStep = niceStep(yMax, 8);
  const xTop = Math.ceil(xMax / xStep) * xStep;
  const yTop = Math.ceil(yMax / yStep) * yStep;
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const px = (x: number): number => margin.left + (x / xTop) * plotW;
  const py = (y: number): number => margin.top + plotH - (y / yTop) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${margin.left}" y="30" font-size="20" font-weight="bold">${escape(chart.title)}</text>`,
  ];
  if (chart.subtitle !== undefined)
    parts.push(
      `<text x="${margin.left}" y="52" font-size="13" fill="#555">${escape(chart.subtitle)}</text>`,
    );
  for (let y = 0; y <= yTop + yStep / 2; y += yStep) {
    parts.push(
      `<line x1="${margin.left}" x2="${width - margin.right}" y1="${py(y)}" y2="${py(y)}" stroke="#e5e5e5"/>`,
      `<text x="${margin.left - 8}" y="${py(y) + 4}" font-size="12" text-anchor="end" fill="#333">${format(y)}</text>`,
    );
  }
  for (let x = 0; x <= xTop + xStep / 2; x += xStep) {
    parts.push(
      `<line x1="${px(x)}" x2="${px(x)}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#f0f0f0"/>`,
      `<text x="${px(x)}" y="${margin.top + plotH + 18}" font-size="12" text-anchor="middle" fill="#333">${format(x)}</text>`,
    );
  }
  parts.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 15}" font-size="14" text-anchor="middle">${escape(chart.xLabel)}</text>`,
    `<text transform="translate(22 ${margin.top + plotH / 2}) rotate(-90)" font-size="14" text-anchor="middle">${escape(chart.yLabel)}</text>`,
  );
  chart.series.forEach((series, i) => {
    const color = palette[i % palette.length] ?? '#000';
    const path = series.points
      .map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(y).toFixed(1)}`)
      .join(' ');
    parts.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2.5"/>`);
    const ly = margin.top + 18 + i * 22;
    const lx = width - margin.right - 300;
    parts.push(
      `<line x1="${lx}" x2="${lx + 28}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`,
      `<text x="${lx + 36}" y="${ly}" font-size="13">${escape(series.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}

const chromiumPath = '/usr/bin/chromium';

/**
 * Writes the chart as `<file>.svg` and, when chromium is installed, `<file>.png`.
 * @returns the files written.
 */
export async function writeChart(chart: LineChart, file: string): Promise<string[]> {
  const svg = lineChartSvg(chart);
  await writeFile(`${file}.svg`, svg);
  if (!existsSync(chromiumPath)) return [`${file}.svg`];
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  });
  try {
    const page = await browser.newPage({ viewport: { width, height } });
    await page.setContent(`<!doctype html><body style="margin:0">${svg}</body>`);
    await page.locator('svg').screenshot({ path: `${file}.png` });
  } finally {
    await browser.close();
  }
  return [`${file}.svg`, `${file}.png`];
}
