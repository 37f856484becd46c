/**
 * The operators' commands, run as a user's script runs them: `keel tools disable | enable | list` and
 * `keel circuits`, against a SQLite store in a temp directory and the support-desk example's tools
 * module. They need only the store: no Temporal server, no worker.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqliteStore, type BreakerRow, type DisabledTool } from '../src/store/index.js';
import { expectUsageError, runKeel } from './support/processes.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'keel-circuits-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh store file per test, so tests do not see each other's switches. */
let n = 0;
const freshStore = () => path.join(dir, `keel-${++n}.sqlite`);

const keel = (store: string, args: string[], env: Record<string, string> = {}) =>
  runKeel(args, { KEEL_AUDIT_URL: store, KEEL_TOOLS: 'examples/support-desk/tools.ts', USER: 'ops-bot', ...env });

/** The one-line reason of a bad-usage exit. */

describe('keel tools', () => {
  it('disable shows up in list and circuits with its reason; enable removes it', async () => {
    const store = freshStore();
    const disabled = await keel(store, ['tools', 'disable', 'search_kb', '--reason', 'KB index rebuilding', '--as', 'alice', '--json']);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(JSON.parse(disabled.stdout)).toMatchObject({ disabled: true, tool: 'search_kb', reason: 'KB index rebuilding', by: 'alice' });

    const list = await keel(store, ['tools', 'list', '--json']);
    expect(list.code, list.stderr).toBe(0);
    const listed = (JSON.parse(list.stdout) as { disabled: DisabledTool[] }).disabled;
    expect(listed).toEqual([{ tool: 'search_kb', reason: 'KB index rebuilding', by: 'alice', at: expect.any(String) }]);
    expect(Math.abs(Date.parse(listed[0]!.at) - Date.now())).toBeLessThan(60_000);

    const circuits = await keel(store, ['circuits', '--json']);
    expect(circuits.code, circuits.stderr).toBe(0);
    expect(JSON.parse(circuits.stdout)).toEqual({ breakers: [], disabled: listed });

    // What a worker would see through the store: the call is refused, with the reason.
    const s = openSqliteStore(store);
    try {
      const admission = await s.admit('search_kb', { failureThreshold: 3, resetAfterMs: 60_000 });
      expect(admission).toMatchObject({ allowed: false, reason: 'disabled' });
      expect(admission.allowed === false && admission.message).toContain('KB index rebuilding');
    } finally {
      await s.close();
    }

    const human = await keel(store, ['tools', 'list']);
    expect(human.stdout).toMatch(/search_kb\s+alice\s+\S+\s+KB index rebuilding/);

    const enabled = await keel(store, ['tools', 'enable', 'search_kb', '--json']);
    expect(enabled.code, enabled.stderr).toBe(0);
    expect(JSON.parse(enabled.stdout)).toMatchObject({ tool: 'search_kb', wasDisabled: true });
    expect(JSON.parse((await keel(store, ['tools', 'list', '--json'])).stdout)).toEqual({ disabled: [] });
    expect(JSON.parse((await keel(store, ['circuits', '--json'])).stdout)).toEqual({ breakers: [], disabled: [] });
  });

  it('disable records who: --as, else $USER', async () => {
    const store = freshStore();
    expect((await keel(store, ['tools', 'disable', 'send_email', '--reason', 'outbox stuck'])).code).toBe(0);
    const [row] = (JSON.parse((await keel(store, ['tools', 'list', '--json'])).stdout) as { disabled: DisabledTool[] }).disabled;
    expect(row).toMatchObject({ tool: 'send_email', by: 'ops-bot', reason: 'outbox stuck' });
  });

  it('enable of a tool that is not disabled exits 0 and says so', async () => {
    const r = await keel(freshStore(), ['tools', 'enable', 'get_order']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/get_order was not disabled/);
  });

  it('refuses an unknown tool, naming it and the tools the module has', async () => {
    const store = freshStore();
    const line = expectUsageError(await keel(store, ['tools', 'disable', 'serach_kb', '--reason', 'typo']));
    expect(line).toMatch(/^keel: unknown tool 'serach_kb'/);
    for (const known of ['search_kb', 'get_order', 'issue_refund', 'send_email']) expect(line).toContain(known);
    expect(JSON.parse((await keel(store, ['tools', 'list', '--json'])).stdout)).toEqual({ disabled: [] });

    // --tools names the module as well as KEEL_TOOLS does.
    const viaFlag = expectUsageError(await keel(store, ['tools', 'disable', 'nope', '--reason', 'x', '--tools', 'examples/support-desk/tools.ts'], { KEEL_TOOLS: '' }));
    expect(viaFlag).toMatch(/^keel: unknown tool 'nope': .*search_kb/);
    expect(expectUsageError(await keel(store, ['tools', 'enable', 'nope']))).toMatch(/^keel: unknown tool 'nope'/);
  });

  it.each([
    ['disable without --reason', ['tools', 'disable', 'search_kb'], {}, /^keel: keel tools disable needs --reason/],
    ['disable with an empty --reason', ['tools', 'disable', 'search_kb', '--reason', '  '], {}, /^keel: keel tools disable needs --reason/],
    ['disable without a tool name', ['tools', 'disable', '--reason', 'x'], {}, /^keel: keel tools disable takes one tool name/],
    ['enable without a tool name', ['tools', 'enable'], {}, /^keel: keel tools enable takes one tool name/],
    ['disable without a tools module', ['tools', 'disable', 'search_kb', '--reason', 'x'], { KEEL_TOOLS: '' }, /^keel: keel tools disable needs --tools <module>/],
    ['tools without a subcommand', ['tools'], {}, /^keel: keel tools takes: disable/],
    ['an unknown tools subcommand', ['tools', 'remove', 'x'], {}, /^keel: unknown tools command 'remove'/],
    ['circuits with a stray argument', ['circuits', 'extra'], {}, /^keel: keel circuits takes no arguments, or: keel circuits reset <tool>/],
  ] as Array<[string, string[], Record<string, string>, RegExp]>)('bad usage: %s exits 2', async (_what, args, env, reason) => {
    const store = freshStore();
    expect(expectUsageError(await keel(store, args, env))).toMatch(reason);
    const s = openSqliteStore(store);
    try {
      expect(await s.disabledTools()).toEqual([]);
    } finally {
      await s.close();
    }
  });
});

describe('keel circuits', () => {
  it('reset forgets a breaker: an open one admits calls again', async () => {
    const store = freshStore();
    const s = openSqliteStore(store);
    try {
      const policy = { failureThreshold: 1, resetAfterMs: 60_000 };
      await s.record('search_kb', false, policy);
      expect(await s.admit('search_kb', policy)).toMatchObject({ allowed: false, reason: 'open' });
      const r = await keel(store, ['circuits', 'reset', 'search_kb']);
      expect(r.code, r.stderr).toBe(0);
      expect(await s.admit('search_kb', policy)).toEqual({ allowed: true, probe: false });
      expect((await keel(store, ['circuits', 'reset', 'search_kb'])).stdout).toMatch(/search_kb has no breaker to reset/);
    } finally {
      await s.close();
    }
  });

  it("shows each tool's breaker: state, failures, opened at and next probe", async () => {
    const store = freshStore();
    const s = openSqliteStore(store);
    const policy = { failureThreshold: 2, resetAfterMs: 30_000 };
    const openedAt = new Date('2030-05-01T12:00:00.000Z');
    try {
      await s.record('get_order', false, policy, openedAt);
      expect(await s.record('get_order', false, policy, openedAt)).toMatchObject({ to: 'open' });
      await s.record('lookup_customer', false, policy, openedAt);
    } finally {
      await s.close();
    }

    const r = await keel(store, ['circuits', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { breakers: BreakerRow[]; disabled: DisabledTool[] };
    expect(doc.breakers).toEqual([
      { tool: 'get_order', state: 'open', failures: 2, openedAt: '2030-05-01T12:00:00.000Z', nextProbeAt: '2030-05-01T12:00:30.000Z', updatedAt: '2030-05-01T12:00:00.000Z' },
      { tool: 'lookup_customer', state: 'closed', failures: 1, updatedAt: '2030-05-01T12:00:00.000Z' },
    ]);
    expect(doc.disabled).toEqual([]);

    const human = await keel(store, ['circuits']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/get_order\s+open\s+2\s+2030-05-01T12:00:00\.000Z\s+2030-05-01T12:00:30\.000Z/);
    expect(human.stdout).toMatch(/lookup_customer\s+closed\s+1\s+-\s+-/);
    expect(human.stdout).toMatch(/no tools are disabled/);
  });

  it('needs no Temporal server: a bad TEMPORAL_ADDRESS does not matter, a bad KEEL_AUDIT_URL does', async () => {
    const ok = await keel(freshStore(), ['circuits', '--json'], { TEMPORAL_ADDRESS: '127.0.0.1:1' });
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ breakers: [], disabled: [] });
    expect(expectUsageError(await keel('mysql://db/keel', ['circuits']))).toMatch(/^keel: KEEL_AUDIT_URL: expected a SQLite file path/);
  });
});
