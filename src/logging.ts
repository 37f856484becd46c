/**
 * Logging: one pino logger per process, installed as Temporal's runtime logger so workflow and activity
 * `log` calls (replay-aware in workflows) come out as structured pino lines, through Keel's redactor. Log
 * keys, never secrets.
 * The same one-per-process runtime carries the Prometheus exporter when metrics are on.
 */
import { Runtime, type LogLevel, type LogMetadata, type Logger } from '@temporalio/worker';
import { pino, type Logger as PinoLogger } from 'pino';
import { ConfigError } from './config.js';
import { keelHistogramBuckets } from './telemetry/metrics.js';
import { redact, redactText } from './workflows/redact.js';

/** Creates the process logger: to a file when given, else to the given fd (1 = stdout, 2 = stderr). */
export function createLogger(opts: { level?: string; file?: string; fd?: 1 | 2; sync?: boolean } = {}): PinoLogger {
  const sync = opts.sync ?? false;
  const destination = opts.file
    ? pino.destination({ dest: opts.file, mkdir: true, sync })
    : pino.destination({ fd: opts.fd ?? 1, sync });
  return pino(
    {
      level: opts.level ?? 'info',
      base: { service: 'keel' },
      // Keel's one redactor on every line: the message and every field (workflow, activity and tool logs alike).
      formatters: { log: (fields) => redact(fields, { maxString: 8000 }) as Record<string, unknown> },
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? redactText(a) : a)) as Parameters<typeof method>);
        },
      },
    },
    destination,
  );
}

/** Temporal's `Logger` interface, backed by pino. */
export class PinoTemporalLogger implements Logger {
  constructor(private readonly pino: PinoLogger) {}
  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const method = level.toLowerCase() as 'trace' | 'debug' | 'info' | 'warn' | 'error';
    this.pino[method](meta ?? {}, message);
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}

/** What the process's Temporal runtime serves besides logging. */
export interface RuntimeTelemetryOptions {
  /**
   * `ip:port` for Prometheus `/metrics` (KEEL_METRICS_ADDRESS): Temporal's worker metrics and Keel's
   * (`telemetry/metrics.ts`), from core's exporter; unset, nothing listens.
   */
  metricsAddress?: string;
}

let installed: { logger: PinoLogger; metricsAddress?: string } | undefined;

/**
 * Installs pino as Temporal's runtime logger, once per process (Temporal allows one Runtime), with the
 * Prometheus exporter when `metricsAddress` is given. Returns the logger that is installed. Core logs are
 * not forwarded: forwarding keeps the process alive.
 * @throws ConfigError naming KEEL_METRICS_ADDRESS when the address cannot be bound, or when the runtime
 *   was already installed with other metrics (a setting that would silently do nothing).
 */
export function installRuntimeLogger(logger: PinoLogger, opts: RuntimeTelemetryOptions = {}): PinoLogger {
  if (installed) {
    if (opts.metricsAddress !== undefined && opts.metricsAddress !== installed.metricsAddress) {
      throw new ConfigError(
        `KEEL_METRICS_ADDRESS: this process's Temporal runtime is already installed ${installed.metricsAddress ? `serving /metrics on ${installed.metricsAddress}` : 'without metrics'}; one endpoint per process, set by its first worker`,
      );
    }
    return installed.logger;
  }
  const metrics = opts.metricsAddress
    ? { metrics: { prometheus: { bindAddress: opts.metricsAddress, histogramBucketOverrides: keelHistogramBuckets() } } }
    : undefined;
  try {
    Runtime.install({ logger: new PinoTemporalLogger(logger), shutdownSignals: [], ...(metrics ? { telemetryOptions: metrics } : {}) });
  } catch (err) {
    if (!metrics) throw err;
    throw new ConfigError(`KEEL_METRICS_ADDRESS: cannot serve /metrics on ${opts.metricsAddress}: ${err instanceof Error ? err.message : String(err)}`);
  }
  installed = { logger, ...(opts.metricsAddress ? { metricsAddress: opts.metricsAddress } : {}) };
  return logger;
}
