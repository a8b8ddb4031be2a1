// Drives the dashboard in headless Chromium, step by step with the Rust test (tests/browser.rs):
// the test writes a command per line on stdin, this script answers a line on stdout.
//   node dashboard.mjs CONTROL_URL APPID SCREENSHOT
import { chromium } from "playwright-core";
import readline from "node:readline";

const [controlUrl, appid, screenshot] = process.argv.slice(2);
const say = (line) => process.stdout.write(line + "\n");
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => (await lines.next()).value;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (e) => say("page-error " + e.message));
  await page.goto(controlUrl + "/");
  await page.waitForSelector("#apps tbody tr");
  say("opened");

  // 1. A refused call, made by the test, appears live in red.
  if ((await next()) !== "expect-refused") throw new Error("protocol");
  const refused = page.locator("#calls tr.refused", { hasText: "unlisted.example" });
  await refused.first().waitFor({ timeout: 5000 });
  const text = await refused.first().innerText();
  if (!text.includes("request:fail url not in domain list")) throw new Error("no errMsg in the row: " + text);
  say("refused-seen");

  // 2. Background the app while the test's slow call is in flight.
  if ((await next()) !== "click-background") throw new Error("protocol");
  await page.locator(`button[data-action="background"][data-appid="${appid}"]`).first().click();
  say("clicked-background");
  await page.locator("#calls tr.refused", { hasText: "interrupted" }).first().waitFor({ timeout: 5000 });
  say("interrupted-seen");
  await page.locator(`button[data-action="foreground"][data-appid="${appid}"]`).first().click();

  // 3. The skip switch.
  if ((await next()) !== "click-skip") throw new Error("protocol");
  await page.click("#skip-switch");
  await page.waitForFunction(() => document.getElementById("skip-state").textContent.includes("ON"), null, { timeout: 5000 });
  say("skip-on");

  // 3b. The refusal style: the select shows the style in force, and changing it switches it.
  for (;;) {
    const cmd = await next();
    if (cmd === "refusal-done") break;
    const [word, style] = (cmd || "").split(" ");
    if (word !== "refusal") throw new Error("protocol");
    const before = await page.inputValue("#refusal-style");
    await page.selectOption("#refusal-style", style);
    await page.waitForFunction(async (want) => {
      const s = await (await fetch("/api/state")).json();
      return s.refusal === want;
    }, style, { timeout: 5000, polling: 100 });
    say("refusal " + before + "->" + style);
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  say("screenshot " + screenshot);

  // 4. Usable with a full ring: the test made 10,000 more calls; reload and filter.
  if ((await next()) !== "check-full-ring") throw new Error("protocol");
  const started = Date.now();
  await page.reload();
  await page.waitForFunction(() => /\(1\d{4} in the log\)|\(10000 in the log\)/.test(document.getElementById("count").textContent), null, { timeout: 20000 });
  const loadMs = Date.now() - started;
  const rows = await page.locator("#calls tbody tr").count();
  if (rows !== 500) throw new Error("expected the DOM capped at 500 rows, got " + rows);
  await page.fill("#filter-text", "needle-9999");
  await page.waitForFunction(() => document.querySelectorAll("#calls tbody tr").length === 1, null, { timeout: 5000 });
  say("full-ring rows=" + rows + " load_ms=" + loadMs);
} finally {
  await browser.close();
}
process.exit(0);
