// ESLint with type information over every TypeScript file that tsconfig.json compiles,
// plus the dashboard's plain browser script. Formatting is Prettier's job, not ESLint's.
import js from '@eslint/js'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', 'coverage/', 'node_modules/', '.stryker-tmp/', 'reports/'] },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // The guardrails the project asked for: a promise is awaited, returned or voided on purpose;
      // a switch over a union names every member; a cast says something the checker does not know.
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test collects what test() and describe() return itself; awaiting them is not the idiom.
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/no-unnecessary-type-assertion': 'error',
      // tsc already reports unused locals and parameters (noUnusedLocals, noUnusedParameters);
      // here only the `_`-prefixed escape hatch for destructuring and catch bindings is added.
      // Methods that implement a Promise-returning contract (Transport.close, connect, ack) are async
      // even when today's body has nothing to await, so a throw inside becomes a rejection.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    // The dashboard page: a plain script for the browser, uPlot comes from its own <script> tag.
    files: ['lib/monitor/ui/**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: 'script', globals: { ...globals.browser } },
  },
  {
    // This file and any other configuration script: Node ESM, no type information.
    files: ['*.js', '*.mjs'],
    extends: [js.configs.recommended],
    languageOptions: { globals: { ...globals.node } },
  },
)
