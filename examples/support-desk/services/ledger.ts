// The demo services' SQLite ledger: schema, seed data and every read and write the HTTP layer needs.
// Opening a ledger creates the tables if they are missing and inserts the seed rows with
// `INSERT OR IGNORE`, so reopening a file neither duplicates seeds nor undoes changes made to them
// (a plan changed in an earlier run stays changed). Business rules that belong to the downstream
// systems (refundable amount, unknown ids) are enforced here and raised as `LedgerError`, which the
// server turns into an HTTP error. Writes are plain synchronous calls; the server wraps each write
// together with its idempotency record in one `transaction`, so the two commit or roll back together.
// IDs are sequential per table (`re_000001`), so runs are repeatable and golden outputs stable.
import Database from 'better-sqlite3';
import type { Credit, Email, Plan, PlanChange, Refund, Ticket, Ledger } from './client.js';

/** A rule of a downstream system was broken (unknown id, amount too large); carries its HTTP status. */
export class LedgerError extends Error {
  override readonly name = 'LedgerError';
  /**
   * @param status HTTP status the server answers with.
   * @param type machine-readable `error.type`, e.g. `not_found`, `amount_exceeds_refundable`.
   */
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

/** A customer record of the CRM. */
export interface Customer {
  id: string;
  name: string;
  email: string;
  plan: Plan;
}

/** One line of an order. Prices are integer cents. */
export interface OrderItem {
  sku: string;
  name: string;
  qty: number;
  price_cents: number;
}

/** An order, with how much of it has been refunded so far. */
export interface Order {
  id: string;
  customer_id: string;
  items: OrderItem[];
  total_cents: number;
  currency: string;
  status: string;
  refunded_cents: number;
}

/** One knowledge-base search hit. */
export interface KbResult {
  id: string;
  title: string;
  snippet: string;
}

/** A stored idempotent response (Stripe semantics): what was asked, and what was answered. */
export interface IdempotencyRecord {
  key: string;
  method: string;
  path: string;
  body_hash: string;
  status: number;
  response_body: string;
  created_at: string;
}

/** Who asked for a write: the caller's idempotency key and trace context, both optional. */
export interface WriteMeta {
  idempotencyKey: string | null;
  traceparent: string | null;
}

const SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS customers (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE COLLATE NOCASE, plan TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
  id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), total_cents INTEGER NOT NULL,
  currency TEXT NOT NULL, status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS order_items (
  order_id TEXT NOT NULL REFERENCES orders(id), position INTEGER NOT NULL, sku TEXT NOT NULL,
  name TEXT NOT NULL, qty INTEGER NOT NULL, price_cents INTEGER NOT NULL, PRIMARY KEY (order_id, position)
);
CREATE TABLE IF NOT EXISTS kb_articles (id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, order_id TEXT NOT NULL REFERENCES orders(id),
  amount_cents INTEGER NOT NULL, currency TEXT NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL,
  idempotency_key TEXT, traceparent TEXT, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS emails (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, to_addr TEXT NOT NULL, subject TEXT NOT NULL,
  body TEXT NOT NULL, status TEXT NOT NULL, idempotency_key TEXT, traceparent TEXT, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL REFERENCES customers(id),
  subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, close_reason TEXT,
  idempotency_key TEXT, traceparent TEXT, created_at TEXT NOT NULL, closed_at TEXT
);
CREATE TABLE IF NOT EXISTS credits (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL REFERENCES customers(id),
  amount_cents INTEGER NOT NULL, currency TEXT NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL,
  idempotency_key TEXT, traceparent TEXT, created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS plan_changes (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL REFERENCES customers(id),
  previous_plan TEXT NOT NULL, plan TEXT NOT NULL, changed INTEGER NOT NULL,
  idempotency_key TEXT, traceparent TEXT, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
  key TEXT PRIMARY KEY, method TEXT NOT NULL, path TEXT NOT NULL, body_hash TEXT NOT NULL,
  status INTEGER NOT NULL, response_body TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_key ON refunds(idempotency_key);
CREATE INDEX IF NOT EXISTS emails_key ON emails(idempotency_key);
CREATE INDEX IF NOT EXISTS tickets_key ON tickets(idempotency_key);
CREATE INDEX IF NOT EXISTS credits_key ON credits(idempotency_key);
`;

const SEED_CUSTOMERS: Customer[] = [
  { id: 'cust_001', name: 'Ada Lovelace', email: 'ada@example.com', plan: 'pro' },
  { id: 'cust_002', name: 'Grace Hopper', email: 'grace@example.com', plan: 'free' },
  { id: 'cust_003', name: 'Alan Turing', email: 'alan@example.com', plan: 'enterprise' },
];

const SEED_ORDERS: Array<Omit<Order, 'refunded_cents'>> = [
  {
    id: 'ord_1001',
    customer_id: 'cust_001',
    items: [{ sku: 'KB-MECH-01', name: 'Mechanical keyboard', qty: 1, price_cents: 12900 }],
    total_cents: 12900,
    currency: 'USD',
    status: 'delivered',
  },
  {
    id: 'ord_1002',
    customer_id: 'cust_001',
    items: [
      { sku: 'CBL-USBC-2M', name: 'USB-C cable, 2 m', qty: 2, price_cents: 1500 },
      { sku: 'PAD-DESK-L', name: 'Desk mat, large', qty: 1, price_cents: 1500 },
    ],
    total_cents: 4500,
    currency: 'USD',
    status: 'shipped',
  },
  {
    id: 'ord_2001',
    customer_id: 'cust_002',
    items: [{ sku: 'MOUSE-ERGO', name: 'Ergonomic mouse', qty: 1, price_cents: 2999 }],
    total_cents: 2999,
    currency: 'USD',
    status: 'delivered',
  },
];

/** A knowledge-base article. */
export interface KbArticle {
  id: string;
  title: string;
  body: string;
}

const SEED_KB: KbArticle[] = [
  {
    id: 'kb_refund_policy',
    title: 'Refund policy',
    body:
      'Refunds within 30 days of delivery for damaged items, full amount, no return needed under 50 USD. ' +
      'Damaged items worth 50 USD or more must be returned with the prepaid label we email you; the refund is issued when the item is scanned by the carrier. ' +
      'Refunds go back to the original payment method and appear within 5-10 business days. ' +
      'Items that are not damaged can be returned unused within 14 days for a refund minus shipping.',
  },
  {
    id: 'kb_shipping_times',
    title: 'Shipping times',
    body:
      'Standard shipping takes 3-5 business days within the US and 7-14 business days internationally. ' +
      'Express shipping takes 1-2 business days. Orders placed before 2 pm ET ship the same day. ' +
      'You receive a tracking link by email once your order has shipped.',
  },
  {
    id: 'kb_plan_changes',
    title: 'Changing your plan',
    body:
      'You can move between the Free, Pro and Enterprise plans at any time. Upgrades take effect immediately and are prorated. ' +
      'Downgrades take effect at the end of the current billing period. Moving to Enterprise requires a signed order form and approval by billing.',
  },
  {
    id: 'kb_password_reset',
    title: 'Resetting your password',
    body:
      'Use "Forgot password" on the sign-in page; we email a reset link that is valid for 1 hour. ' +
      'If the email does not arrive, check your spam folder. Support agents never ask for your password.',
  },
  {
    id: 'kb_warranty',
    title: 'Warranty',
    body:
      'Hardware comes with a 2-year limited warranty covering manufacturing defects. ' +
      'Damage from accidents, liquids or misuse is not covered. Warranty claims need the order number and a photo of the defect; we repair or replace the item.',
  },
  {
    id: 'kb_account_credits',
    title: 'Account credits',
    body:
      'As a goodwill gesture, support may add an account credit, for example after a late delivery. ' +
      'Credits apply automatically to your next invoice, cannot be exchanged for cash and expire after 12 months.',
  },
  {
    id: 'kb_order_cancellation',
    title: 'Cancelling an order',
    body:
      'Orders can be cancelled free of charge until they ship. Once an order has shipped, refuse the delivery or return it within 14 days. ' +
      'Cancelled orders are refunded in full to the original payment method.',
  },
];

const STOP_WORDS = new Set(
  'a an and are as at be by can do does for from how i in is it my of on or our the this to was what when where why will with you your'.split(
    ' ',
  ),
);

/** Lower-case word tokens of a text. */
function words(text: string): string[] {
  return text.toLowerCase().match(/[a-z0-9]+/g) ?? [];
}

/** Whether a query term matches a word: equal, or one a prefix of the other (≥ 4 letters: refund/refunds). */
function termMatches(term: string, word: string): boolean {
  if (term === word) return true;
  const [short, long] = term.length < word.length ? [term, word] : [word, term];
  return short.length >= 4 && long.startsWith(short);
}

interface RefundRow extends Omit<Refund, 'status'> {
  status: string;
}
interface EmailRow extends Omit<Email, 'to' | 'status'> {
  to_addr: string;
  status: string;
}
interface TicketRow extends Omit<Ticket, 'status'> {
  status: string;
}
interface CreditRow extends Omit<Credit, 'status'> {
  status: string;
}
interface PlanChangeRow extends Omit<PlanChange, 'changed' | 'plan' | 'previous_plan'> {
  plan: string;
  previous_plan: string;
  changed: number;
}

const REFUND_COLS = 'id, order_id, amount_cents, currency, reason, status, idempotency_key, traceparent, created_at';
const EMAIL_COLS = 'id, to_addr, subject, body, status, idempotency_key, traceparent, created_at';
const TICKET_COLS =
  'id, customer_id, subject, body, status, close_reason, idempotency_key, traceparent, created_at, closed_at';
const CREDIT_COLS =
  'id, customer_id, amount_cents, currency, reason, status, idempotency_key, traceparent, created_at, revoked_at';
const PLAN_CHANGE_COLS = 'id, customer_id, previous_plan, plan, changed, idempotency_key, traceparent, created_at';

function toRefund(r: RefundRow): Refund {
  return { ...r, status: 'succeeded' };
}
function toEmail({ to_addr, ...r }: EmailRow): Email {
  return { id: r.id, to: to_addr, subject: r.subject, body: r.body, status: 'queued', idempotency_key: r.idempotency_key, traceparent: r.traceparent, created_at: r.created_at };
}
function toTicket(r: TicketRow): Ticket {
  return { ...r, status: r.status === 'closed' ? 'closed' : 'open' };
}
function toCredit(r: CreditRow): Credit {
  return { ...r, status: r.status === 'revoked' ? 'revoked' : 'active' };
}
function toPlan(p: string): Plan {
  return p === 'free' || p === 'enterprise' ? p : 'pro';
}
function toPlanChange(r: PlanChangeRow): PlanChange {
  return { ...r, plan: toPlan(r.plan), previous_plan: toPlan(r.previous_plan), changed: r.changed === 1 };
}

/** Sequential, prefixed, zero-padded ID: `re_000001`. */
function nextId(db: Database.Database, table: string, prefix: string): { seq: number; id: string } {
  const row = db.prepare<[], { n: number }>(`SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM ${table}`).get();
  const seq = row?.n ?? 1;
  return { seq, id: `${prefix}_${String(seq).padStart(6, '0')}` };
}

/**
 * The demo services' data: an open SQLite database with the schema created and the seeds in place.
 * Every method is synchronous (better-sqlite3); call `close()` when done.
 */
export class DemoLedger {
  private readonly db: Database.Database;

  /**
   * Open (creating if needed) the ledger database and seed it.
   *
   * @param dbFile a file path, or `':memory:'` (the default) for a ledger that lives as long as this object.
   */
  /** @param extraKb - articles added to the seeded knowledge base (the red-team suite plants injections here). */
  constructor(dbFile = ':memory:', extraKb: KbArticle[] = []) {
    this.db = new Database(dbFile);
    if (dbFile !== ':memory:') this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA_SQL);
    this.seed(extraKb);
  }

  private seed(extraKb: KbArticle[]): void {
    const db = this.db;
    const insertCustomer = db.prepare('INSERT OR IGNORE INTO customers (id, name, email, plan) VALUES (@id, @name, @email, @plan)');
    const insertOrder = db.prepare(
      'INSERT OR IGNORE INTO orders (id, customer_id, total_cents, currency, status) VALUES (?, ?, ?, ?, ?)',
    );
    const insertItem = db.prepare(
      'INSERT OR IGNORE INTO order_items (order_id, position, sku, name, qty, price_cents) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const insertKb = db.prepare('INSERT OR IGNORE INTO kb_articles (id, title, body) VALUES (@id, @title, @body)');
    db.transaction(() => {
      for (const c of SEED_CUSTOMERS) insertCustomer.run(c);
      for (const o of SEED_ORDERS) {
        insertOrder.run(o.id, o.customer_id, o.total_cents, o.currency, o.status);
        o.items.forEach((it, i) => insertItem.run(o.id, i, it.sku, it.name, it.qty, it.price_cents));
      }
      for (const a of [...SEED_KB, ...extraKb]) insertKb.run(a);
    })();
  }

  /** Run `fn` in one SQLite transaction: everything it writes commits together, or nothing does if it throws. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /** Close the database. */
  close(): void {
    if (this.db.open) this.db.close();
  }

  // --- CRM -------------------------------------------------------------------------------------

  /** A customer by id, or undefined. */
  getCustomer(id: string): Customer | undefined {
    const row = this.db
      .prepare<[string], Omit<Customer, 'plan'> & { plan: string }>('SELECT id, name, email, plan FROM customers WHERE id = ?')
      .get(id);
    return row && { ...row, plan: toPlan(row.plan) };
  }

  /** A customer by email (case-insensitive), or undefined. */
  findCustomerByEmail(email: string): Customer | undefined {
    const row = this.db
      .prepare<[string], { id: string }>('SELECT id FROM customers WHERE email = ? COLLATE NOCASE')
      .get(email.trim());
    return row && this.getCustomer(row.id);
  }

  private requireCustomer(id: string): Customer {
    const c = this.getCustomer(id);
    if (!c) throw new LedgerError(404, 'not_found', `customer ${id} not found`);
    return c;
  }

  /** An order with its items and refunded amount, or undefined. */
  getOrder(id: string): Order | undefined {
    const row = this.db
      .prepare<[string], Omit<Order, 'items' | 'refunded_cents'>>(
        'SELECT id, customer_id, total_cents, currency, status FROM orders WHERE id = ?',
      )
      .get(id);
    if (!row) return undefined;
    const items = this.db
      .prepare<[string], OrderItem>(
        'SELECT sku, name, qty, price_cents FROM order_items WHERE order_id = ? ORDER BY position',
      )
      .all(id);
    const refunded = this.db
      .prepare<[string], { s: number }>('SELECT COALESCE(SUM(amount_cents), 0) AS s FROM refunds WHERE order_id = ?')
      .get(id);
    return { ...row, items, refunded_cents: refunded?.s ?? 0 };
  }

  // --- knowledge base --------------------------------------------------------------------------

  /**
   * Knowledge-base search by simple term scoring: each query term (stop words dropped) scores 3 per
   * match in the title and 1 per match in the body; articles that score 0 are left out; ties go by id.
   * The snippet is the first body sentence that contains a query term (or the first sentence).
   */
  searchKb(q: string, limit: number): KbResult[] {
    const terms = [...new Set(words(q).filter((w) => !STOP_WORDS.has(w)))];
    if (terms.length === 0) return [];
    const articles = this.db
      .prepare<[], { id: string; title: string; body: string }>('SELECT id, title, body FROM kb_articles ORDER BY id')
      .all();
    const scored = articles.map((a) => {
      const titleWords = words(a.title);
      const bodyWords = words(a.body);
      let score = 0;
      for (const t of terms) {
        score += 3 * titleWords.filter((w) => termMatches(t, w)).length;
        score += bodyWords.filter((w) => termMatches(t, w)).length;
      }
      return { a, score };
    });
    return scored
      .filter((s) => s.score > 0)
      .sort((x, y) => y.score - x.score || x.a.id.localeCompare(y.a.id))
      .slice(0, limit)
      .map(({ a }) => ({ id: a.id, title: a.title, snippet: snippet(a.body, terms) }));
  }

  // --- writes ----------------------------------------------------------------------------------

  /**
   * Refund part or all of an order.
   *
   * @throws {LedgerError} 404 `not_found` for an unknown order; 400 `amount_exceeds_refundable` when
   *   `amountCents` is more than the order's total minus what was already refunded.
   */
  createRefund(input: { order_id: string; amount_cents: number; reason: string }, meta: WriteMeta): Refund {
    const order = this.getOrder(input.order_id);
    if (!order) throw new LedgerError(404, 'not_found', `order ${input.order_id} not found`);
    const refundable = order.total_cents - order.refunded_cents;
    if (input.amount_cents > refundable) {
      throw new LedgerError(
        400,
        'amount_exceeds_refundable',
        `amount_cents ${input.amount_cents} exceeds the refundable amount of order ${order.id} (${refundable} of ${order.total_cents} ${order.currency} cents)`,
      );
    }
    const { seq, id } = nextId(this.db, 'refunds', 're');
    this.db
      .prepare(
        'INSERT INTO refunds (seq, id, order_id, amount_cents, currency, reason, status, idempotency_key, traceparent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(seq, id, order.id, input.amount_cents, order.currency, input.reason, 'succeeded', meta.idempotencyKey, meta.traceparent, now());
    return this.getRefund(id);
  }

  private getRefund(id: string): Refund {
    const row = this.db.prepare<[string], RefundRow>(`SELECT ${REFUND_COLS} FROM refunds WHERE id = ?`).get(id);
    if (!row) throw new LedgerError(404, 'not_found', `refund ${id} not found`);
    return toRefund(row);
  }

  /** Refunds, oldest first, optionally only those with an idempotency key or for an order. */
  listRefunds(filter: { idempotency_key?: string; order_id?: string } = {}): Refund[] {
    return this.db
      .prepare<{ key: string | null; order: string | null }, RefundRow>(
        `SELECT ${REFUND_COLS} FROM refunds WHERE (@key IS NULL OR idempotency_key = @key) AND (@order IS NULL OR order_id = @order) ORDER BY seq`,
      )
      .all({ key: filter.idempotency_key ?? null, order: filter.order_id ?? null })
      .map(toRefund);
  }

  /** Queue an email in the outbox. */
  createEmail(input: { to: string; subject: string; body: string }, meta: WriteMeta): Email {
    const { seq, id } = nextId(this.db, 'emails', 'em');
    this.db
      .prepare(
        'INSERT INTO emails (seq, id, to_addr, subject, body, status, idempotency_key, traceparent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(seq, id, input.to, input.subject, input.body, 'queued', meta.idempotencyKey, meta.traceparent, now());
    const row = this.db.prepare<[string], EmailRow>(`SELECT ${EMAIL_COLS} FROM emails WHERE id = ?`).get(id);
    if (!row) throw new Error(`email ${id} vanished after insert`);
    return toEmail(row);
  }

  /** Emails in the outbox, oldest first, optionally only those with an idempotency key. */
  listEmails(filter: { idempotency_key?: string } = {}): Email[] {
    return this.db
      .prepare<{ key: string | null }, EmailRow>(`SELECT ${EMAIL_COLS} FROM emails WHERE (@key IS NULL OR idempotency_key = @key) ORDER BY seq`)
      .all({ key: filter.idempotency_key ?? null })
      .map(toEmail);
  }

  /**
   * Open a support ticket.
   *
   * @throws {LedgerError} 404 `not_found` for an unknown customer.
   */
  createTicket(input: { customer_id: string; subject: string; body: string }, meta: WriteMeta): Ticket {
    this.requireCustomer(input.customer_id);
    const { seq, id } = nextId(this.db, 'tickets', 'tkt');
    this.db
      .prepare(
        'INSERT INTO tickets (seq, id, customer_id, subject, body, status, idempotency_key, traceparent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(seq, id, input.customer_id, input.subject, input.body, 'open', meta.idempotencyKey, meta.traceparent, now());
    return this.requireTicket(id);
  }

  /** A ticket by id, or undefined. */
  getTicket(id: string): Ticket | undefined {
    const row = this.db.prepare<[string], TicketRow>(`SELECT ${TICKET_COLS} FROM tickets WHERE id = ?`).get(id);
    return row && toTicket(row);
  }

  private requireTicket(id: string): Ticket {
    const t = this.getTicket(id);
    if (!t) throw new LedgerError(404, 'not_found', `ticket ${id} not found`);
    return t;
  }

  /**
   * Close a ticket. Closing a closed ticket changes nothing (its first `closed_at` and reason stay).
   *
   * @throws {LedgerError} 404 `not_found` for an unknown ticket.
   */
  closeTicket(id: string, reason: string | undefined): Ticket {
    const t = this.requireTicket(id);
    if (t.status === 'closed') return t;
    this.db
      .prepare("UPDATE tickets SET status = 'closed', close_reason = ?, closed_at = ? WHERE id = ?")
      .run(reason ?? null, now(), id);
    return this.requireTicket(id);
  }

  /** Tickets, oldest first, optionally only those created with an idempotency key. */
  listTickets(filter: { idempotency_key?: string } = {}): Ticket[] {
    return this.db
      .prepare<{ key: string | null }, TicketRow>(`SELECT ${TICKET_COLS} FROM tickets WHERE (@key IS NULL OR idempotency_key = @key) ORDER BY seq`)
      .all({ key: filter.idempotency_key ?? null })
      .map(toTicket);
  }

  /**
   * Grant an account credit (in USD cents).
   *
   * @throws {LedgerError} 404 `not_found` for an unknown customer.
   */
  createCredit(input: { customer_id: string; amount_cents: number; reason: string }, meta: WriteMeta): Credit {
    this.requireCustomer(input.customer_id);
    const { seq, id } = nextId(this.db, 'credits', 'cr');
    this.db
      .prepare(
        'INSERT INTO credits (seq, id, customer_id, amount_cents, currency, reason, status, idempotency_key, traceparent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(seq, id, input.customer_id, input.amount_cents, 'USD', input.reason, 'active', meta.idempotencyKey, meta.traceparent, now());
    return this.requireCredit(id);
  }

  /** A credit by id, or undefined. */
  getCredit(id: string): Credit | undefined {
    const row = this.db.prepare<[string], CreditRow>(`SELECT ${CREDIT_COLS} FROM credits WHERE id = ?`).get(id);
    return row && toCredit(row);
  }

  private requireCredit(id: string): Credit {
    const c = this.getCredit(id);
    if (!c) throw new LedgerError(404, 'not_found', `credit ${id} not found`);
    return c;
  }

  /**
   * Revoke a credit. Revoking a revoked credit changes nothing.
   *
   * @throws {LedgerError} 404 `not_found` for an unknown credit.
   */
  revokeCredit(id: string): Credit {
    const c = this.requireCredit(id);
    if (c.status === 'revoked') return c;
    this.db.prepare("UPDATE credits SET status = 'revoked', revoked_at = ? WHERE id = ?").run(now(), id);
    return this.requireCredit(id);
  }

  /** Credits, oldest first, optionally only those created with an idempotency key. */
  listCredits(filter: { idempotency_key?: string } = {}): Credit[] {
    return this.db
      .prepare<{ key: string | null }, CreditRow>(`SELECT ${CREDIT_COLS} FROM credits WHERE (@key IS NULL OR idempotency_key = @key) ORDER BY seq`)
      .all({ key: filter.idempotency_key ?? null })
      .map(toCredit);
  }

  /**
   * Put a customer's account on a plan and record the change with the previous plan.
   *
   * @throws {LedgerError} 404 `not_found` for an unknown customer.
   */
  setPlan(customerId: string, plan: Plan, meta: WriteMeta): PlanChange {
    const c = this.requireCustomer(customerId);
    this.db.prepare('UPDATE customers SET plan = ? WHERE id = ?').run(plan, customerId);
    const { seq, id } = nextId(this.db, 'plan_changes', 'pc');
    this.db
      .prepare(
        'INSERT INTO plan_changes (seq, id, customer_id, previous_plan, plan, changed, idempotency_key, traceparent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(seq, id, customerId, c.plan, plan, c.plan === plan ? 0 : 1, meta.idempotencyKey, meta.traceparent, now());
    const row = this.db.prepare<[string], PlanChangeRow>(`SELECT ${PLAN_CHANGE_COLS} FROM plan_changes WHERE id = ?`).get(id);
    if (!row) throw new Error(`plan change ${id} vanished after insert`);
    return toPlanChange(row);
  }

  /** Plan changes, oldest first. */
  listPlanChanges(): PlanChange[] {
    return this.db
      .prepare<[], PlanChangeRow>(`SELECT ${PLAN_CHANGE_COLS} FROM plan_changes ORDER BY seq`)
      .all()
      .map(toPlanChange);
  }

  /** Every side effect applied so far (`GET /ledger`). */
  snapshot(): Ledger {
    return {
      refunds: this.listRefunds(),
      emails: this.listEmails(),
      tickets: this.listTickets(),
      credits: this.listCredits(),
      plan_changes: this.listPlanChanges(),
    };
  }

  // --- idempotency keys ------------------------------------------------------------------------

  /** The stored response for an idempotency key, or undefined. */
  getIdempotencyRecord(key: string): IdempotencyRecord | undefined {
    return this.db
      .prepare<[string], IdempotencyRecord>(
        'SELECT key, method, path, body_hash, status, response_body, created_at FROM idempotency_keys WHERE key = ?',
      )
      .get(key);
  }

  /** Store the response for an idempotency key; call it in the same transaction as the write. */
  saveIdempotencyRecord(r: Omit<IdempotencyRecord, 'created_at'>): void {
    this.db
      .prepare(
        'INSERT INTO idempotency_keys (key, method, path, body_hash, status, response_body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      )
      .run(r.key, r.method, r.path, r.body_hash, r.status, r.response_body, now());
  }
}

function now(): string {
  return new Date().toISOString();
}

/** The first sentence of `body` that contains one of `terms`, or its first sentence; at most 200 chars. */
function snippet(body: string, terms: string[]): string {
  const sentences = body.match(/[^.!?]+[.!?]*/g)?.map((s) => s.trim()) ?? [body];
  const hit = sentences.find((s) => words(s).some((w) => terms.some((t) => termMatches(t, w)))) ?? sentences[0] ?? body;
  return hit.length > 200 ? `${hit.slice(0, 197)}...` : hit;
}
