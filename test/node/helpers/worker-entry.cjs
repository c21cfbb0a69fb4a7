// The engine worker for the tests: loads the TypeScript sources through tsx (the extension loads the
// bundled dist/worker.js instead). A .cjs entry because worker threads do not inherit --import hooks.
require("tsx/cjs");
require("../../../src/extension/worker.ts");
