/** The activities a Keel worker registers: `callModel` and one activity per tool. */
export { createModelActivities, classifyModelError, retryAfterMs, type ModelActivityOptions } from './model.js';
export { createToolActivities, INLINE_RESULT_BYTES } from './tools.js';
export { createAvailabilityActivities, guarded } from './resilience.js';
export { createAuditActivities } from './audit.js';
