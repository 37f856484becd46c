/** The activities a Keel worker registers: `callModel` and one activity per tool. */
export { createModelActivities, classifyModelError, retryAfterMs, type ModelActivityOptions } from './model.js';
export { createToolActivities, MAX_RESULT_BYTES } from './tools.js';
