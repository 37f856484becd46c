/** The workflows a Keel worker registers. Sandbox-safe entry point for `bundleWorkflowCode`. */
export { agentSession } from './agentSession.js';
export { toolChain } from './toolChain.js';
export { routeRequest } from './router.js';
