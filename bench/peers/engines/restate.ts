/**
 * Restate: `restate-server` (the binary inside `@restatedev/restate-server`) started here on free
 * loopback ports with a throw-away data directory, and a TypeScript SDK endpoint in this process (HTTP/2
 * cleartext on 127.0.0.1) serving one workflow, `agentSession`, whose `run` handler is the shared agent
 * loop with each model call and each tool call a `ctx.run` (journaled: its result is in Restate's log
 * before the handler goes on). A session is one request to the ingress, `POST /agentSession/<id>/run`,
 * that answers when the workflow has finished.
 */
import './polyfill.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import http2 from 'node:http2';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as restate from '@restatedev/restate-sdk';
import { agentLoop, type LoopInput, type LoopResult } from '../loop.js';
import { checkSession, PROMPT, type StepIO } from '../workload.js';
import { pkgVersion } from '../versions.js';
import type { Engine, StartEngine } from './types.js';

/** How long the server may take to come up and accept the deployment, in ms. */
const START_TIMEOUT_MS = 60_000;

/** The path of the server binary for this platform, as the package's own launcher finds it. */
function serverBinary(): string {
  return createRequire(import.meta.url).resolve(`@restatedev/restate-server-${os.platform()}-${os.arch()}/bin/restate-server`);
}

/** A free TCP port on 127.0.0.1 (closed again before the server binds it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The Restate workflow over the shared step I/O. */
function agentSession(io: StepIO) {
  return restate.workflow({
    name: 'agentSession',
    handlers: {
      run: async (ctx: restate.WorkflowContext, input: LoopInput): Promise<LoopResult> =>
        agentLoop(
          {
            callModel: (messages) => ctx.run('callModel', () => io.callModel(ctx.key, messages)),
            callTool: (use) => ctx.run('callTool', () => io.callTool(use)),
          },
          input,
        ),
    },
  });
}

/**
 * The keys of the effective configuration (`--dump-config` with this run's flags and environment) that
 * decide how a journal entry is made durable, as `section.key = value` lines.
 */
async function durabilitySettings(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<string[]> {
  const toml = await new Promise<string>((resolve, reject) => {
    const child = spawn(bin, [...args, '--dump-config'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`restate-server --dump-config exited with ${code}`))));
  });
  const wanted = new Map([
    ['', ['default-replication', 'default-num-partitions']],
    ['bifrost', ['default-provider']],
    ['log-server', ['rocksdb-disable-wal-fsync']],
    ['worker.storage', ['rocksdb-disable-wal']],
  ]);
  const found: string[] = [];
  let section = '';
  for (const line of toml.split('\n')) {
    const header = /^\[([^\]]+)\]$/.exec(line.trim());
    if (header) section = header[1]!;
    const kv = /^([a-z0-9-]+)\s*=\s*(.+)$/.exec(line.trim());
    if (kv && wanted.get(section)?.includes(kv[1]!)) found.push(`${section ? `${section}.` : ''}${kv[1]} = ${kv[2]}`);
  }
  return found;
}

/** The last lines of a log file, or why it cannot be read. */
function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${err instanceof Error ? err.message : String(err)})`;
  }
}

export const startRestate: StartEngine = async ({ io, steps, tmp, progress }) => {
  const bin = serverBinary();
  const dataDir = path.join(tmp, 'restate');
  await mkdir(dataDir, { recursive: true });
  const [ingressPort, adminPort, fabricPort] = [await freePort(), await freePort(), await freePort()];
  const args = ['--no-logo', '--listen-mode', 'tcp', '--node-name', 'bench', '--base-dir', dataDir, '--bind-address', `127.0.0.1:${fabricPort}`];
  const env = {
    ...process.env,
    RESTATE_INGRESS__BIND_ADDRESS: `127.0.0.1:${ingressPort}`,
    RESTATE_ADMIN__BIND_ADDRESS: `127.0.0.1:${adminPort}`,
    RESTATE_LOG_FILTER: 'warn',
    RESTATE_DISABLE_TELEMETRY: 'true',
  };
  const settings = await durabilitySettings(bin, args, env);

  // The SDK endpoint first, so the server can discover it as soon as it is up.
  // The SDK logs to the console (stdout) at info by default; only its warnings and errors, to stderr.
  const sdk = restate
    .endpoint()
    .bind(agentSession(io))
    .setLogger((meta, message, ...more: unknown[]) => {
      if (meta.level === 'warn' || meta.level === 'error') progress(`restate sdk ${meta.level}: ${[message, ...more].map(String).join(' ')}`);
    });
  const endpoint = http2.createServer(sdk.http2Handler());
  const endpointPort = await new Promise<number>((resolve, reject) => {
    endpoint.once('error', reject);
    endpoint.listen(0, '127.0.0.1', () => resolve((endpoint.address() as net.AddressInfo).port));
  });

  const logPath = path.join(dataDir, 'server.log');
  const logFd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(bin, args, { env, stdio: ['ignore', logFd, logFd] });
  } finally {
    closeSync(logFd);
  }
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = signal ? `killed by ${signal}` : `exited with ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      exited = `could not start: ${err.message}`;
      resolve();
    });
  });
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const admin = `http://127.0.0.1:${adminPort}`;
  const ingress = `http://127.0.0.1:${ingressPort}`;
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (exited === undefined) {
      child.kill('SIGTERM');
      const done = await Promise.race([exit.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) {
        child.kill('SIGKILL');
        await exit;
      }
    }
    // The server held HTTP/2 connections to the endpoint; they closed with it.
    await new Promise<void>((resolve) => endpoint.close(() => resolve()));
  };

  try {
    const started = Date.now();
    // Register the deployment (retried until the admin API answers and the cluster is provisioned), then wait for the ingress.
    for (;;) {
      // The log goes with the run's directory: its last lines go into the error.
      if (exited !== undefined) throw new Error(`restate-server ${exited}; its log ends:\n${logTail(logPath)}`);
      if (Date.now() - started > START_TIMEOUT_MS) throw new Error(`restate-server did not accept the deployment within ${START_TIMEOUT_MS / 1000} s; see ${logPath}`);
      const res = await fetch(`${admin}/deployments`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ uri: `http://127.0.0.1:${endpointPort}`, force: true }),
      }).catch(() => undefined);
      if (res?.ok) break;
      await res?.body?.cancel();
      await sleep(200);
    }
    for (;;) {
      const res = await fetch(`${ingress}/restate/health`).catch(() => undefined);
      await res?.body?.cancel();
      if (res?.ok) break;
      if (Date.now() - started > START_TIMEOUT_MS) throw new Error(`restate ingress not healthy within ${START_TIMEOUT_MS / 1000} s; see ${logPath}`);
      await sleep(200);
    }
    progress(`restate: server up, deployment registered in ${Date.now() - started} ms (ingress ${ingress}, admin ${admin}, endpoint :${endpointPort})`);
  } catch (err) {
    await stop();
    throw err;
  }

  const engine: Engine = {
    name: 'restate',
    version: `restate-server ${pkgVersion('@restatedev/restate-server')}, @restatedev/restate-sdk ${pkgVersion('@restatedev/restate-sdk')}`,
    durability: [
      `one node, defaults of restate-server ${pkgVersion('@restatedev/restate-server')} (${settings.join(', ')})`,
      `each step = 2 ctx.run entries; each result is appended to the log (log-server RocksDB, WAL fsync ${settings.includes('log-server.rocksdb-disable-wal-fsync = false') ? 'on' : 'off or unknown'}) before the handler sees it`,
    ],
    async runSession(sessionId) {
      const res = await fetch(`${ingress}/agentSession/${encodeURIComponent(sessionId)}/run`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: PROMPT, maxTurns: steps + 1 } satisfies LoopInput),
        signal: AbortSignal.timeout(120_000),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`restate session ${sessionId}: ${res.status} ${text.slice(0, 300)}`);
      checkSession('restate', sessionId, steps, JSON.parse(text) as LoopResult);
    },
    close: stop,
  };
  return engine;
};
