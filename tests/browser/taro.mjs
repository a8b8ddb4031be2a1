// Drives Taro's H5 `request` (taro/page.js, bundled to taro/bundle.js) in headless Chromium
// through wxsandbox, for tests/browser.rs's sibling tests/taro.rs.
//   node taro.mjs PROXY_URL CA_PEM [CHROMIUM_FLAG...]   (e.g. --disable-http2)
// The page is served by a tiny HTTP server on 127.0.0.1 (loopback: Chromium does not send it
// through the proxy); only the page's API calls go through the proxy. No `page.route`: with
// request interception on, Playwright answers CORS preflights itself, and the preflights are
// part of what is tested here.
// Protocol: prints `ready ORIGIN`; then reads one JSON call a line on stdin,
// {"id","url","headers"}, and prints one JSON line a call:
// {"id","cb","statusCode","data","errMsg","net":[net errors of failed requests],"console":[...]}.
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { X509Certificate, createHash } from "node:crypto";
import readline from "node:readline";

const [proxyUrl, caPem, ...extraFlags] = process.argv.slice(2);
const say = (line) => process.stdout.write(line + "\n");
const here = new URL("./taro/", import.meta.url);
const files = {
  "/": ["text/html; charset=utf-8", readFileSync(new URL("index.html", here))],
  "/bundle.js": ["text/javascript; charset=utf-8", readFileSync(new URL("bundle.js", here))],
};
const server = createServer((req, res) => {
  const file = files[new URL(req.url, "http://x").pathname];
  if (!file) { res.writeHead(404).end(); return; }
  res.writeHead(200, { "content-type": file[0], "cache-control": "no-store" }).end(file[1]);
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${server.address().port}`;

// Trust the proxy's CA only: the SHA-256 of its SubjectPublicKeyInfo, base64.
const spki = new X509Certificate(readFileSync(caPem)).publicKey.export({ type: "spki", format: "der" });
const spkiHash = createHash("sha256").update(spki).digest("base64");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         `--proxy-server=${proxyUrl}`,
         `--ignore-certificate-errors-spki-list=${spkiHash}`, ...extraFlags],
});
try {
  const page = await browser.newPage();
  let failed = [];
  let logged = [];
  page.on("requestfailed", (r) => failed.push(`${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") logged.push(m.text()); });
  page.on("pageerror", (e) => say("page-error " + e.message));
  await page.goto(origin + "/");
  await page.waitForFunction(() => window.taroReady === true, null, { timeout: 10000 });
  say("ready " + origin);
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const { id, url, headers } = JSON.parse(line);
    failed = [];
    logged = [];
    const result = await page.evaluate(
      ([u, h]) => Promise.race([
        window.call(u, h),
        new Promise((ok) => setTimeout(() => ok({ cb: "none", errMsg: "no callback within 20 s" }), 20000)),
      ]),
      [url, headers || {}],
    );
    // Let the request events of this call arrive.
    await page.waitForTimeout(100);
    say(JSON.stringify({ id, ...result, net: failed, console: logged }));
  }
} finally {
  await browser.close();
  server.close();
}
process.exit(0);
