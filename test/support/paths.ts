/** Paths the tests share: the repository root and the tools modules under test. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The support-desk example's tools module (tools and the `support` agent). */
export const EXAMPLE_TOOLS = path.join(ROOT, 'examples', 'support-desk', 'tools.ts');
/** The small test app: its own tool and agent, outside `src/`. */
export const TEST_APP_TOOLS = path.join(ROOT, 'test', 'app', 'tools.ts');
