// `npm run lint`: typescript-eslint's typed rules that catch real bugs in this code base (a
// promise nobody awaits or catches, a promise where a callback's result is ignored, values
// computed and never used), not style: formatting is prettier's (`npm run format:check`).
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // test/fixtures holds third-party files kept byte for byte (the phone-screen seed's hook).
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'test/fixtures/**', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // `_`-prefixed names say "unused on purpose" (a callback's position, a destructured rest).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
    },
  },
);
