import { chromium, type Browser, type Page } from "playwright-core";
import { findChromium } from "./chromium.ts";

/** The dashboard test's helpers: a real headless Chromium, and a plain SSE reader. */

/** A headless Chromium (see findChromium for which one); logs which executable it launched. */
export async function launchChromium(): Promise<Browser> {
  const { source, executablePath, args, env } = await findChromium();
  console.info(`dashboard test: Chromium from ${source}: ${executablePath}`);
  return chromium.launch({ executablePath, args, ...(env && { env }) });
}

/** Wait until the element's text is `text` (the page updates itself; nothing reloads it). */
export async function waitForText(page: Page, selector: string, text: string, timeoutMs = 60_000): Promise<void> {
  try {
    await page.waitForFunction(([s, t]) => (globalThis as unknown as PageGlobals).document.querySelector(s!)?.textContent?.trim() === t, [selector, text] as const, { timeout: timeoutMs });
  } catch (err) {
    const now = await page.locator(selector).first().textContent().catch(() => null);
    throw new Error(`${selector} did not show ${JSON.stringify(text)} within ${timeoutMs} ms (it shows ${JSON.stringify(now)})`, { cause: err });
  }
}

/**
 * The page's globals, for functions that run in the browser: this workspace compiles without
 * the DOM library. A type only: those functions are sent to the page as source, so they can
 * use nothing imported, only `globalThis as unknown as PageGlobals`.
 */
export type PageGlobals = { document: any; window: any; MutationObserver: any };

export interface SseEvent {
  event: string;
  data: string;
}

/**
 * Read a text/event-stream response until `until` says stop; the events read, in order.
 * Parses the wire format by hand (no EventSource in Node 20), as any other client would.
 */
export async function readEvents(res: Response, until: (e: SseEvent, all: SseEvent[]) => boolean): Promise<{ events: SseEvent[]; raw: string }> {
  if (!res.body) throw new Error("no response body");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const events: SseEvent[] = [];
  let raw = "";
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { events, raw };
      raw += value;
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length === 0) continue; // a comment, or the retry hint
        const e = { event, data: data.join("\n") };
        events.push(e);
        if (until(e, events)) return { events, raw };
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
