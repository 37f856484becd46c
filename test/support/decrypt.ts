/** Reading an encrypted history in a test: every payload in it decrypted, as text. */
import type { Payload } from '@temporalio/common';
import type { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { AesGcmPayloadCodec } from '../../src/codec/index.js';

/** The text of every encrypted payload in `history`, decrypted with `codec` (others are skipped). */
export function decryptedText(history: Parameters<typeof historyToJSON>[0], codec: AesGcmPayloadCodec): string {
  const texts: string[] = [];
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return;
    const p = v as Payload;
    if (p.metadata && p.data instanceof Uint8Array) {
      const plain = codec.decrypt(p);
      if (plain !== p) texts.push(new TextDecoder().decode(plain.data ?? new Uint8Array()));
      return;
    }
    Object.values(v).forEach(walk);
  };
  walk(history.events);
  return texts.join('\n');
}
