/**
 * The history benchmark's tools module: what its worker loads and bundles into the workflow code. One
 * read tool, `fetch_report`, that returns a large, deterministic JSON report (`kb` KiB of rows, then a
 * trailer naming the page), so each model call receives a big tool result. `maxResultBytes` is raised to
 * 256 KiB so the model is really shown the whole 200 KiB, not the default 64 KiB cut. Sandbox-safe: it
 * imports `keel/workflow` and zod only, like `examples/support-desk/tools.ts`.
 */
import { z } from 'zod';
import { defineTool } from 'keel/workflow';

/** What the model is shown of one result at most (bytes): above the benchmark's 200 KiB reports. */
export const REPORT_MAX_RESULT_BYTES = 256 * 1024;

/** The last field of a report, far past the 1 KiB preview history keeps: proof the model saw all of it. */
export const reportTrailer = (page: number): string => `page ${page} complete`;

/** One row of a report; ASCII only, so characters are bytes. */
function row(page: number, i: number) {
  return {
    id: page * 100_000 + i,
    sku: `SKU-${String(i).padStart(6, '0')}`,
    qty: (i * 7) % 13,
    price_cents: 100 + ((i * 7919) % 90_000),
    region: ['north', 'south', 'east', 'west'][i % 4],
    note: `row ${i} of page ${page}`,
  };
}

/**
 * The report for a page: rows until the JSON text is about `kb` KiB (within one row), then the trailer.
 * Deterministic: the same page and size give the same text on every attempt and replay.
 */
export function buildReport(page: number, kb: number) {
  const target = kb * 1024;
  const rows: Array<ReturnType<typeof row>> = [];
  // `{"page":…,"kb":…,"rows":[` … `],"end":"…"}` plus one comma per row after the first.
  let bytes = JSON.stringify({ page, kb, rows: [], end: reportTrailer(page) }).length;
  for (let i = 0; bytes < target && i < 1_000_000; i++) {
    const r = row(page, i);
    bytes += JSON.stringify(r).length + (rows.length > 0 ? 1 : 0);
    rows.push(r);
  }
  return { page, kb, rows, end: reportTrailer(page) };
}

/** Fetches one page of the sales report: a large result, on purpose. */
export const fetchReport = defineTool({
  name: 'fetch_report',
  description:
    'Fetch one page of the sales report as JSON rows (id, sku, qty, price_cents, region, note). Read-only; safe to repeat. ' +
    'Pages are large (about `kb` KiB each).',
  input: z.object({
    page: z.number().int().min(0).max(10_000).describe('Page number, from 0'),
    kb: z.number().int().min(1).max(1024).default(200).describe('Approximate page size in KiB'),
  }),
  risk: 'read',
  maxResultBytes: REPORT_MAX_RESULT_BYTES,
  run: (input) => Promise.resolve(buildReport(input.page, input.kb)),
});
