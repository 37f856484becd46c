/**
 * The payload codec's keys, parsed from configuration: `id:base64key` entries, comma- or newline-separated,
 * each key 32 bytes (AES-256). The first entry is the one that encrypts; every entry decrypts, so a new key
 * goes first and old keys stay listed until no history still needs them (rotation). Errors name the entry or
 * the key id and what was wrong, never the key material; `config.ts` puts the variable's name in front.
 */

/** One AES-256 key and the id written beside every payload it encrypts. */
export interface CodecKey {
  /** Written into each payload's `encryption-key-id` metadata; letters, digits, `.`, `_`, `-`. */
  id: string;
  /** 32 bytes. */
  key: Buffer;
}

/** The keys a codec works with: the first encrypts, all decrypt. */
export interface CodecKeyring {
  /** The key new payloads are encrypted with (the first entry). */
  active: CodecKey;
  /** Every key, by id, the active one included. */
  byId: ReadonlyMap<string, Buffer>;
}

/** AES-256 key length, in bytes. */
export const AES_256_KEY_BYTES = 32;

/** A key id as it may appear in configuration and in payload metadata. */
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
/** Standard or URL-safe base64, padded or not. */
const BASE64 = /^(?:[A-Za-z0-9+/]+|[A-Za-z0-9_-]+)={0,2}$/;

/** A key specification is malformed; the message names the entry or key id, never key material. */
export class CodecKeyError extends Error {
  override readonly name = 'CodecKeyError';
}

/**
 * Parses `id:base64key` entries separated by commas or newlines (blank lines and `#` comments are skipped,
 * so a keys file can explain itself).
 * @throws CodecKeyError for an entry without an id, a bad or repeated id, bad base64, or a key that is not 32 bytes
 */
export function parseCodecKeys(spec: string): CodecKeyring {
  const entries = spec
    .split(/[,\n]/)
    .map((e) => e.replace(/#.*$/, '').trim())
    .filter(Boolean);
  if (entries.length === 0) throw new CodecKeyError('no keys; expected id:base64key entries, e.g. k1:<openssl rand -base64 32>');
  const keys: CodecKey[] = [];
  const byId = new Map<string, Buffer>();
  entries.forEach((entry, i) => {
    const colon = entry.indexOf(':');
    if (colon < 0) throw new CodecKeyError(`entry ${i + 1} is not id:base64key`);
    const id = entry.slice(0, colon).trim();
    const material = entry.slice(colon + 1).trim();
    if (!KEY_ID.test(id)) throw new CodecKeyError(`entry ${i + 1}: the key id must be 1-64 letters, digits, '.', '_' or '-'`);
    if (byId.has(id)) throw new CodecKeyError(`key id '${id}' appears twice`);
    if (!BASE64.test(material)) throw new CodecKeyError(`key '${id}' is not base64`);
    const key = Buffer.from(material, material.includes('-') || material.includes('_') ? 'base64url' : 'base64');
    if (key.length !== AES_256_KEY_BYTES) {
      throw new CodecKeyError(`key '${id}' is ${key.length} bytes; AES-256 needs ${AES_256_KEY_BYTES} (make one with: openssl rand -base64 32)`);
    }
    keys.push({ id, key });
    byId.set(id, key);
  });
  return { active: keys[0]!, byId };
}
