/**
 * Payload encryption: the data converter that workers, clients and replay share when codec keys are
 * configured (KEEL_CODEC_KEYS or KEEL_CODEC_KEYS_FILE), and `keel codec-server`, which decrypts for the
 * Temporal Web UI and the `temporal` CLI. Without keys nothing here is used and payloads stay as they were.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DataConverter } from '@temporalio/common';
import { ConfigError, dataDir, type KeelConfig } from '../config.js';
import { AesGcmPayloadCodec } from './codec.js';

export { AesGcmPayloadCodec, ENCRYPTED_ENCODING, KEY_ID_METADATA, PayloadDecryptionError, isEncrypted } from './codec.js';
export { AES_256_KEY_BYTES, CodecKeyError, parseCodecKeys, type CodecKey, type CodecKeyring } from './keys.js';
export { startCodecServer, webUiCodecEndpoint, type CodecServer, type CodecServerOptions } from './server.js';

/**
 * The failure converter module (`encodeCommonAttributes: true`), by path: the SDK's worker loads converters
 * only from a path, and a workflow bundle can include the same file.
 */
export const ENCRYPTED_FAILURE_CONVERTER_PATH = fileURLToPath(new URL('./failure-converter.cjs', import.meta.url));

/** The string a workflow bundle holds when it was built with {@link ENCRYPTED_FAILURE_CONVERTER_PATH}. */
export const ENCRYPTED_FAILURES_MARKER = 'keel:encrypted-failure-converter';

/** The configured payload codec, or undefined when no keys are configured. */
export function payloadCodec(config: Pick<KeelConfig, 'codecKeys'>): AesGcmPayloadCodec | undefined {
  return config.codecKeys ? new AesGcmPayloadCodec(config.codecKeys) : undefined;
}

/**
 * The data converter for a worker, a client or a replay: the AES-256-GCM codec and a failure converter that
 * moves messages and stack traces into (encrypted) payloads. Undefined without keys: the SDK's default.
 */
export function keelDataConverter(config: Pick<KeelConfig, 'codecKeys'>): DataConverter | undefined {
  const codec = payloadCodec(config);
  return codec ? { payloadCodecs: [codec], failureConverterPath: ENCRYPTED_FAILURE_CONVERTER_PATH } : undefined;
}

/** Where `keel dev` keeps the codec server's token when KEEL_CODEC_TOKEN is not set. */
export function codecTokenFile(config: KeelConfig): string {
  return path.join(dataDir(config), 'codec-token');
}

/**
 * The codec server's bearer token: KEEL_CODEC_TOKEN, else the one `keel dev` saved under KEEL_DATA_DIR
 * (`create`: make and save one, readable by this user only, when there is none), so a dev server's Web UI
 * endpoint stays valid across `keel dev` runs.
 * @throws ConfigError when there is none and `create` is false
 */
export async function codecToken(config: KeelConfig, opts: { create?: boolean } = {}): Promise<{ token: string; source: string }> {
  if (config.KEEL_CODEC_TOKEN) return { token: config.KEEL_CODEC_TOKEN, source: 'KEEL_CODEC_TOKEN' };
  const file = codecTokenFile(config);
  const saved = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (saved.length >= 16) return { token: saved, source: file };
  if (!opts.create) {
    throw new ConfigError(
      `KEEL_CODEC_TOKEN: not set (nor saved by keel dev in ${file}); the codec server decrypts for whoever calls it, so it needs a bearer token, e.g. from: openssl rand -hex 32`,
    );
  }
  const token = randomBytes(32).toString('hex');
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  return { token, source: file };
}
