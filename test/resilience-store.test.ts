/**
 * Fleet-wide resilience state in Keel's store: circuit breakers, disabled tools and rate slots. The same
 * behaviour from the SQLite store (a temp file, shared by several store instances and by several
 * processes) and the PostgreSQL store (`postgres://postgres@127.0.0.1:5432/test` unless
 * KEEL_TEST_POSTGRES_URL says otherwise, shared by several pools). Time is driven by explicit `now`
 * values, so windows of a minute take no time.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqliteStore, type Admission, type BreakerPolicy, type KeelStore } from '../src/store/index.js';
import { ROOT } from './support/paths.js';
import { runCommand } from './support/processes.js';
import { PG_URL, postgresBackend, sqliteBackend } from './support/store-backends.js';

const RUN = `res-test-${randomUUID()}`;
/** A tool name of its own for each test; every one starts with RUN, so the PostgreSQL rows go afterwards. */
const toolName = (label: string) => `${RUN}-${label}-${randomUUID().slice(0, 8)}`;

afterAll(async () => {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    for (const table of ['keel_breakers', 'keel_disabled_tools', 'keel_rate_clocks']) {
      await client.query(`DELETE FROM ${table} WHERE tool LIKE $1`, [`${RUN}-%`]);
    }
  } finally {
    await client.end();
  }
});

const POLICY: BreakerPolicy = { failureThreshold: 3, resetAfterMs: 60_000 };
const T0 = Date.parse('2030-01-01T00:00:00.000Z');
/** The instant `ms` milliseconds after T0. */
const at = (ms: number) => new Date(T0 + ms);
const iso = (ms: number) => at(ms).toISOString();

/** Fails `tool` until its circuit opens at T0 + `ms`. */
async function openCircuit(store: KeelStore, tool: string, ms = 0, policy = POLICY): Promise<void> {
  for (let i = 1; i < policy.failureThreshold; i++) expect(await store.record(tool, false, policy, at(ms))).toBeUndefined();
  expect(await store.record(tool, false, policy, at(ms))).toEqual({ from: 'closed', to: 'open', failures: policy.failureThreshold });
}

const rowOf = async (store: KeelStore, tool: string) => (await store.breakers()).find((b) => b.tool === tool);
const probes = (admissions: Admission[]) => admissions.filter((a) => a.allowed && a.probe).length;

describe.each([
  ['sqlite', () => sqliteBackend('keel-resilience-')],
  ['postgres', () => postgresBackend()],
] as const)('%s store: resilience', (_kind, makeBackend) => {
  const backend = makeBackend();
  let store: KeelStore;
  /** A second store instance on the same database: another worker, as far as the store can tell. */
  let other: KeelStore;

  beforeAll(async () => {
    store = await backend.open();
    other = await backend.open();
  });
  afterAll(() => backend.cleanup());

  describe('circuit breaker', () => {
    it('admits calls to a tool that has never failed, and its successes leave no row', async () => {
      const tool = toolName('healthy');
      expect(await store.admit(tool, POLICY, at(0))).toEqual({ allowed: true, probe: false });
      expect(await store.record(tool, true, POLICY, at(1))).toBeUndefined();
      expect(await rowOf(store, tool)).toBeUndefined();
    });

    it('opens at the threshold of consecutive failures, and a success in between starts the count again', async () => {
      const tool = toolName('threshold');
      expect(await store.record(tool, false, POLICY, at(0))).toBeUndefined();
      expect(await other.record(tool, false, POLICY, at(1))).toBeUndefined();
      expect(await rowOf(store, tool)).toMatchObject({ state: 'closed', failures: 2 });
      expect(await store.record(tool, true, POLICY, at(2))).toBeUndefined(); // closed → closed: no transition
      expect(await rowOf(store, tool)).toMatchObject({ state: 'closed', failures: 0 });

      expect(await store.record(tool, false, POLICY, at(3))).toBeUndefined();
      expect(await other.record(tool, false, POLICY, at(4))).toBeUndefined();
      expect(await store.admit(tool, POLICY, at(5))).toEqual({ allowed: true, probe: false });
      expect(await other.record(tool, false, POLICY, at(10))).toEqual({ from: 'closed', to: 'open', failures: 3 });
      const row = await rowOf(store, tool);
      expect(row).toEqual({ tool, state: 'open', failures: 3, openedAt: iso(10), nextProbeAt: iso(60_010), updatedAt: iso(10) });
    });

    it('refuses calls while open, on every store instance, until nextProbeAt', async () => {
      const tool = toolName('open');
      await openCircuit(store, tool);
      for (const [s, ms] of [[store, 1], [other, 30_000], [store, 59_999]] as const) {
        const a = await s.admit(tool, POLICY, at(ms));
        expect(a).toMatchObject({ allowed: false, reason: 'open', nextProbeAt: iso(60_000) });
        expect(a.allowed === false && a.message).toContain(tool);
      }
      expect(await other.admit(tool, POLICY, at(60_000))).toEqual({ allowed: true, probe: true });
      expect(await rowOf(store, tool)).toMatchObject({ state: 'half_open', probeStartedAt: iso(60_000), nextProbeAt: iso(120_000) });
    });

    it('lets exactly one probe through when due, however many callers on two instances ask at once', async () => {
      const tool = toolName('one-probe');
      await openCircuit(store, tool);
      const admissions = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 ? other : store).admit(tool, POLICY, at(60_000 + i))),
      );
      expect(probes(admissions)).toBe(1);
      expect(admissions.filter((a) => a.allowed)).toHaveLength(1);
      for (const a of admissions.filter((x) => !x.allowed)) expect(a).toMatchObject({ allowed: false, reason: 'open' });
      expect(await rowOf(other, tool)).toMatchObject({ state: 'half_open' });
    });

    it('closes when the probe succeeds', async () => {
      const tool = toolName('probe-ok');
      await openCircuit(store, tool);
      expect(await store.admit(tool, POLICY, at(60_000))).toEqual({ allowed: true, probe: true });
      expect(await other.record(tool, true, POLICY, at(60_100))).toEqual({ from: 'half_open', to: 'closed', failures: 0 });
      expect(await rowOf(store, tool)).toEqual({ tool, state: 'closed', failures: 0, updatedAt: iso(60_100) });
      expect(await store.admit(tool, POLICY, at(60_200))).toEqual({ allowed: true, probe: false });
      expect(await other.admit(tool, POLICY, at(60_200))).toEqual({ allowed: true, probe: false });
    });

    it('stays open when a call let through before it opened succeeds late: only the probe closes it', async () => {
      const tool = toolName('late-success');
      await openCircuit(store, tool);
      expect(await other.record(tool, true, POLICY, at(30_000))).toBeUndefined();
      expect(await store.admit(tool, POLICY, at(30_001))).toMatchObject({ allowed: false, reason: 'open' });
      expect(await store.resetBreaker(tool)).toBe(true);
      expect(await other.admit(tool, POLICY, at(30_002))).toEqual({ allowed: true, probe: false });
      expect(await store.resetBreaker(tool)).toBe(false);
    });

    it('reopens with a new window when the probe fails', async () => {
      const tool = toolName('probe-fails');
      await openCircuit(store, tool);
      expect(await store.admit(tool, POLICY, at(60_000))).toEqual({ allowed: true, probe: true });
      expect(await store.record(tool, false, POLICY, at(60_500))).toEqual({ from: 'half_open', to: 'open', failures: 4 });
      expect(await rowOf(other, tool)).toMatchObject({ state: 'open', failures: 4, openedAt: iso(60_500), nextProbeAt: iso(120_500) });
      expect(await other.admit(tool, POLICY, at(61_000))).toMatchObject({ allowed: false, reason: 'open', nextProbeAt: iso(120_500) });
      expect(await other.admit(tool, POLICY, at(120_499))).toMatchObject({ allowed: false, reason: 'open' });
      expect(await other.admit(tool, POLICY, at(120_500))).toEqual({ allowed: true, probe: true });
    });

    it('refuses others while a probe is in flight, and lets the next caller probe once it is lost (in flight for resetAfterMs)', async () => {
      const tool = toolName('lost-probe');
      await openCircuit(store, tool);
      expect(await store.admit(tool, POLICY, at(60_000))).toEqual({ allowed: true, probe: true });
      // The prober's worker dies: no record ever comes.
      expect(await other.admit(tool, POLICY, at(60_001))).toMatchObject({ allowed: false, reason: 'open', nextProbeAt: iso(120_000) });
      expect(await other.admit(tool, POLICY, at(119_999))).toMatchObject({ allowed: false, reason: 'open' });
      const late = await Promise.all([other.admit(tool, POLICY, at(120_000)), store.admit(tool, POLICY, at(120_001)), other.admit(tool, POLICY, at(120_002))]);
      expect(probes(late)).toBe(1);
      expect(await rowOf(store, tool)).toMatchObject({ state: 'half_open', nextProbeAt: expect.stringMatching(/^2030-01-01T00:03:00\.00[012]Z$/) });
    });

    it('only counts a failure that lands while open (a call admitted earlier): the window stays', async () => {
      const tool = toolName('late-failure');
      await openCircuit(store, tool);
      expect(await other.record(tool, false, POLICY, at(1_000))).toBeUndefined();
      expect(await rowOf(store, tool)).toMatchObject({ state: 'open', failures: 4, openedAt: iso(0), nextProbeAt: iso(60_000) });
    });

    it("uses each call's policy: threshold 1 opens at the first failure, a short reset probes sooner", async () => {
      const tool = toolName('policy');
      const quick: BreakerPolicy = { failureThreshold: 1, resetAfterMs: 500 };
      expect(await store.record(tool, false, quick, at(0))).toEqual({ from: 'closed', to: 'open', failures: 1 });
      expect(await store.admit(tool, quick, at(499))).toMatchObject({ allowed: false, nextProbeAt: iso(500) });
      expect(await store.admit(tool, quick, at(500))).toEqual({ allowed: true, probe: true });
    });

    it('refuses a policy out of range', async () => {
      const tool = toolName('bad-policy');
      await expect(store.admit(tool, { failureThreshold: 0, resetAfterMs: 1 })).rejects.toThrow(RangeError);
      await expect(store.record(tool, false, { failureThreshold: 2.5, resetAfterMs: 1 })).rejects.toThrow(/failureThreshold must be a whole number >= 1/);
      await expect(store.record(tool, false, { failureThreshold: 3, resetAfterMs: -1 })).rejects.toThrow(/resetAfterMs/);
      expect(await rowOf(store, tool)).toBeUndefined();
    });

    it('lists every tool with a row, in name order', async () => {
      const [a, b] = [toolName('list-a'), toolName('list-b')].sort();
      await openCircuit(store, b!);
      await other.record(a!, false, POLICY, at(0));
      const mine = (await store.breakers()).filter((r) => r.tool === a || r.tool === b);
      expect(mine.map((r) => [r.tool, r.state])).toEqual([[a, 'closed'], [b, 'open']]);
    });
  });

  describe('disabled tools', () => {
    it('refuses calls to a disabled tool with the reason, whatever its circuit, until it is enabled', async () => {
      const tool = toolName('disabled');
      await store.disable(tool, 'payments provider incident #42', 'alice');
      const refused = await other.admit(tool, POLICY, at(0));
      expect(refused).toMatchObject({ allowed: false, reason: 'disabled' });
      expect(refused.allowed === false && refused.message).toMatch(/disabled by alice .*payments provider incident #42/);
      // Disabled wins over an open circuit that is due for a probe: no probe is spent.
      await openCircuit(store, tool);
      expect(await store.admit(tool, POLICY, at(60_000))).toMatchObject({ allowed: false, reason: 'disabled' });
      expect(await rowOf(store, tool)).toMatchObject({ state: 'open' });

      const listed = (await other.disabledTools()).find((d) => d.tool === tool);
      expect(listed).toEqual({ tool, reason: 'payments provider incident #42', by: 'alice', at: expect.any(String) });
      expect(Math.abs(Date.parse(listed!.at) - Date.now())).toBeLessThan(60_000);

      expect(await other.enable(tool)).toBe(true);
      expect(await store.enable(tool)).toBe(false);
      expect((await store.disabledTools()).some((d) => d.tool === tool)).toBe(false);
      expect(await store.admit(tool, POLICY, at(60_000))).toEqual({ allowed: true, probe: true });
    });

    it('a second disable replaces the reason and who', async () => {
      const tool = toolName('redisable');
      await store.disable(tool, 'first', 'alice');
      await other.disable(tool, 'second', 'bob');
      expect((await store.disabledTools()).filter((d) => d.tool === tool)).toEqual([expect.objectContaining({ reason: 'second', by: 'bob' })]);
      expect(await store.enable(tool)).toBe(true);
    });
  });

  describe('rate slots', () => {
    it('spaces reservations 1000/perSecond ms apart across store instances', async () => {
      const tool = toolName('rate');
      const waits = [
        await store.reserveRateSlot(tool, 10, at(0)),
        await store.reserveRateSlot(tool, 10, at(0)),
        await other.reserveRateSlot(tool, 10, at(0)),
        await store.reserveRateSlot(tool, 10, at(0)),
      ];
      expect(waits).toEqual([0, 100, 200, 300]);
      // Later callers wait for the next free slot less the time that has passed.
      expect(await other.reserveRateSlot(tool, 10, at(150))).toBe(250);
      // An idle tool starts again at now: no backlog, and no burst credit either.
      expect(await store.reserveRateSlot(tool, 10, at(10_000))).toBe(0);
      expect(await other.reserveRateSlot(tool, 10, at(10_000))).toBe(100);
    });

    it('gives concurrent callers distinct slots', async () => {
      const tool = toolName('rate-concurrent');
      const waits = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? other : store).reserveRateSlot(tool, 20, at(0))));
      expect([...waits].sort((x, y) => x - y)).toEqual([0, 50, 100, 150, 200, 250, 300, 350, 400, 450]);
    });

    it('rounds fractional spacing up to whole milliseconds without drifting', async () => {
      const tool = toolName('rate-fraction');
      const waits = [];
      for (let i = 0; i < 7; i++) waits.push(await store.reserveRateSlot(tool, 7, at(0)));
      expect(waits).toEqual([0, 143, 286, 429, 572, 715, 858]);
      expect(await store.reserveRateSlot(tool, 7, at(0))).toBe(1000);
    });

    it('keeps one clock per tool', async () => {
      const [a, b] = [toolName('rate-a'), toolName('rate-b')];
      expect(await store.reserveRateSlot(a, 1, at(0))).toBe(0);
      expect(await store.reserveRateSlot(b, 1, at(0))).toBe(0);
      expect(await store.reserveRateSlot(a, 1, at(0))).toBe(1000);
    });

    it('refuses a rate that is not a positive number', async () => {
      for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
        await expect(store.reserveRateSlot(toolName('bad-rate'), bad)).rejects.toThrow(/perSecond must be a number > 0/);
      }
    });
  });
});

describe('sqlite store: several processes on one file', () => {
  let dir: string;
  let file: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'keel-resilience-procs-'));
    file = path.join(dir, 'keel.sqlite');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * Starts `count` processes that each open the store, wait for a shared start time (so they run at once),
   * do `op` `times` times at the instant `nowMs`, and print their results as JSON.
   */
  async function inProcesses<T>(count: number, op: 'admit' | 'reserve', tool: string, nowMs: number, times: number): Promise<T[]> {
    const script = path.join(dir, `${op}.mts`);
    writeFileSync(
      script,
      `import { openSqliteStore } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'src', 'store', 'sqlite.ts')).href)};
const [file, tool, startAt, nowMs, times] = process.argv.slice(2);
const store = openSqliteStore(file!);
while (Date.now() < Number(startAt)) { /* spin: every process starts together */ }
const results = [];
for (let i = 0; i < Number(times); i++) {
  const now = new Date(Number(nowMs));
  results.push(${op === 'admit' ? `await store.admit(tool!, ${JSON.stringify(POLICY)}, now)` : 'await store.reserveRateSlot(tool!, 10, now)'});
}
await store.close();
process.stdout.write(JSON.stringify(results));
`,
    );
    const loader = pathToFileURL(path.join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
    const startAt = String(Date.now() + 4_000);
    const runs = await Promise.all(
      Array.from({ length: count }, () => runCommand(process.execPath, ['--import', loader, script, file, tool, startAt, String(nowMs), String(times)], {})),
    );
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    return runs.flatMap((r) => JSON.parse(r.stdout) as T[]);
  }

  it('lets exactly one probe through across processes', async () => {
    const tool = toolName('procs-probe');
    const store = openSqliteStore(file);
    try {
      await openCircuit(store, tool);
      const admissions = await inProcesses<Admission>(4, 'admit', tool, T0 + 60_000, 25);
      expect(admissions).toHaveLength(100);
      expect(probes(admissions)).toBe(1);
      expect(await rowOf(store, tool)).toMatchObject({ state: 'half_open', probeStartedAt: iso(60_000) });
    } finally {
      await store.close();
    }
  });

  it('hands out distinct, evenly spaced rate slots across processes', async () => {
    const tool = toolName('procs-rate');
    const waits = await inProcesses<number>(4, 'reserve', tool, T0, 25);
    expect([...waits].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i * 100));
  });
});
