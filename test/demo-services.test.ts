// Specification of the demo services, exercised over real HTTP: seeded lookups, Stripe-style
// idempotency keys (replay, reuse conflicts, one effect per key), business rules, the ledger, fault
// injection (prefix matching, `times`, deterministic error rate, latency, hangs, failures after the
// write was applied), body limits, persistence across restarts, and a `close()` that never hangs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { demoClient, DemoHttpError, startDemoServices, type DemoClient, type DemoServices } from '../examples/support-desk/services/index.js';

interface Answer {
  status: number;
  headers: Headers;
  json: Record<string, unknown>;
}

async function call(
  base: string,
  method: string,
  path: string,
  opts: { body?: unknown; key?: string; headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.key !== undefined) headers['idempotency-key'] = opts.key;
  const init: RequestInit = { method, headers };
  if (opts.body !== undefined) init.body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  if (opts.signal) init.signal = opts.signal;
  const res = await fetch(`${base}${path}`, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

function errorOf(a: Answer): { type: string; message: string; param?: string } {
  return a.json.error as { type: string; message: string; param?: string };
}

describe('demo services', () => {
  let svc: DemoServices;
  let demo: DemoClient;
  const api = (method: string, path: string, opts?: Parameters<typeof call>[3]) => call(svc.url, method, path, opts);

  beforeAll(async () => {
    svc = await startDemoServices();
    demo = demoClient(svc.url);
  });
  afterAll(async () => {
    await svc.close();
  });
  afterEach(async () => {
    await demo.clearFaults();
  });

  describe('seeded lookups', () => {
    it('answers health checks', async () => {
      expect((await api('GET', '/healthz')).json).toEqual({ ok: true });
    });

    it('finds customers by id and by email, case-insensitively', async () => {
      const ada = await api('GET', '/customers/cust_001');
      expect(ada.status).toBe(200);
      expect(ada.json).toEqual({ id: 'cust_001', name: 'Ada Lovelace', email: 'ada@example.com', plan: expect.any(String) });
      const grace = await api('GET', '/customers?email=Grace%40Example.com');
      expect(grace.json).toMatchObject({ id: 'cust_002', name: 'Grace Hopper', plan: 'free' });
      expect((await api('GET', '/customers/cust_003')).status).toBe(200);
    });

    it('answers 404 with a typed error for unknown customers and orders', async () => {
      const missing = await api('GET', '/customers/cust_999');
      expect(missing.status).toBe(404);
      expect(errorOf(missing).type).toBe('not_found');
      expect((await api('GET', '/customers?email=nobody@example.com')).status).toBe(404);
      expect((await api('GET', '/orders/ord_9999')).status).toBe(404);
    });

    it('returns orders with items and the refunded amount', async () => {
      const order = await api('GET', '/orders/ord_2001');
      expect(order.json).toEqual({
        id: 'ord_2001',
        customer_id: 'cust_002',
        items: [{ sku: 'MOUSE-ERGO', name: 'Ergonomic mouse', qty: 1, price_cents: 2999 }],
        total_cents: 2999,
        currency: 'USD',
        status: 'delivered',
        refunded_cents: 0,
      });
      const ord1001 = await api('GET', '/orders/ord_1001');
      expect(ord1001.json).toMatchObject({
        customer_id: 'cust_001',
        total_cents: 12900,
        status: 'delivered',
        items: [{ name: 'Mechanical keyboard', qty: 1, price_cents: 12900 }],
      });
      expect((await api('GET', '/orders/ord_1002')).json).toMatchObject({ customer_id: 'cust_001', total_cents: 4500 });
    });

    it('searches the knowledge base by term score, honouring limit', async () => {
      const hits = await api('GET', '/kb/search?q=refund%20for%20a%20damaged%20keyboard');
      const results = hits.json.results as Array<{ id: string; title: string; snippet: string }>;
      expect(results.length).toBeGreaterThan(0);
      expect(results.length).toBeLessThanOrEqual(3);
      expect(results[0]).toMatchObject({ id: 'kb_refund_policy', title: 'Refund policy' });
      expect(results[0]?.snippet).toContain('30 days');
      const one = await api('GET', '/kb/search?q=shipping&limit=1');
      expect(one.json.results).toEqual([expect.objectContaining({ id: 'kb_shipping_times' })]);
      expect((await api('GET', '/kb/search?q=zzzz')).json).toEqual({ results: [] });
    });
  });

  describe('validation', () => {
    it('answers 400 naming the bad field', async () => {
      const refund = await api('POST', '/refunds', { body: { order_id: 'ord_1002', amount_cents: '10', reason: 'x' } });
      expect(refund.status).toBe(400);
      expect(errorOf(refund)).toMatchObject({ type: 'invalid_request', param: 'amount_cents' });
      expect(errorOf(refund).message).toContain('amount_cents');

      const email = await api('POST', '/emails', { body: { to: 'not-an-address', subject: 's', body: 'b' } });
      expect(errorOf(email)).toMatchObject({ type: 'invalid_request', param: 'to' });

      const missing = await api('POST', '/tickets', { body: { customer_id: 'cust_001', body: 'b' } });
      expect(errorOf(missing).param).toBe('subject');

      const plan = await api('POST', '/accounts/cust_002/plan', { body: { plan: 'platinum' } });
      expect(errorOf(plan).param).toBe('plan');

      const limit = await api('GET', '/kb/search?q=refund&limit=0');
      expect(errorOf(limit)).toMatchObject({ type: 'invalid_request', param: 'limit' });
      expect(errorOf(await api('GET', '/kb/search')).param).toBe('q');
    });

    it('rejects bad JSON, unknown routes, wrong methods and oversized bodies', async () => {
      const bad = await api('POST', '/refunds', { body: '{"order_id": ' });
      expect([bad.status, errorOf(bad).type]).toEqual([400, 'invalid_json']);
      expect((await api('GET', '/nope')).status).toBe(404);
      const wrong = await api('DELETE', '/refunds');
      expect(wrong.status).toBe(405);
      expect(wrong.headers.get('allow')).toContain('POST');
      const huge = await api('POST', '/emails', {
        body: { to: 'ada@example.com', subject: 'big', body: 'x'.repeat(1024 * 1024 + 10) },
      });
      expect([huge.status, errorOf(huge).type]).toEqual([413, 'payload_too_large']);
      expect((await demo.ledger()).emails.filter((e) => e.subject === 'big')).toEqual([]);
    });
  });

  describe('refunds and idempotency keys', () => {
    it('replays a repeated request with the same key: same answer, one refund', async () => {
      const req = { order_id: 'ord_1001', amount_cents: 5000, reason: 'damaged on arrival' };
      const first = await api('POST', '/refunds', { body: req, key: 'idem-replay-1', headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } });
      expect(first.status).toBe(201);
      expect(first.json).toMatchObject({ order_id: 'ord_1001', amount_cents: 5000, status: 'succeeded', idempotency_key: 'idem-replay-1' });
      expect(first.json.id).toMatch(/^re_/);
      expect(first.headers.get('idempotent-replayed')).toBeNull();

      // Key order in the body does not matter: the server compares canonical JSON.
      const again = await api('POST', '/refunds', { body: { reason: req.reason, amount_cents: 5000, order_id: 'ord_1001' }, key: 'idem-replay-1' });
      expect(again.status).toBe(201);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.json).toEqual(first.json);

      const refunds = (await demo.ledger()).refunds.filter((r) => r.idempotency_key === 'idem-replay-1');
      expect(refunds).toHaveLength(1);
      expect(refunds[0]?.traceparent).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
      expect((await api('GET', '/orders/ord_1001')).json.refunded_cents).toBe(5000);
      const byKey = await api('GET', '/refunds?idempotency_key=idem-replay-1');
      expect(byKey.json.refunds).toEqual([first.json]);
      expect((await api('GET', '/refunds?idempotency_key=never-used')).json.refunds).toEqual([]);
    });

    it('answers 409 when a key is reused with a different body or path', async () => {
      await api('POST', '/refunds', { body: { order_id: 'ord_2001', amount_cents: 100, reason: 'r' }, key: 'idem-409' });
      const otherBody = await api('POST', '/refunds', { body: { order_id: 'ord_2001', amount_cents: 200, reason: 'r' }, key: 'idem-409' });
      expect(otherBody.status).toBe(409);
      expect(errorOf(otherBody).type).toBe('idempotency_key_reused');
      const otherPath = await api('POST', '/emails', { body: { to: 'grace@example.com', subject: 's', body: 'b' }, key: 'idem-409' });
      expect([otherPath.status, errorOf(otherPath).type]).toEqual([409, 'idempotency_key_reused']);
      const ledger = await demo.ledger();
      expect(ledger.refunds.filter((r) => r.idempotency_key === 'idem-409')).toHaveLength(1);
      expect(ledger.emails.filter((e) => e.idempotency_key === 'idem-409')).toHaveLength(0);
    });

    it('refuses refunds beyond the refundable amount, and unknown orders', async () => {
      const tooMuch = await api('POST', '/refunds', { body: { order_id: 'ord_1002', amount_cents: 4501, reason: 'r' } });
      expect([tooMuch.status, errorOf(tooMuch).type]).toEqual([400, 'amount_exceeds_refundable']);
      expect((await api('POST', '/refunds', { body: { order_id: 'ord_1002', amount_cents: 4000, reason: 'r' } })).status).toBe(201);
      const rest = await api('POST', '/refunds', { body: { order_id: 'ord_1002', amount_cents: 501, reason: 'r' }, key: 'idem-rest' });
      expect(errorOf(rest).type).toBe('amount_exceeds_refundable');
      // A failed request stores nothing under its key, so a corrected retry with the same key is fine.
      expect((await api('POST', '/refunds', { body: { order_id: 'ord_1002', amount_cents: 500, reason: 'r' }, key: 'idem-rest' })).status).toBe(201);
      expect((await api('GET', '/orders/ord_1002')).json.refunded_cents).toBe(4500);
      const unknown = await api('POST', '/refunds', { body: { order_id: 'ord_0000', amount_cents: 1, reason: 'r' } });
      expect([unknown.status, errorOf(unknown).type]).toEqual([404, 'not_found']);
      expect(errorOf(await api('POST', '/refunds', { body: { order_id: 'ord_1001', amount_cents: 0, reason: 'r' } })).param).toBe('amount_cents');
    });

    it('applies every keyless write anew', async () => {
      const body = { to: 'ada@example.com', subject: 'keyless', body: 'hello' };
      const a = await api('POST', '/emails', { body });
      const b = await api('POST', '/emails', { body });
      expect(a.json.id).not.toBe(b.json.id);
      expect((await demo.ledger()).emails.filter((e) => e.subject === 'keyless').map((e) => e.idempotency_key)).toEqual([null, null]);
    });
  });

  describe('emails, tickets, credits, plans', () => {
    it('queues emails in the outbox and finds them by key', async () => {
      const sent = await api('POST', '/emails', {
        body: { to: 'ada@example.com', subject: 'Your refund', body: 'We refunded 129.00 USD.' },
        key: 'idem-email-1',
      });
      expect(sent.status).toBe(201);
      expect(sent.json).toMatchObject({ status: 'queued', idempotency_key: 'idem-email-1', to: 'ada@example.com' });
      expect(sent.json.id).toMatch(/^em_/);
      const found = await api('GET', '/emails?idempotency_key=idem-email-1');
      expect(found.json).toEqual({ emails: [sent.json] });
    });

    it('opens and closes tickets; closing twice is fine, closing an unknown ticket is 404', async () => {
      const opened = await api('POST', '/tickets', {
        body: { customer_id: 'cust_001', subject: 'Damaged keyboard', body: 'Arrived with broken keys.' },
        key: 'idem-ticket-1',
      });
      expect(opened.status).toBe(201);
      expect(opened.json).toMatchObject({ status: 'open', customer_id: 'cust_001', closed_at: null });
      const id = String(opened.json.id);
      expect(id).toMatch(/^tkt_/);

      const closed = await api('POST', `/tickets/${id}/close`, { body: { reason: 'session failed' } });
      expect(closed.status).toBe(200);
      expect(closed.json).toMatchObject({ id, status: 'closed', close_reason: 'session failed', closed_at: expect.any(String) });
      const again = await api('POST', `/tickets/${id}/close`);
      expect(again.status).toBe(200);
      expect(again.json.closed_at).toBe(closed.json.closed_at);
      expect((await api('POST', '/tickets/tkt_999999/close')).status).toBe(404);
      expect((await api('POST', '/tickets', { body: { customer_id: 'cust_404', subject: 's', body: 'b' } })).status).toBe(404);

      const row = (await demo.ledger()).tickets.find((t) => t.id === id);
      expect(row).toMatchObject({ status: 'closed', idempotency_key: 'idem-ticket-1', closed_at: closed.json.closed_at });
      expect((await api('GET', `/tickets/${id}`)).json.status).toBe('closed');
    });

    it('grants and revokes credits idempotently', async () => {
      const granted = await api('POST', '/credits', { body: { customer_id: 'cust_001', amount_cents: 1000, reason: 'late delivery' }, key: 'idem-credit-1' });
      expect(granted.status).toBe(201);
      expect(granted.json).toMatchObject({ status: 'active', revoked_at: null });
      const id = String(granted.json.id);
      const revoked = await api('POST', `/credits/${id}/revoke`);
      expect(revoked.json).toMatchObject({ id, status: 'revoked', revoked_at: expect.any(String) });
      const twice = await api('POST', `/credits/${id}/revoke`);
      expect([twice.status, twice.json.revoked_at]).toEqual([200, revoked.json.revoked_at]);
      expect((await api('POST', '/credits/cr_999999/revoke')).status).toBe(404);
      expect((await demo.ledger()).credits.find((c) => c.id === id)).toMatchObject({ status: 'revoked', idempotency_key: 'idem-credit-1' });
    });

    it('changes plans and reports the previous plan', async () => {
      const up = await api('POST', '/accounts/cust_002/plan', { body: { plan: 'pro' }, key: 'idem-plan-1' });
      expect(up.status).toBe(200);
      expect(up.json).toMatchObject({ customer_id: 'cust_002', previous_plan: 'free', plan: 'pro', changed: true });
      expect((await api('GET', '/customers/cust_002')).json.plan).toBe('pro');
      const replay = await api('POST', '/accounts/cust_002/plan', { body: { plan: 'pro' }, key: 'idem-plan-1' });
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      const back = await api('POST', '/accounts/cust_002/plan', { body: { plan: 'free' } });
      expect(back.json).toMatchObject({ previous_plan: 'pro', plan: 'free' });
      const changes = (await demo.ledger()).plan_changes.filter((p) => p.customer_id === 'cust_002');
      expect(changes.map((p) => [p.previous_plan, p.plan])).toEqual([['free', 'pro'], ['pro', 'free']]);
      expect((await api('POST', '/accounts/cust_404/plan', { body: { plan: 'pro' } })).status).toBe(404);
    });
  });

  describe('request counts', () => {
    it('counts every business request by method and resource, faulted ones too, and not the control endpoints', async () => {
      const before = await demo.stats();
      await demo.setFault({ endpoint: '/orders', status: 503 });
      await api('GET', '/orders/ord_1001');
      await api('GET', '/orders/ord_1002');
      await demo.clearFaults();
      await api('GET', '/orders/ord_1001');
      await api('GET', '/kb/search?q=refund');
      await demo.ledger();
      const after = await demo.stats();
      const delta = (k: string) => (after.requests[k] ?? 0) - (before.requests[k] ?? 0);
      expect([delta('GET /orders'), delta('GET /kb')]).toEqual([3, 1]);
      expect(after.total - before.total).toBe(4);
      expect(after.requests['GET /ledger']).toBeUndefined();
    });
  });

  describe('fault injection', () => {
    it('after_apply + times:1: the refund is committed though the caller got an error; a retry replays it', async () => {
      await demo.setFault({ endpoint: 'POST /refunds', times: 1, after_apply: true, status: 502 });
      const req = { order_id: 'ord_2001', amount_cents: 999, reason: 'damaged' };
      const lost = await api('POST', '/refunds', { body: req, key: 'idem-after-apply' });
      expect([lost.status, errorOf(lost).type]).toEqual([502, 'fault_injected']);

      const applied = (await demo.ledger()).refunds.filter((r) => r.idempotency_key === 'idem-after-apply');
      expect(applied).toHaveLength(1);
      // The status check by key resolves the unknown outcome.
      expect((await api('GET', '/refunds?idempotency_key=idem-after-apply')).json.refunds).toHaveLength(1);

      const retry = await api('POST', '/refunds', { body: req, key: 'idem-after-apply' });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(retry.json.id).toBe(applied[0]?.id);
      expect((await demo.ledger()).refunds.filter((r) => r.idempotency_key === 'idem-after-apply')).toHaveLength(1);
      expect(await demo.faults()).toEqual([]);
    });

    it('hang: the client gives up by AbortSignal timeout and nothing was applied', async () => {
      await demo.setFault({ endpoint: 'POST /emails', hang: true });
      const started = Date.now();
      await expect(
        api('POST', '/emails', { body: { to: 'ada@example.com', subject: 'hung', body: 'b' }, key: 'idem-hang', signal: AbortSignal.timeout(200) }),
      ).rejects.toMatchObject({ name: 'TimeoutError' });
      expect(Date.now() - started).toBeLessThan(5_000);
      expect((await api('GET', '/emails?idempotency_key=idem-hang')).json.emails).toEqual([]);
    });

    it('hang after apply: the caller times out, but the write is in the ledger', async () => {
      await demo.setFault({ endpoint: 'POST /credits', hang: true, after_apply: true, times: 1 });
      await expect(
        api('POST', '/credits', { body: { customer_id: 'cust_003', amount_cents: 500, reason: 'r' }, key: 'idem-hang-applied', signal: AbortSignal.timeout(200) }),
      ).rejects.toMatchObject({ name: 'TimeoutError' });
      expect((await api('GET', '/credits?idempotency_key=idem-hang-applied')).json.credits).toHaveLength(1);
    });

    it('matches by endpoint prefix, method-specific or any-method, and expires after `times`', async () => {
      await demo.setFault({ endpoint: '/kb', times: 2 });
      expect((await api('GET', '/kb/search?q=warranty')).status).toBe(503);
      expect(await demo.faults()).toEqual([expect.objectContaining({ endpoint: '/kb', matched: 1, remaining: 1, status: 503, error_rate: 1 })]);
      expect((await api('GET', '/kb/search?q=warranty')).status).toBe(503);
      expect((await api('GET', '/kb/search?q=warranty')).status).toBe(200);
      expect(await demo.faults()).toEqual([]);

      await demo.setFault({ endpoint: 'POST /refunds', status: 500 });
      expect((await api('GET', '/refunds')).status).toBe(200);
      const failed = await api('POST', '/refunds', { body: { order_id: 'ord_2001', amount_cents: 1, reason: 'r' }, key: 'idem-faulted' });
      expect(failed.status).toBe(500);
      expect((await api('GET', '/refunds?idempotency_key=idem-faulted')).json.refunds).toEqual([]);
      // Control endpoints are never faulted.
      await demo.setFault({ endpoint: '/', status: 500 });
      expect((await api('GET', '/ledger')).status).toBe(200);
      expect((await api('GET', '/healthz')).status).toBe(200);
      // The longest matching endpoint wins.
      expect((await api('GET', '/orders/ord_1001')).status).toBe(500);
      expect((await api('POST', '/refunds', { body: {} })).status).toBe(500);
      await demo.clearFaults();
      expect((await api('GET', '/orders/ord_1001')).status).toBe(200);
    });

    it('fails a deterministic share of requests with error_rate', async () => {
      await demo.setFault({ endpoint: 'GET /customers', error_rate: 0.5 });
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) statuses.push((await api('GET', '/customers/cust_001')).status);
      expect(statuses).toEqual([200, 503, 200, 503, 200, 503]);
    });

    it('delays answers by latency_ms without failing them', async () => {
      await demo.setFault({ endpoint: 'GET /orders', latency_ms: 150 });
      const started = Date.now();
      expect((await api('GET', '/orders/ord_1001')).status).toBe(200);
      expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    });

    it('validates fault specs', async () => {
      await expect(demo.setFault({ endpoint: 'refunds' })).rejects.toBeInstanceOf(Error);
      const bad = await api('POST', '/faults', { body: { endpoint: '/kb', error_rate: 2 } });
      expect([bad.status, errorOf(bad).param]).toEqual([400, 'error_rate']);
      const viaHttp = await api('POST', '/faults', { body: { endpoint: 'POST /tickets', status: 42 } });
      expect(errorOf(viaHttp).param).toBe('status');
      await expect(demoClient(svc.url).ledger()).resolves.toBeDefined();
    });
  });
});

describe('demo services lifecycle', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'keel-demo-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps the ledger in dbFile across restarts without duplicating seeds', async () => {
    const dbFile = join(dir, 'demo.db');
    const first = await startDemoServices({ dbFile });
    const refund = await call(first.url, 'POST', '/refunds', { body: { order_id: 'ord_1001', amount_cents: 12900, reason: 'damaged' }, key: 'idem-persist' });
    expect(refund.status).toBe(201);
    await call(first.url, 'POST', '/accounts/cust_001/plan', { body: { plan: 'enterprise' } });
    await first.close();

    const second = await startDemoServices({ dbFile });
    try {
      const ledger = await demoClient(second.url).ledger();
      expect(ledger.refunds).toEqual([refund.json]);
      expect(ledger.plan_changes).toHaveLength(1);
      // Reseeding did not reset a seeded row that changed.
      expect((await call(second.url, 'GET', '/customers/cust_001')).json.plan).toBe('enterprise');
      expect((await call(second.url, 'GET', '/orders/ord_1001')).json.refunded_cents).toBe(12900);
      // The key survives too: a retry after the restart replays.
      const replay = await call(second.url, 'POST', '/refunds', { body: { order_id: 'ord_1001', amount_cents: 12900, reason: 'damaged' }, key: 'idem-persist' });
      expect([replay.status, replay.headers.get('idempotent-replayed'), replay.json.id]).toEqual([201, 'true', refund.json.id]);
      const next = await call(second.url, 'POST', '/emails', { body: { to: 'ada@example.com', subject: 's', body: 'b' } });
      expect(next.json.id).toBe('em_000001');
    } finally {
      await second.close();
    }
    const db = new Database(dbFile, { readonly: true });
    try {
      const count = (table: string) => (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
      expect([count('customers'), count('orders'), count('order_items'), count('refunds')]).toEqual([3, 3, 4, 1]);
      expect(count('kb_articles')).toBeGreaterThanOrEqual(6);
    } finally {
      db.close();
    }
  });

  it('close() ends hanging requests instead of waiting for them', async () => {
    const svc = await startDemoServices();
    await demoClient(svc.url).setFault({ endpoint: '/customers', hang: true });
    const pending = call(svc.url, 'GET', '/customers/cust_001');
    // Let the request reach the server before closing.
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    await svc.close();
    expect(Date.now() - started).toBeLessThan(2_000);
    await expect(pending).rejects.toThrow();
    await svc.close(); // idempotent
  });

  it('client methods throw DemoHttpError on an error answer', async () => {
    const svc = await startDemoServices();
    try {
      const err: unknown = await demoClient(`${svc.url}/nowhere`).ledger().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DemoHttpError);
      expect(err).toMatchObject({ status: 404, type: 'not_found' });
    } finally {
      await svc.close();
    }
  });
});
