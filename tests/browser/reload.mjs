// The dashboard after a refused config edit: the red banner names the finding's line.
//   node reload.mjs CONTROL_URL LINE SCREENSHOT
import { chromium } from "playwright-core";

const [controlUrl, line, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(controlUrl + "/");
  const banner = page.locator("#config-banner.shown");
  await banner.waitFor({ timeout: 8000 });
  const text = await banner.innerText();
  if (!text.includes(":" + line + " ")) throw new Error("the banner doesn't name line " + line + ": " + text);
  const color = await banner.evaluate((e) => getComputedStyle(e).backgroundColor);
  await page.locator("#config-lists details").first().waitFor({ timeout: 5000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  process.stdout.write("banner " + color + " " + text + "\n");
} finally {
  await browser.close();
}
