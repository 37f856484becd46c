/**
 * The failure converter of encrypted workers and clients: Temporal's default one with
 * `encodeCommonAttributes`, so a failure's message and stack trace move into a payload that the codec then
 * encrypts (history keeps only "Encoded failure"). CommonJS on purpose: the SDK loads it with `require()`
 * from `DataConverter.failureConverterPath` (the worker takes no converter object), which must work without
 * a TypeScript loader; webpack can bundle the same file into workflow code.
 */
'use strict';
/* global require, exports -- CommonJS; the lint config parses every file as a module */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { DefaultFailureConverter } = require('@temporalio/common');

/** Marks a workflow bundle that includes this converter (`createKeelWorker` looks for it). */
exports.KEEL_ENCRYPTED_FAILURES = 'keel:encrypted-failure-converter';
exports.failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
