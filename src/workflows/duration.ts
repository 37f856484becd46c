/** Durations as Keel's inputs accept them. Sandbox-safe. */
import { z } from 'zod';

/** A duration: a number of ms or a string such as `500ms`, `5s`, `2m`, `1h`. */
export const DurationSchema = z.union([z.number().int().nonnegative(), z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h)$/)]);
