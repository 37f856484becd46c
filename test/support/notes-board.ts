/**
 * The test app's downstream: a notice board over HTTP that keeps every posted note with its idempotency
 * key (a repeated key returns the first note, as a Stripe-style API does), so tests can count effects.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A posted note. */
export interface Note {
  id: string;
  text: string;
  idempotencyKey: string;
}

/** A running notice board, and the wiki beside it (`/wiki`, which a test can take down). */
export interface NotesBoard {
  url: string;
  notes: Note[];
  /** While true, `/wiki` answers 503. */
  wikiDown: boolean;
  /** Requests `/wiki` received. */
  wikiRequests: number;
  /** When each `/ping` arrived (ms since the epoch). */
  pings: number[];
  /** The trace headers of every request, in arrival order (`traceparent`, `x-trace-id`). */
  traces: { path: string; traceparent?: string; traceId?: string }[];
  close(): Promise<void>;
}

/** Starts a notice board on a free port of 127.0.0.1. */
export async function startNotesBoard(): Promise<NotesBoard> {
  const notes: Note[] = [];
  const board = { wikiDown: false, wikiRequests: 0, pings: [] as number[], traces: [] as NotesBoard['traces'] };
  const server = createServer((req, res) => {
    const [traceparent, traceId] = [req.headers.traceparent, req.headers['x-trace-id']].map((h) => (typeof h === 'string' ? h : undefined));
    board.traces.push({ path: req.url?.split('?')[0] ?? '', ...(traceparent ? { traceparent } : {}), ...(traceId ? { traceId } : {}) });
    if (req.url?.startsWith('/ping')) {
      board.pings.push(Date.now());
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      return;
    }
    if (req.url?.startsWith('/wiki')) {
      board.wikiRequests += 1;
      if (board.wikiDown) res.writeHead(503).end('{"error":"down"}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ pages: ['Onboarding', 'On-call'] }));
      return;
    }
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const key = String(req.headers['idempotency-key'] ?? '');
      const existing = notes.find((n) => n.idempotencyKey === key);
      const note = existing ?? { id: `note_${notes.length + 1}`, text: (JSON.parse(body) as { text: string }).text, idempotencyKey: key };
      if (!existing) notes.push(note);
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify(note));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(board, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/notes`,
    notes,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}
