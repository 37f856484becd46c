/**
 * Redaction of personal data and secrets from values shown to people who need not see them (approval
 * requests, logs). Sandbox-safe and deterministic. Masks: values under secret-looking keys; email
 * addresses (`a***@example.com`); long digit runs such as card or account numbers (last four kept).
 */

const SECRET_KEY = /pass(word)?|secret|token|api[_-]?key|authorization|card|ssn|iban|cvv/i;
const EMAIL = /([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})/g;
const DIGITS = /\b(?:\d[ -]?){8,}(\d{4})\b/g;

/** A copy of `value` with secrets and personal data masked; strings are cut at `maxString` characters. */
export function redact(value: unknown, maxString = 500): unknown {
  if (typeof value === 'string') {
    const masked = value.replace(EMAIL, '$1***@$2').replace(DIGITS, '****$1');
    return masked.length > maxString ? `${masked.slice(0, maxString)}…` : masked;
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, maxString));
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, SECRET_KEY.test(k) ? '[redacted]' : redact(v, maxString)]),
    );
  }
  return value;
}
