/**
 * Child processes and waiting, for tests that kill workers: `keel worker` started as its own process on
 * the shared workflow bundle, SIGKILL that waits for the exit, and polling with a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { expect, inject } from 'vitest';
import { EXAMPLE_TOOLS, ROOT } from './paths.js';

const children = new Set<ChildProcess>();

/**
 * Starts `keel worker --tools <module>` as its own process with `env` and resolves once it polls its task
 * queue. `bundle` is the prebuilt workflow bundle of the same module (the example's by default).
 */
export function spawnWorker(env: Record<string, string>, tools = EXAMPLE_TOOLS, bundle = inject('workflowBundlePath')): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'keel.js'), 'worker', '--tools', tools], {
    env: { ...process.env, ...env, KEEL_WORKFLOW_BUNDLE: bundle, KEEL_LOG_FILE: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('worker ready')) resolve(child);
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`worker exited early (${code}): ${out}`)));
  });
}

/** SIGKILLs a child and waits until it has exited. */
export async function sigkill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** Kills every worker this file started (for afterAll). */
export async function killWorkers(): Promise<void> {
  await Promise.all([...children].map(sigkill));
}

/** Polls `probe` until it returns something other than undefined; errors count as not yet. */
export async function until<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${lastErr ? ` (last error: ${lastErr instanceof Error ? lastErr.message : String(lastErr)})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr !== null && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** What a finished `keel` command left. */
export interface KeelRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the `keel` CLI as a user's script would, with `env` over this process's environment. */
export function runKeel(args: string[], env: Record<string, string | undefined>, input?: string): Promise<KeelRun> {
  return runCommand(process.execPath, [path.join(ROOT, 'bin', 'keel.js'), ...args], env, input);
}

/** Runs a command with `env` over this process's environment and `input` on its stdin (none by default). */
export function runCommand(command: string, args: string[], env: Record<string, string | undefined>, input?: string): Promise<KeelRun> {
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (input !== undefined) child.stdin!.end(input);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** Asserts a finished command was refused as bad usage (exit 2, nothing on stdout, one line on stderr); returns the line. */
export function expectUsageError(r: KeelRun): string {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0]!;
}
