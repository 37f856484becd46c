// ESLint: typed rules everywhere, and the determinism rules for workflow code (src/workflows/**):
// no Node built-ins, no I/O packages, no floating promises.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

export default tseslint.config(
  // bench/peers is a package of its own whose peer packages root CI does not install: see bench/peers/README.md.
  { ignores: ['node_modules/**', '.keel/**', 'bench/**/node_modules/**', 'bench/peers/**', 'dist/**', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/cli.ts'],
    rules: { 'no-console': 'error' },
  },
  {
    // Tool modules are bundled into workflow code (the workflow reads their schemas and policies), so
    // they must be importable in the sandbox: no Node built-ins or I/O packages at the top level.
    files: ['src/tools/**/*.ts', 'src/agents/**/*.ts', 'src/app/registry.ts', 'src/workflow.ts', 'examples/*/tools.ts', 'examples/*/downstream.ts', 'examples/*/sandbox/run-code.ts', 'test/app/tools.ts', 'test/fixtures/*-tools.ts', 'bench/**/tools.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'Tool modules are bundled into workflows: no Node built-ins; use ctx and fetch.' })),
          patterns: [
            { group: ['@temporalio/client', '@temporalio/worker', '@temporalio/activity', 'pino', 'better-sqlite3', 'pg'], message: 'Tool modules are bundled into workflows: no I/O packages at the top level.' },
            { regex: '^keel(/testing)?$', message: "Tool modules are bundled into workflows: import 'keel/workflow', not the main entry." },
          ],
        },
      ],
    },
  },
  {
    // Tools reach HTTP through ctx.fetch, which keeps each tool to its allowedHosts; global fetch would bypass it.
    files: ['examples/*/tools.ts', 'examples/*/downstream.ts', 'test/app/tools.ts', 'test/fixtures/*-tools.ts'],
    rules: {
      'no-restricted-globals': ['error', { name: 'fetch', message: "Use ctx.fetch: it refuses hosts outside the tool's allowedHosts; global fetch bypasses that." }],
    },
  },
  {
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'Workflow code is sandboxed: no Node built-ins.' })),
          patterns: [
            { group: ['@temporalio/client', '@temporalio/worker', '@temporalio/activity', '@anthropic-ai/sdk', 'pino', 'better-sqlite3', 'pg'], message: 'Workflow code must not import I/O packages.' },
            { group: ['../activities/*', '../activities/**'], allowTypeImports: true, message: 'Workflows import activity types only.' },
          ],
        },
      ],
      'no-restricted-globals': ['error', { name: 'setTimeout', message: 'Use sleep() from @temporalio/workflow.' }],
      'no-restricted-properties': ['error', { object: 'Math', property: 'random', message: 'Math.random is replaced in the sandbox; say why if you need it.' }],
    },
  },
);
