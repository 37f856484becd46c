/**
 * The benchmark's "tool started" witness, shared by the in-process worker (run.ts) and the worker process
 * (worker.ts): an inbound activity interceptor that records when the worker began each session's first
 * attempt of the approved tool, before the tool's own code runs, on a clock both processes share.
 */
import type { ActivityInterceptorsFactory } from '@temporalio/worker';

/** The tool whose start is recorded: the irreversible call every session waits to have approved. */
export const RECORDED_TOOL = 'issue_refund';

/** Epoch ms with sub-ms precision, comparable across processes of one host. */
export const nowMs = (): number => performance.timeOrigin + performance.now();

/** Records into `into`, by workflow ID, when each session's first {@link RECORDED_TOOL} attempt began. */
export function toolStartRecorder(into: Map<string, number>): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      execute(input, next) {
        const { activityType, workflowExecution, attempt } = ctx.info;
        if (activityType === RECORDED_TOOL && attempt === 1 && workflowExecution) into.set(workflowExecution.workflowId, nowMs());
        return next(input);
      },
    },
  });
}
