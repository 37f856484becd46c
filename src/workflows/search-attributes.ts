/**
 * The search attributes Keel sets on a session so people can find it in the Temporal Web UI and through
 * visibility queries. Search attributes are never encrypted: nothing personal goes in them.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Session state: `running`, `waiting_approval`, `completed`, `failed`. */
export const KeelStatus = defineSearchAttributeKey('KeelStatus', SearchAttributeType.KEYWORD);
/** True while a tool call waits for a person. */
export const KeelPendingApproval = defineSearchAttributeKey('KeelPendingApproval', SearchAttributeType.BOOL);
/** Names of the tools the session has called. */
export const KeelToolsUsed = defineSearchAttributeKey('KeelToolsUsed', SearchAttributeType.KEYWORD_LIST);
/** The session's model cost so far, in USD. */
export const KeelCostUsd = defineSearchAttributeKey('KeelCostUsd', SearchAttributeType.DOUBLE);
/** Model calls the session made, set when it ends. */
export const KeelIterations = defineSearchAttributeKey('KeelIterations', SearchAttributeType.INT);
/**
 * Why the session ended, set when it ends: the model's stop reason (`end_turn`), the budget that stopped
 * it (`max_iterations`, `budget_usd`, ...), or `failed` / `cancelled`.
 */
export const KeelStopReason = defineSearchAttributeKey('KeelStopReason', SearchAttributeType.KEYWORD);

/** Every Keel search attribute with its type, for registration on a namespace. */
export const KEEL_SEARCH_ATTRIBUTES = {
  KeelStatus: 'Keyword',
  KeelPendingApproval: 'Bool',
  KeelToolsUsed: 'KeywordList',
  KeelCostUsd: 'Double',
  KeelIterations: 'Int',
  KeelStopReason: 'Keyword',
} as const;
