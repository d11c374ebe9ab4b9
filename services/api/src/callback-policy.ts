import { z } from "zod";
import { MAX_CALLBACK_URL_LENGTH } from "@rtb/protocol";

/**
 * Where callbacks may go (RTB_WEBHOOK_ALLOWED_HOSTS): a callback must not be a way into the
 * operator's network, so only hosts the operator lists are called. Entries, comma-separated:
 * - `host`: that host, on any port;
 * - `host:port`: that host on that port only (the URL's port, or 80/443 by its scheme);
 * - `*.example.com`: any host under example.com, at any depth, not example.com itself;
 * - IPv6 in brackets (`[::1]`, `[::1]:8080`).
 * Host names are ASCII (an IDN as its punycode), compared case-insensitively after the WHATWG
 * URL parser's normalisation (so `127.1` is `127.0.0.1`, the form a URL's host takes too).
 * `*` alone is refused: it would allow everything. Empty: callbacks are off.
 */
export interface AllowedHost {
  /** The host as a URL's `hostname` shows it (IPv6 in brackets); for `*.x`, `x`. */
  host: string;
  wildcard: boolean;
  /** null: any port. */
  port: number | null;
}

const ENTRY = /^(\*\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/i;

/** The setting as a list, or an issue naming the entry at fault. */
export const allowedHostsSetting = z
  .string()
  .default("")
  .transform((value, ctx): AllowedHost[] => {
    const entries = value.split(",").map((s) => s.trim());
    if (entries.length === 1 && entries[0] === "") return [];
    const hosts: AllowedHost[] = [];
    for (const entry of entries) {
      const m = ENTRY.exec(entry);
      const port = m?.[3] === undefined ? null : Number(m[3]);
      let host: string | null = null;
      try {
        host = m ? new URL(`http://${m[2]}/`).hostname : null;
      } catch {
        host = null;
      }
      if (!m || host === null || (port !== null && (port < 1 || port > 65535))) {
        ctx.addIssue({
          code: "custom",
          message: `${JSON.stringify(entry)} is not a host: expected host, host:port, *.domain or [v6]:port, separated by commas (e.g. hooks.example.com,*.internal.example:8443); "*" alone is not allowed`,
        });
        return z.NEVER;
      }
      hosts.push({ host, wildcard: m[1] !== undefined, port });
    }
    return hosts;
  });

/**
 * What is wrong with RTB_WEBHOOK_SECRET as Standard Webhooks write one: `whsec_` and the base64
 * of 24 to 64 random bytes (`echo "whsec_$(openssl rand -base64 32)"`); null: nothing.
 */
export function webhookSecretProblem(value: string): string | null {
  const make = 'make one with: echo "whsec_$(openssl rand -base64 32)"';
  if (!/^whsec_[A-Za-z0-9+/]+={0,2}$/.test(value)) return `expected whsec_ and base64 (${make})`;
  if (!between(Buffer.from(value.slice("whsec_".length), "base64").length, 24, 64)) return `expected a key of 24 to 64 bytes once base64-decoded (${make})`;
  return null;
}

const between = (n: number, min: number, max: number) => n >= min && n <= max;

const effectivePort = (url: URL) => (url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80);

/** Whether the URL's host (and port) is one the operator allows. */
export function hostAllowed(allowed: readonly AllowedHost[], url: URL): boolean {
  const host = url.hostname.toLowerCase();
  const port = effectivePort(url);
  return allowed.some((a) => (a.port === null || a.port === port) && (a.wildcard ? host.endsWith(`.${a.host}`) : host === a.host));
}

/**
 * What is wrong with a callback URL, or null: an absolute http(s) URL of at most
 * MAX_CALLBACK_URL_LENGTH characters, without user:password, to an allowed host. Checked at the
 * door (a 400 naming callbackUrl) and again before each attempt (the setting may have changed).
 */
export function callbackUrlProblem(allowed: readonly AllowedHost[], text: string): string | null {
  if (allowed.length === 0) return "callbacks are off: RTB_WEBHOOK_ALLOWED_HOSTS is empty";
  if (text.length > MAX_CALLBACK_URL_LENGTH) return `expected a URL of at most ${MAX_CALLBACK_URL_LENGTH} characters`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "expected an absolute http or https URL";
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return `expected an http or https URL, not ${url.protocol}`;
  if (url.username !== "" || url.password !== "") return "expected a URL without user:password (the receiver checks rtb's signature instead)";
  if (!hostAllowed(allowed, url)) return `host ${url.host} is not in RTB_WEBHOOK_ALLOWED_HOSTS`;
  return null;
}
