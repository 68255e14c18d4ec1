#!/usr/bin/env node
// Browser test of the signup page (`GET /`), driving the system Chromium with playwright-core.
//
//   node tests/browser/signup.mjs --base http://127.0.0.1:PORT --oracle http://127.0.0.1:PORT2 [--out DIR]
//
// --base    the api under test.
// --oracle  a helper server run by the test harness:
//             GET /captcha/{image_code_id} -> 200 captcha text | 404
//             GET /code/{mobile}           -> 200 latest SMS code sent to mobile | 404
// --out     where screenshots go (default: tests/artifacts/browser next to this folder).
//
// Environment:
//   CHROMIUM_PATH            Chromium binary (default /usr/bin/chromium).
//   BROWSER_STEP_TIMEOUT_MS  time budget of one step (default 20000; step 1 gets twice that,
//                            as it also waits for the SMS to go through the queue and worker).
//
// Prints one line per step and a closing line `browser: N passed, M failed`; exits 1 when a
// step failed or the browser could not be started, 2 on bad usage.

import { mkdir } from "node:fs/promises";
import path from "node:path";
import { randomInt } from "node:crypto";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

// ---- command line ------------------------------------------------------------------------

function usage(msg) {
  if (msg) console.error(`signup.mjs: ${msg}`);
  console.error("usage: node signup.mjs --base URL --oracle URL [--out DIR]");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { base: "", oracle: "", out: path.resolve(HERE, "..", "artifacts", "browser") };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const [name, inline] = arg.startsWith("--") && eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, null];
    const value = () => {
      if (inline !== null) return inline;
      if (i + 1 >= argv.length) usage(`${name} needs a value`);
      return argv[++i];
    };
    if (name === "--base") opts.base = value();
    else if (name === "--oracle") opts.oracle = value();
    else if (name === "--out") opts.out = path.resolve(value());
    else if (name === "-h" || name === "--help") usage();
    else usage(`unknown argument ${arg}`);
  }
  if (!opts.base) usage("--base is required");
  if (!opts.oracle) usage("--oracle is required");
  opts.base = opts.base.replace(/\/+$/, "");
  opts.oracle = opts.oracle.replace(/\/+$/, "");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const STEP_TIMEOUT_MS = Number(process.env.BROWSER_STEP_TIMEOUT_MS) || 20_000;
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

// ---- helpers -----------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function randomMobile() {
  let m = "139";
  for (let i = 0; i < 8; i++) m += String(randomInt(10));
  return m;
}

function maskMobile(m) {
  return `${m.slice(0, 3)}****${m.slice(-4)}`;
}

/** GET {oracle}{route}: the trimmed text on 200, null on 404; throws on anything else. */
async function oracleGet(route) {
  let res;
  let text;
  try {
    res = await fetch(`${opts.oracle}${route}`, { signal: AbortSignal.timeout(5_000) });
    text = await res.text();
  } catch (err) {
    throw new Error(`oracle ${opts.oracle}${route}: ${err?.cause?.code || err?.cause?.message || err?.message || err}`);
  }
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`oracle ${route}: HTTP ${res.status} ${text.slice(0, 200)}`);
  return text.trim();
}

/** Polls the oracle until `route` answers 200, for at most `ms`. */
async function oraclePoll(route, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await oracleGet(route);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`oracle has no ${what} after ${ms / 1000}s (${route})`);
    await sleep(250);
  }
}

/** The error texts the page shows right now, for failure messages. */
async function pageErrors(page) {
  return page.evaluate(() => {
    const out = {};
    for (const id of ["mobile-error", "image-code-error", "sms-code-error", "password-error", "form-error"]) {
      const text = document.getElementById(id)?.textContent.trim();
      if (text) out[id] = text;
    }
    return out;
  });
}

/** Waits until the page shows a loaded captcha image. */
async function captchaLoaded(page) {
  await page.waitForFunction(() => {
    const el = document.getElementById("captcha-img");
    return el && el.complete && el.naturalWidth > 0 && /image_code_id=/.test(el.getAttribute("src") || "");
  });
}

/** Waits for the captcha image to be loaded, then reads its id off `src` and its text off the oracle. */
async function readCaptcha(page) {
  await captchaLoaded(page);
  const src = await page.locator("#captcha-img").getAttribute("src");
  const id = new URL(src, opts.base).searchParams.get("image_code_id");
  if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new Error(`bad captcha id in src ${JSON.stringify(src)}`);
  const text = await oraclePoll(`/captcha/${encodeURIComponent(id)}`, 5_000, `captcha for ${id}`);
  return { id, text };
}

/**
 * Waits until `ok()` (run in the page) returns a truthy value, or an error shows up on the
 * page. Returns `ok()`'s value; throws with the page's error texts otherwise.
 */
async function waitForOutcome(page, okFn, arg, what) {
  const handle = await page.waitForFunction(
    ({ okSrc, arg }) => {
      // eslint-disable-next-line no-new-func
      const ok = new Function("arg", `return (${okSrc})(arg);`)(arg);
      if (ok) return { ok };
      for (const id of ["mobile-error", "image-code-error", "sms-code-error", "password-error", "form-error"]) {
        const text = document.getElementById(id)?.textContent.trim();
        if (text) return { error: `#${id}: ${text}` };
      }
      return null;
    },
    { okSrc: okFn.toString(), arg },
  );
  const outcome = await handle.jsonValue();
  if (outcome.error) throw new Error(`${what}: page shows ${outcome.error}`);
  return outcome.ok;
}

// ---- steps -------------------------------------------------------------------------------

const STEPS = 3;
const results = [];
let browser;

async function runStep(n, name, budgetMs, fn) {
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${budgetMs / 1000}s`)), budgetMs);
      }),
    ]);
    results.push({ n, name, ok: true });
    console.log(`ok ${n} - ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
    return true;
  } catch (err) {
    const reason = String(err?.message || err).split("\n")[0];
    results.push({ n, name, ok: false, reason });
    console.log(`FAIL ${n} - ${name}: ${reason}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** A fresh page whose uncaught script errors fail the step. */
async function newPage(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.scriptErrors = [];
  page.on("pageerror", (err) => page.scriptErrors.push(String(err?.message || err)));
  return page;
}

function assertNoScriptErrors(page) {
  if (page.scriptErrors.length) throw new Error(`script error on the page: ${page.scriptErrors[0]}`);
}

async function failureShot(page, name) {
  if (!page || page.isClosed()) return;
  try {
    await page.screenshot({ path: path.join(opts.out, `${name}-failure.png`), fullPage: true, timeout: 5_000 });
  } catch {
    /* best effort */
  }
}

async function main() {
  await mkdir(opts.out, { recursive: true });
  const mobile = randomMobile();
  console.log(`browser: base ${opts.base}, oracle ${opts.oracle}, mobile ${maskMobile(mobile)}, out ${opts.out}`);

  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30_000,
    });
  } catch (err) {
    const reason = String(err?.message || err).split("\n")[0];
    console.log(`FAIL - could not start Chromium at ${CHROMIUM_PATH}: ${reason}`);
    return;
  }

  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "zh-CN" });
  let page = await newPage(desktop);

  // 1. sign up through the page
  const registered = await runStep(1, "desktop: get an SMS code and register", STEP_TIMEOUT_MS * 2, async () => {
    try {
      await page.goto(`${opts.base}/`, { waitUntil: "load" });
      const captcha = await readCaptcha(page);
      await page.fill("#mobile", mobile);
      await page.fill("#image-code", captcha.text);
      await page.click("#get-code");
      const label = await waitForOutcome(
        page,
        () => {
          const b = document.getElementById("get-code");
          return b.disabled && b.textContent.includes("秒") ? b.textContent.trim() : null;
        },
        null,
        "after 获取验证码",
      );
      const smsCode = await oraclePoll(`/code/${mobile}`, 15_000, `SMS code for ${maskMobile(mobile)}`);
      await page.fill("#sms-code", smsCode);
      await page.fill("#password", "correct-horse-9");
      await page.click("#register");
      await waitForOutcome(
        page,
        () => {
          const s = document.getElementById("success");
          return s && !s.hidden && s.offsetParent !== null && s.textContent.includes("注册成功");
        },
        null,
        "after 立即注册",
      );
      const shown = (await page.locator("#success").innerText()).replace(/\s+/g, " ");
      if (!shown.includes(maskMobile(mobile))) throw new Error(`#success does not show ${maskMobile(mobile)}: ${shown}`);
      if (await page.locator("#register").isVisible()) throw new Error("the form is still visible after 注册成功");
      if (!label.includes("秒")) throw new Error(`countdown label ${label}`);
      assertNoScriptErrors(page);
      await page.screenshot({ path: path.join(opts.out, "signup-desktop-success.png") });
    } catch (err) {
      await failureShot(page, "signup-desktop-success");
      throw err;
    }
  });

  // 2. the same mobile again: 该手机已被注册 under the mobile field
  if (!registered) {
    results.push({ n: 2, name: "desktop: registered mobile", ok: false, reason: "not run: needs step 1" });
    console.log("FAIL 2 - desktop: registered mobile is refused: not run, needs step 1");
  } else {
    await runStep(2, "desktop: registered mobile is refused", STEP_TIMEOUT_MS, async () => {
      try {
        await page.goto(`${opts.base}/`, { waitUntil: "load" });
        // The api checks the per-mobile resend cooldown (SMS_RESEND_INTERVAL_SECS) before it
        // looks the mobile up, so right after step 1 the answer may be 发送过于频繁. The page
        // then counts down from Retry-After: wait for it (within the step's budget) and retry.
        let captcha;
        let text = "";
        for (let attempt = 1; ; attempt++) {
          captcha = await readCaptcha(page);
          await page.fill("#mobile", mobile);
          await page.fill("#image-code", captcha.text);
          await page.click("#get-code");
          await page.waitForFunction(() =>
            ["mobile-error", "image-code-error", "sms-code-error", "form-error"].some(
              (id) => document.getElementById(id).textContent.trim() !== "",
            ),
          );
          const errors = await pageErrors(page);
          text = errors["mobile-error"] || "";
          const limited = errors["sms-code-error"] || "";
          if (text || !/频繁/.test(limited) || attempt >= 3) {
            if (!text) throw new Error(`expected #mobile-error, page shows ${JSON.stringify(errors)}`);
            break;
          }
          const label = (await page.locator("#get-code").innerText()).trim();
          const m = label.match(/(?:(\d+)分)?(\d+)秒/);
          const waitSecs = m ? Number(m[1] || 0) * 60 + Number(m[2]) : 0;
          if (waitSecs * 1000 > STEP_TIMEOUT_MS / 2) {
            throw new Error(
              `rate limited (${limited}, ${label}): run the api with a short SMS_RESEND_INTERVAL_SECS (e.g. 1)`,
            );
          }
          console.log(`   step 2: rate limited (${limited}), waiting ${waitSecs}s for the page's countdown`);
          await page.waitForFunction(() => !document.getElementById("get-code").disabled);
        }
        if (!text.includes("该手机已被注册")) {
          throw new Error(`#mobile-error is ${JSON.stringify(text)}; page errors ${JSON.stringify(await pageErrors(page))}`);
        }
        if (!(await page.locator("#mobile-error").isVisible())) throw new Error("#mobile-error is not visible");
        // The captcha was used up: the page must have loaded a new one.
        const src = await page.locator("#captcha-img").getAttribute("src");
        if (src.includes(captcha.id)) throw new Error("the captcha was not renewed after the answer");
        if (!(await page.locator("#get-code").isEnabled())) throw new Error("#get-code stays disabled after a refusal");
        assertNoScriptErrors(page);
        await page.screenshot({ path: path.join(opts.out, "signup-desktop-registered.png") });
      } catch (err) {
        await failureShot(page, "signup-desktop-registered");
        throw err;
      }
    });
  }
  await desktop.close();

  // 3. phone width: a bad mobile is refused by the page itself
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale: "zh-CN",
  });
  page = await newPage(phone);
  await runStep(3, "phone: a bad mobile is refused before any request", STEP_TIMEOUT_MS, async () => {
    try {
      const apiCalls = [];
      page.on("request", (req) => {
        if (req.method() === "POST" && new URL(req.url()).pathname.startsWith("/passport/")) apiCalls.push(req.url());
      });
      await page.goto(`${opts.base}/`, { waitUntil: "load" });
      await captchaLoaded(page);
      await page.fill("#mobile", "123");
      await page.click("#get-code");
      await waitForOutcome(page, () => document.getElementById("mobile-error").textContent.trim(), null, "after 获取验证码");
      if (!(await page.locator("#mobile-error").isVisible())) throw new Error("#mobile-error is not visible");
      if (apiCalls.length) throw new Error(`the page called the api for a bad mobile: ${apiCalls.join(", ")}`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 0) throw new Error(`the page is ${overflow}px wider than the phone screen`);
      assertNoScriptErrors(page);
      await page.screenshot({ path: path.join(opts.out, "signup-phone.png"), fullPage: true });
    } catch (err) {
      await failureShot(page, "signup-phone");
      throw err;
    }
  });
  await phone.close();
}

try {
  await main();
} catch (err) {
  console.log(`FAIL - ${String(err?.message || err).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
}

// Steps that never ran (the browser did not start, or something broke between steps) count as failed.
const passed = results.filter((r) => r.ok).length;
const failed = STEPS - passed;
console.log(`browser: ${passed} passed, ${failed} failed`);
if (failed) process.exitCode = 1;
