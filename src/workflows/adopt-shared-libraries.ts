/**
 * The workflow bundle's first import (see `appEntrySource`): before anything of this workflow imports zod,
 * its module cache takes the thread's shared copy (shared-libraries.ts). A module of its own so that it runs
 * before the entry's other imports, which are evaluated in order. Sandbox-safe.
 */
import { adoptSharedLibraries } from './shared-libraries.js';

adoptSharedLibraries();
