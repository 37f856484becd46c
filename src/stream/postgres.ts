/**
 * The stream bus for workers that share a PostgreSQL store (`KEEL_AUDIT_URL=postgres://…`), on one
 * machine or many: LISTEN/NOTIFY on one channel, each payload a JSON array of events. Nothing is stored.
 *
 * Publishing never waits on the database: `publish` queues the event and one send loop per bus drains the
 * queue through a single pooled connection, as many events per NOTIFY as fit, one NOTIFY at a time, so a
 * session's events arrive in the order they were published. A NOTIFY payload must stay under 8,000 bytes:
 * an event too big for one (7,900 bytes with the brackets) is split when it is text (`text_delta`: several
 * deltas of the same turn, attempt and block whose texts concatenate to the original) and truncated with an
 * ellipsis otherwise (`attempt_failed.error`, `tool_progress.message`: one-line summaries that lose their
 * tail). The queue holds at most 10,000 events; while the database is unreachable the oldest go first.
 * Every failure is reported to the logger and dropped, never thrown into a publisher.
 *
 * Subscribing opens the bus's one LISTEN connection (once); a lost connection is re-opened after a second
 * while there are subscribers, and what was published meanwhile is lost to them.
 */
import pg from 'pg';
import { dropReporter, silentStreamLogger, type StreamBusLogger } from './report.js';
import type { StreamBus, StreamEvent } from './types.js';

/** Options of {@link openPostgresStreamBus}. */
export interface PostgresStreamBusOptions {
  /** Where dropped events are reported (nowhere by default). */
  logger?: StreamBusLogger;
  /** The NOTIFY channel, a lower-case SQL identifier (`keel_stream`). */
  channel?: string;
}

/** Largest NOTIFY payload sent, in bytes (PostgreSQL's limit is 8,000 by default). */
export const MAX_NOTIFY_BYTES = 7_900;
/** Events queued while the database is slow or away, at most. */
const MAX_QUEUED = 10_000;
const RECONNECT_MS = 1_000;

const bytes = (s: string) => Buffer.byteLength(s);

/**
 * The event as JSON texts that each fit in a payload beside the array's brackets and commas: a text delta
 * split into several, a long `error`/`message` truncated; `[]` when it cannot be made to fit.
 */
export function fitEvent(event: StreamEvent, limit = MAX_NOTIFY_BYTES - 2): string[] {
  const json = JSON.stringify(event);
  if (bytes(json) <= limit) return [json];
  if (event.type === 'text_delta') {
    const chars = Array.from(event.text);
    if (chars.length < 2) return [];
    const mid = Math.ceil(chars.length / 2);
    return [
      ...fitEvent({ ...event, text: chars.slice(0, mid).join('') }, limit),
      ...fitEvent({ ...event, text: chars.slice(mid).join('') }, limit),
    ];
  }
  const field = event.type === 'attempt_failed' ? 'error' : event.type === 'tool_progress' ? 'message' : undefined;
  if (!field) return [];
  const text = (event as unknown as Record<string, string>)[field] ?? '';
  // Cut the field by the excess, then again if JSON escaping made the cut one too small.
  let keep = Array.from(text);
  for (let tries = 0; tries < 8 && keep.length > 0; tries++) {
    const excess = bytes(JSON.stringify({ ...event, [field]: `${keep.join('')}…` })) - limit;
    if (excess <= 0) return [JSON.stringify({ ...event, [field]: `${keep.join('')}…` })];
    keep = keep.slice(0, Math.max(0, keep.length - Math.max(excess, Math.ceil(keep.length / 8))));
  }
  const bare = JSON.stringify({ ...event, [field]: '…' });
  return bytes(bare) <= limit ? [bare] : [];
}

/** Opens a PostgreSQL stream bus on `url` (a `postgres://` URL). Connections are made when first needed. */
export function openPostgresStreamBus(url: string, opts: PostgresStreamBusOptions = {}): StreamBus {
  const channel = opts.channel ?? 'keel_stream';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new Error(`stream channel '${channel}': expected a lower-case SQL identifier`);
  const report = dropReporter(opts.logger ?? silentStreamLogger, 'postgres', { secrets: passwordsOf(url) });
  const pool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 5_000, idleTimeoutMillis: 30_000 });
  // A pooled connection that breaks while idle is replaced on the next query; unheard, 'error' would crash.
  pool.on('error', (err) => report.dropped('connection', err, 0));

  const queue: string[] = [];
  let sending: Promise<void> | undefined;
  const subscriptions = new Map<string, Set<(event: StreamEvent) => void>>();
  let subscribers = 0;
  let listener: pg.Client | undefined;
  let listening: Promise<void> | undefined;
  let reconnect: NodeJS.Timeout | undefined;
  let closed = false;

  /** Sends what is queued, one NOTIFY at a time, as many events per payload as fit. */
  const drain = async () => {
    while (queue.length > 0 && !closed) {
      // `[` + events joined by `,` + `]`; each event fits alone (fitEvent), so a batch holds at least one.
      let size = 2;
      let n = 0;
      for (; n < queue.length; n++) {
        const add = bytes(queue[n]!) + (n > 0 ? 1 : 0);
        if (size + add > MAX_NOTIFY_BYTES) break;
        size += add;
      }
      const batch = queue.splice(0, Math.max(n, 1));
      try {
        await pool.query('SELECT pg_notify($1, $2)', [channel, `[${batch.join(',')}]`]);
      } catch (err) {
        report.dropped('publish', err, batch.length);
      }
    }
  };

  const deliver = (payload: string) => {
    let events: StreamEvent[];
    try {
      events = JSON.parse(payload) as StreamEvent[];
    } catch (err) {
      report.dropped('parse', err);
      return;
    }
    for (const event of events) {
      const subs = subscriptions.get(event.sessionId);
      if (!subs) continue;
      for (const fn of [...subs]) {
        try {
          fn(event);
        } catch (err) {
          report.dropped('listener', err);
        }
      }
    }
  };

  /** Opens the LISTEN connection once; resolves when LISTEN is in effect. */
  const listen = (): Promise<void> => {
    listening ??= (async () => {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
      const lost = (err?: unknown) => {
        if (err) report.dropped('listen', err, 0);
        if (listener !== client) return;
        listener = undefined;
        listening = undefined;
        void client.end().catch(() => {});
        if (!closed && subscribers > 0 && !reconnect) {
          reconnect = setTimeout(() => {
            reconnect = undefined;
            if (!closed && subscribers > 0) listen().catch((e: unknown) => lost(e));
          }, RECONNECT_MS);
        }
      };
      client.on('notification', (msg) => {
        if (msg.channel === channel && msg.payload) deliver(msg.payload);
      });
      client.on('error', lost);
      client.on('end', () => lost());
      listener = client;
      try {
        await client.connect();
        await client.query(`LISTEN "${channel}"`);
        if (closed) await client.end();
      } catch (err) {
        listener = undefined;
        listening = undefined;
        await client.end().catch(() => {});
        throw err;
      }
    })();
    return listening;
  };

  return {
    kind: 'postgres',
    publish(event) {
      if (closed) return;
      let parts: string[];
      try {
        parts = fitEvent(event);
      } catch (err) {
        report.dropped('encode', err);
        return;
      }
      if (parts.length === 0) report.dropped('encode', new Error(`a ${event.type} event does not fit in a NOTIFY payload`));
      queue.push(...parts);
      if (queue.length > MAX_QUEUED) report.dropped('queue full', new Error('the database is not keeping up'), queue.splice(0, queue.length - MAX_QUEUED).length);
      sending ??= drain().finally(() => {
        sending = undefined;
      });
    },
    /** @throws Error when the LISTEN connection cannot be opened (the gateway answers that it cannot stream). */
    async subscribe(sessionId, listenerFn) {
      if (closed) throw new Error('stream bus closed');
      await listen();
      const entry = (event: StreamEvent) => listenerFn(event);
      let subs = subscriptions.get(sessionId);
      if (!subs) subscriptions.set(sessionId, (subs = new Set()));
      subs.add(entry);
      subscribers += 1;
      let subscribed = true;
      return () => {
        if (!subscribed) return;
        subscribed = false;
        subs.delete(entry);
        if (subs.size === 0 && subscriptions.get(sessionId) === subs) subscriptions.delete(sessionId);
        subscribers -= 1;
      };
    },
    async close() {
      if (closed) return;
      // What is queued gets a second to go out; the send loop stops at the next batch after that.
      if (sending) await Promise.race([sending, new Promise((r) => setTimeout(r, 1_000).unref())]);
      closed = true;
      if (reconnect) clearTimeout(reconnect);
      subscriptions.clear();
      const client = listener;
      listener = undefined;
      await Promise.all([client?.end().catch(() => {}), pool.end().catch(() => {})]);
    },
  };
}

/** The passwords a URL may carry (in the authority or as `?password=`), to mask in reports. */
function passwordsOf(url: string): string[] {
  try {
    const u = new URL(url);
    return [u.password, decodeURIComponent(u.password), u.searchParams.get('password') ?? ''].filter(Boolean);
  } catch {
    return [];
  }
}
