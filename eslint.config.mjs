// ESLint for the TypeScript of the engine, the extension, the CLI, the webview, the tests and the benchmarks:
// the recommended rules of ESLint and typescript-eslint (no type-aware rules: they would double the run time).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".venv/**", "out/**", "models/**", "media/**", "**/*.mjs", "**/*.cjs"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // the tests and benchmarks mutate and read untyped JSON (fuzzers, fixtures, reports)
    files: ["test/**/*.ts", "bench/**/*.ts"],
    rules: { "@typescript-eslint/no-explicit-any": "off" },
  },
  {
    rules: {
      // `_name` marks a value taken apart but unused on purpose
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", destructuredArrayIgnorePattern: "^_" }],
    },
  },
);
