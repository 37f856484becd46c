/**
 * Keel's one redactor: what it masks in every value shown to people or kept outside the workflow
 * (approval requests, the status query's events, the audit trail, log lines). Sandbox-safe and
 * deterministic. It masks:
 * - values under secret-looking keys (`password`, `token`, `api_key`, `authorization`, `card`, `iban`, …)
 *   and under the fields a tool declares `sensitive`;
 * - email addresses (`a***@example.com`);
 * - card numbers that pass the Luhn check, 13 to 19 digits with or without spaces or dashes (`****1111`);
 * - API keys and tokens by their well-known shapes (Anthropic, OpenAI, Stripe, GitHub, Slack, AWS,
 *   Google keys; JWTs; `Bearer …`), as `[redacted token]`;
 * - phone numbers written as phone numbers (a `+country` prefix, or groups split by spaces, dots, dashes
 *   or parentheses, 9 to 15 digits in all), keeping the last two digits.
 */

const SECRET_KEY = /pass(word)?|secret|token|api[_-]?key|authorization|card|ssn|iban|cvv/i;
const EMAIL = /([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})/g;
const CARD = /\b\d(?:[ -]?\d){12,18}\b/g;
const TOKENS = [
  /\bsk-ant-[A-Za-z0-9_-]{16,}/g,
  /\b(?:sk|pk|rk)[-_](?:live|test)[-_][A-Za-z0-9]{10,}/g,
  /\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}/g,
  /\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}/g,
  /\bgithub_pat_[A-Za-z0-9_]{30,}/g,
  /\bxox[abprs]-[A-Za-z0-9-]{10,}/g,
  /\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g,
  /\bAIza[0-9A-Za-z_-]{35}\b/g,
  /\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}/g,
  /\bBearer\s+[A-Za-z0-9._~+/=-]{16,}/gi,
];
const PHONE = /(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w])/g;

/** What to mask besides what the redactor finds by itself. */
export interface RedactOptions {
  /** Strings are cut at this many characters (500). */
  maxString?: number;
  /** Field names whose values are masked wherever they appear (a tool's `sensitive` fields). */
  fields?: readonly string[];
}

/** A copy of `value` with secrets and personal data masked; strings are cut at `maxString` characters. */
export function redact(value: unknown, opts: number | RedactOptions = {}): unknown {
  const o = typeof opts === 'number' ? { maxString: opts } : opts;
  return walk(value, o.maxString ?? 500, new Set(o.fields ?? []));
}

/** The redactor's masking of one string (no cutting). */
export function redactText(text: string): string {
  let out = text;
  for (const pattern of TOKENS) out = out.replace(pattern, '[redacted token]');
  out = out.replace(EMAIL, '$1***@$2');
  out = out.replace(CARD, (m) => {
    const digits = m.replace(/[ -]/g, '');
    return luhn(digits) ? `****${digits.slice(-4)}` : m;
  });
  out = out.replace(PHONE, (m) => {
    const digits = m.replace(/\D/g, '');
    return digits.length >= 9 && digits.length <= 15 && /[\s.()+-]/.test(m) ? `***${digits.slice(-2)}` : m;
  });
  return out;
}

function walk(value: unknown, maxString: number, fields: ReadonlySet<string>): unknown {
  if (typeof value === 'string') {
    const masked = redactText(value);
    return masked.length > maxString ? `${masked.slice(0, maxString)}…` : masked;
  }
  if (Array.isArray(value)) return value.map((v) => walk(v, maxString, fields));
  if (value instanceof Error) return { type: value.name, message: redactText(value.message), ...(value.stack ? { stack: redactText(value.stack) } : {}) };
  if (isPlainObject(value)) {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, SECRET_KEY.test(k) || fields.has(k) ? '[redacted]' : walk(v, maxString, fields)]),
    );
  }
  return value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** The Luhn checksum card numbers carry. */
function luhn(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}
