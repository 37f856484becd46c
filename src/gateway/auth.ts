/**
 * Who is calling the gateway: bearer tokens mapped to a user id and roles. The token file is JSON,
 * `{ "tokens": [ { "token" | "sha256", "user", "roles" } ] }`; a token may be written as itself (at least
 * 16 characters) or as the hex SHA-256 of itself, so a deployed file need not hold the secrets. Tokens are
 * compared by their SHA-256 (a map lookup on a fixed-length digest), never logged, and the identity that
 * comes out is the only identity the gateway acts as: a session's user and an approval's approver.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { describeIssues } from '../workflows/types.js';

/** One entry of the token file. */
export const GatewayTokenSchema = z
  .strictObject({
    /** The token itself (≥ 16 characters). */
    token: z.string().min(16, 'a token must be at least 16 characters').optional(),
    /** Or the lowercase hex SHA-256 of the token. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits (the SHA-256 of the token)').optional(),
    /** The user the token authenticates. */
    user: z.string().min(1).max(200),
    /** The roles the user holds (tool allowlists and approval policies read them). */
    roles: z.array(z.string().min(1).max(100)).max(50).default([]),
  })
  .refine((t) => (t.token === undefined) !== (t.sha256 === undefined), { message: 'give exactly one of token and sha256' });

/** The token file. */
export const GatewayTokensSchema = z.strictObject({ tokens: z.array(GatewayTokenSchema).min(1, 'no tokens: nobody could call the gateway') });

/** An authenticated caller. */
export interface Principal {
  user: string;
  roles: string[];
}

/** Looks callers up by their bearer token. */
export interface Authenticator {
  /** The caller of an `Authorization` header, or why not. */
  authenticate(header: string | undefined): Principal | { error: string };
}

/** The token file could not be read or is invalid; the message names the file and the field. */
export class GatewayTokensError extends Error {
  override readonly name = 'GatewayTokensError';
}

function digest(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Builds the authenticator from parsed token entries. */
export function tokenAuthenticator(entries: z.input<typeof GatewayTokensSchema>, origin = 'tokens'): Authenticator {
  const parsed = GatewayTokensSchema.safeParse(entries);
  if (!parsed.success) throw new GatewayTokensError(`${origin}: ${describeIssues(parsed.error, 'tokens')}`);
  const byDigest = new Map<string, Principal>();
  for (const entry of parsed.data.tokens) {
    const key = entry.sha256 ?? digest(entry.token!);
    if (byDigest.has(key)) throw new GatewayTokensError(`${origin}: the same token is listed twice (user ${entry.user})`);
    byDigest.set(key, { user: entry.user, roles: entry.roles });
  }
  return {
    authenticate(header) {
      if (!header) return { error: 'missing Authorization header: send Authorization: Bearer <token>' };
      const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
      if (!m) return { error: 'malformed Authorization header: expected Bearer <token>' };
      return byDigest.get(digest(m[1]!)) ?? { error: 'unknown or revoked token' };
    },
  };
}

/** Reads the token file (`keel serve --tokens`, KEEL_SERVE_TOKENS). */
export function readTokenFile(file: string): Authenticator {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new GatewayTokensError(`token file ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return tokenAuthenticator(raw as z.input<typeof GatewayTokensSchema>, `token file ${file}`);
}
