/**
 * Blob references inside stored conversations: a `tool_result` block with a `keel_blob` hash gets its
 * full text back from the store before the model sees it (marked as untrusted data when the block says
 * whose it is). Shared by every store implementation.
 */
import type { ConversationMessage } from '../workflows/types.js';
import { UNTRUSTED_FIELD, asUntrustedData } from '../workflows/untrusted.js';
import { BLOB_FIELD } from './types.js';

/** Replaces each `tool_result` block's preview by its blob's text and drops the reference. */
export async function resolveBlobs(
  messages: ConversationMessage[],
  getBlob: (hash: string) => Promise<string | undefined>,
): Promise<ConversationMessage[]> {
  const out: ConversationMessage[] = [];
  for (const m of messages) {
    if (typeof m.content === 'string' || !m.content.some((b) => BLOB_FIELD in b)) {
      out.push(m);
      continue;
    }
    const content = [];
    for (const block of m.content) {
      const hash = (block as Record<string, unknown>)[BLOB_FIELD];
      if (typeof hash !== 'string') {
        content.push(block);
        continue;
      }
      const text = await getBlob(hash);
      if (text === undefined) throw new Error(`blob ${hash} is missing from the conversation store`);
      const { [BLOB_FIELD]: _ref, [UNTRUSTED_FIELD]: source, ...rest } = block as Record<string, unknown>;
      content.push({ ...rest, content: typeof source === 'string' ? asUntrustedData(source, text) : text } as (typeof m.content)[number]);
    }
    out.push({ ...m, content });
  }
  return out;
}
