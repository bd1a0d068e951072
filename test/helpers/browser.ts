/**
 * A real browser for the e2e tests: Debian's chromium, headless, driven by
 * playwright-core (which never downloads a browser). Each launch gets a fresh temporary
 * profile. Where /usr/bin/chromium is missing, `chromiumMissing()` says why, so the
 * suite reports itself skipped with that reason instead of failing.
 */
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { PROJECT_ROOT } from "./models.js";
import { startParley, type RunningParley } from "./parley.js";

/** Overridable for machines where chromium lives elsewhere. Defaults to Debian's path. */
export const CHROMIUM_PATH = process.env.PARLEY_CHROMIUM ?? "/usr/bin/chromium";

/** Screenshots land here on every run (ignored by git). */
export const RESULTS_DIR = path.join(PROJECT_ROOT, "test-results");

export const LAPTOP = { width: 1366, height: 900 } as const;
export const PHONE = { width: 390, height: 844 } as const;

/** Why the browser suites cannot run here, or undefined when they can. */
export function chromiumMissing(): string | undefined {
  if (existsSync(CHROMIUM_PATH)) return undefined;
  return `no chromium at ${CHROMIUM_PATH} (install Debian's 'chromium' package, or set PARLEY_CHROMIUM)`;
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export interface WatchedPage {
  readonly context: BrowserContext;
  readonly page: Page;
  /** Uncaught exceptions in the page's scripts. */
  readonly pageErrors: string[];
  /** Every URL the page requested that is not on Parley's own origin. */
  readonly foreignRequests: string[];
}

/** A fresh context (its own storage) and page, watched for script errors and off-origin requests. */
export async function openPage(browser: Browser, origin: string, viewport: { width: number; height: number } = LAPTOP): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  const foreignRequests: string[] = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith("data:")) foreignRequests.push(url);
  });
  return { context, page, pageErrors, foreignRequests };
}

/*
 * Code that runs in the page is passed as a string: the test project type-checks for
 * Node, without the DOM's types, and what runs there is plain browser JavaScript.
 */

/** What the page's clipboard holds (needs the clipboard-read permission that openPage grants). */
export function clipboardText(page: Page): Promise<string> {
  return page.evaluate<string>("navigator.clipboard.readText()");
}

/** A full-page PNG in test-results/, at the page's current viewport and then at a phone's. */
export async function screenshotBothSizes(page: Page, name: string): Promise<string[]> {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const laptop = path.join(RESULTS_DIR, `${name}.png`);
  const phone = path.join(RESULTS_DIR, `${name}-phone.png`);
  const original = page.viewportSize();
  // From the top, so sticky panels sit where a reader first sees them.
  await page.evaluate("window.scrollTo(0, 0)");
  await page.screenshot({ path: laptop, fullPage: true });
  await page.setViewportSize(PHONE);
  // Pages may redraw for the new size (the dashboard's charts do, after a short debounce).
  await page.waitForTimeout(500);
  await page.evaluate("window.scrollTo(0, 0)");
  await page.screenshot({ path: phone, fullPage: true });
  if (original !== null) await page.setViewportSize(original);
  return [laptop, phone];
}

export const ADMIN_TOKEN = "e2e-admin-token-0123456789";

export interface KeyedParley {
  readonly parley: RunningParley;
  /** Secrets of keys created through the admin API, by name. */
  readonly keys: Record<string, { readonly id: string; readonly secret: string }>;
}

/** Parley with an admin token and one stored key per name (so every API call needs a key). */
export async function startKeyedParley(modelPath: string, names: readonly string[]): Promise<KeyedParley> {
  const parley = await startParley({ modelPath, adminToken: ADMIN_TOKEN });
  const keys: Record<string, { id: string; secret: string }> = {};
  try {
    for (const name of names) {
      const response = await fetch(`${parley.url}/admin/v1/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name }),
      });
      if (response.status !== 201) throw new Error(`creating key ${name}: ${response.status} ${await response.text()}`);
      const created = (await response.json()) as { key: { id: string }; secret: string };
      keys[name] = { id: created.key.id, secret: created.secret };
    }
  } catch (error) {
    await parley.close();
    throw error;
  }
  return { parley, keys };
}
