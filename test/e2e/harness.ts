/**
 * A tiny test runner for the extension host: named async cases, run in order, reported as
 * "ok N - name" / "not ok N - name" and a final "N passed, N failed" line. runTests() throws when
 * a case failed, which is how a test module tells VS Code (and scripts/e2e/run.mjs) it failed.
 */

export interface TestCase {
  name: string;
  fn: () => unknown | Promise<unknown>;
  /** Milliseconds before the case counts as failed (default 60 s), so a hang names its case. */
  timeoutMs?: number;
}

const cases: TestCase[] = [];

export function test(name: string, fn: TestCase["fn"], options: { timeoutMs?: number } = {}): void {
  cases.push({ name, fn, timeoutMs: options.timeoutMs });
}

export async function runTests(): Promise<void> {
  let passed = 0;
  let failed = 0;
  console.log(`1..${cases.length}`);
  for (const [i, c] of cases.entries()) {
    const n = i + 1;
    const started = Date.now();
    try {
      await withTimeout(Promise.resolve().then(c.fn), c.timeoutMs ?? 60_000);
      passed++;
      console.log(`ok ${n} - ${c.name} (${Date.now() - started} ms)`);
    } catch (err) {
      failed++;
      console.log(`not ok ${n} - ${c.name} (${Date.now() - started} ms)`);
      const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
      console.log(detail.replace(/^/gm, "  # "));
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  if (failed > 0) throw new Error(`${failed} of ${cases.length} e2e tests failed`);
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until check() returns a truthy value; throws with `what` after timeoutMs. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * Drives the workbench UI through scripts/e2e/run.mjs, which owns the browser page: for what the
 * vscode API cannot do, such as answering the extension's own input boxes (each extension gets its
 * own `vscode` object, so stubbing vscode.window here does not reach the extension).
 * Keys use Playwright's names ("Enter", "Escape", "Control+A"); selectors are Playwright selectors
 * on the workbench page.
 */
export const ui = {
  type: (text: string) => drive({ action: "type", text }),
  press: (key: string) => drive({ action: "press", key }),
  click: (selector: string) => drive({ action: "click", selector }),
  /** Waits until the selector matches a visible element, e.g. ui.quickInput for an input box. */
  waitFor: (selector: string, timeoutMs = 10_000) => drive({ action: "waitFor", selector, timeoutMs: String(timeoutMs) }),
  quickInput: ".quick-input-widget input",
};

async function drive(request: Record<string, string>): Promise<void> {
  const url = process.env.NTI_E2E_DRIVER;
  assert(url, "NTI_E2E_DRIVER is not set: run the suite through scripts/e2e/run.mjs");
  const res = await fetch(url, { method: "POST", body: JSON.stringify(request) });
  const reply = (await res.json()) as { ok: boolean; error?: string };
  if (!reply.ok) throw new Error(`ui.${request.action} failed: ${reply.error}`);
}
