/**
 * Keel's payload codec: AES-256-GCM over the whole payload. Encoding serializes the original payload
 * (metadata and data, as the `temporal.api.common.v1.Payload` protobuf) and encrypts it with the active key
 * and a random 12-byte IV; the result is a payload whose metadata says only `encoding: binary/encrypted` and
 * the key id, and whose data is IV ‖ ciphertext ‖ 16-byte tag. Decoding looks the key up by that id, so
 * payloads written before a rotation still decrypt while their key stays configured. Decoding leaves payloads
 * that are not `binary/encrypted` untouched (history written before encryption was turned on).
 * This is the layout of Temporal's encryption samples; workers, clients, replay and `keel codec-server`
 * all use this one class.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { METADATA_ENCODING_KEY, type Payload, type PayloadCodec } from '@temporalio/common';
import protobuf from 'protobufjs';
import type { CodecKeyring } from './keys.js';

/** The `encoding` metadata of an encrypted payload. */
export const ENCRYPTED_ENCODING = 'binary/encrypted';
/** The metadata key that names the key a payload was encrypted with. */
export const KEY_ID_METADATA = 'encryption-key-id';

const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * `temporal.api.common.v1.Payload`, fields 1 (metadata) and 2 (data): what a payload carries once it has no
 * external storage reference (Keel configures none). Defined here with protobufjs (a direct dependency)
 * rather than importing `@temporalio/proto`, which is only a transitive one; the bytes are the same.
 */
const PayloadMessage = new protobuf.Type('Payload')
  .add(new protobuf.MapField('metadata', 1, 'string', 'bytes'))
  .add(new protobuf.Field('data', 2, 'bytes'));
new protobuf.Root().define('temporal.api.common.v1').add(PayloadMessage);

/** A payload cannot be decrypted: its key is not configured, or it fails authentication. Names the key id. */
export class PayloadDecryptionError extends Error {
  override readonly name = 'PayloadDecryptionError';
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** AES-256-GCM payload codec over a keyring (the first key encrypts, every key decrypts). */
export class AesGcmPayloadCodec implements PayloadCodec {
  constructor(private readonly keys: CodecKeyring) {}

  /** The id of the key new payloads are encrypted with. */
  get activeKeyId(): string {
    return this.keys.active.id;
  }

  /** Every configured key id, the active one first. */
  get keyIds(): string[] {
    return [...this.keys.byId.keys()];
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((p) => this.encrypt(p));
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((p) => this.decrypt(p));
  }

  /** Encrypts one payload with the active key and a fresh IV. */
  encrypt(payload: Payload): Payload {
    const { id, key } = this.keys.active;
    const plain = PayloadMessage.encode(PayloadMessage.fromObject({ metadata: payload.metadata ?? {}, data: payload.data ?? new Uint8Array() })).finish();
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
    return { metadata: { [METADATA_ENCODING_KEY]: utf8.encode(ENCRYPTED_ENCODING), [KEY_ID_METADATA]: utf8.encode(id) }, data: sealed };
  }

  /**
   * Decrypts one payload; one that is not `binary/encrypted` comes back as it is.
   * @throws PayloadDecryptionError naming the key id when the key is not configured or the payload does not authenticate
   */
  decrypt(payload: Payload): Payload {
    if (!isEncrypted(payload)) return payload;
    const idBytes = payload.metadata?.[KEY_ID_METADATA];
    if (!idBytes) throw new PayloadDecryptionError(`an encrypted payload has no ${KEY_ID_METADATA} metadata; it cannot be decrypted`);
    const id = fromUtf8.decode(idBytes);
    const key = this.keys.byId.get(id);
    if (!key) {
      throw new PayloadDecryptionError(
        `payload encrypted with key '${id}', which is not configured (keys here: ${this.keyIds.join(', ')}); add it to KEEL_CODEC_KEYS to read this history`,
      );
    }
    const data = payload.data ?? new Uint8Array();
    if (data.length < IV_BYTES + TAG_BYTES) throw new PayloadDecryptionError(`payload encrypted with key '${id}' is truncated (${data.length} bytes)`);
    const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, IV_BYTES));
    decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
    let plain: Buffer;
    try {
      plain = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new PayloadDecryptionError(
        `payload encrypted with key '${id}' does not authenticate: the key configured as '${id}' is not the one it was encrypted with, or the payload was altered`,
      );
    }
    const inner = PayloadMessage.toObject(PayloadMessage.decode(plain)) as { metadata?: Record<string, Uint8Array>; data?: Uint8Array };
    return { metadata: inner.metadata ?? {}, data: inner.data ?? new Uint8Array() };
  }
}

/** Whether a payload is one this codec encrypted (by its `encoding` metadata). */
export function isEncrypted(payload: Payload): boolean {
  const encoding = payload.metadata?.[METADATA_ENCODING_KEY];
  return encoding !== undefined && encoding !== null && fromUtf8.decode(encoding) === ENCRYPTED_ENCODING;
}
