// Type-aware lint rules that catch what the compiler lets through: promises nobody
// awaits or handles (a rejection there is an unhandled rejection at run time), async
// functions passed where a callback's result is ignored, `any` in the library code.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['lib/', 'build/', 'build-asan/', 'build-prebuilds/', 'docs/api/', 'prebuilds/', 'node_modules/', 'test/xml/fixtures/', '.bench/'] },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/prefer-promise-reject-errors': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      eqeqeq: ['error', 'always'],
      'no-constant-condition': ['error', { checkLoops: false }],
      // Control characters are what the manifest validation and the terminal output tests look for.
      'no-control-regex': 'off',
    },
  },
  {
    // The library's public surface never says `any`; tests and scripts may, to poke at it.
    files: ['src/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'error' },
  },
  {
    // Generated from libvirt's headers, whose enums have aliases (same value, two names).
    files: ['src/libvirt/constants.ts'],
    rules: { '@typescript-eslint/no-duplicate-enum-values': 'off' },
  },
  {
    files: ['test/**/*.ts', 'scripts/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
  {
    // A fuzz or property check throws its verdict about the input; the caught error is the subject, not a cause.
    files: ['test/fuzz/**/*.ts'],
    rules: { 'preserve-caught-error': 'off' },
  },
);
