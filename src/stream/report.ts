/**
 * How a stream bus reports the events it drops. A bus never throws into its callers (a lost stream event
 * costs a watcher some text, never the session), so its failures go to a logger instead, and at a rate a
 * log can bear: the first failure at once, then at most one line per interval with how many were dropped
 * since, so a database that is down for a minute costs a few lines, not one per token.
 */

/** The logger a bus reports to: pino's call shape (`logger.warn(obj, msg)`), which the worker's pino logger fits. */
export interface StreamBusLogger {
  warn(obj: object, msg: string): void;
}

/** A logger that drops everything: the default of a bus made without one. */
export const silentStreamLogger: StreamBusLogger = { warn() {} };

/**
 * Reports failures of one bus: `dropped(what, err, count)` logs at most once per `intervalMs` (30 s), with
 * each of `secrets` (a database password, say) masked in the error text.
 */
export function dropReporter(logger: StreamBusLogger, kind: string, opts: { intervalMs?: number; secrets?: string[] } = {}) {
  const intervalMs = opts.intervalMs ?? 30_000;
  const secrets = (opts.secrets ?? []).filter((s) => s.length > 0);
  let lastAt = -Infinity;
  let since = 0;
  return {
    /** `count` events (or one operation: 0) were lost because of `err` while doing `what`. */
    dropped(what: string, err: unknown, count = 1): void {
      since += count;
      const now = Date.now();
      if (now - lastAt < intervalMs) return;
      lastAt = now;
      // Messages of database drivers name hosts and SQL, never event contents; keep the first line only.
      let error = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
      for (const secret of secrets) error = error.replaceAll(secret, '[redacted]');
      logger.warn({ stream: kind, what, dropped: since, error }, 'stream bus: events dropped');
      since = 0;
    },
  };
}
