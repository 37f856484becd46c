/**
 * Logging: one pino logger per process, installed as Temporal's runtime logger so workflow and activity
 * `log` calls (replay-aware in workflows) come out as structured pino lines. Log keys, never secrets.
 */
import { Runtime, type LogLevel, type LogMetadata, type Logger } from '@temporalio/worker';
import { pino, type Logger as PinoLogger } from 'pino';

/** Creates the process logger: to a file when given, else to the given fd (1 = stdout, 2 = stderr). */
export function createLogger(opts: { level?: string; file?: string; fd?: 1 | 2; sync?: boolean } = {}): PinoLogger {
  const sync = opts.sync ?? false;
  const destination = opts.file
    ? pino.destination({ dest: opts.file, mkdir: true, sync })
    : pino.destination({ fd: opts.fd ?? 1, sync });
  return pino({ level: opts.level ?? 'info', base: { service: 'keel' } }, destination);
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

let installed: PinoLogger | undefined;

/**
 * Installs pino as Temporal's runtime logger, once per process (Temporal allows one Runtime). Returns
 * the logger that is installed. Core logs are not forwarded: forwarding keeps the process alive.
 */
export function installRuntimeLogger(logger: PinoLogger): PinoLogger {
  if (installed) return installed;
  Runtime.install({ logger: new PinoTemporalLogger(logger), shutdownSignals: [] });
  installed = logger;
  return logger;
}
