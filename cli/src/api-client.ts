/**
 * The api over HTTP (RTB_API_URL). Every answer is JSON; a 4xx/5xx becomes an ApiError that
 * carries the api's `{error, field?, message}`, and a refused or silent api an
 * UnreachableError that says which URL and which variable to fix.
 */
export class ApiError extends Error {
  override name = "ApiError";
  readonly status: number;
  readonly body: { error?: string; field?: string; message?: string };
  constructor(status: number, body: ApiError["body"], request: string) {
    super(body.message ?? body.error ?? `${request} answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** The api's message, and the field it names. */
export const describeApiError = (err: ApiError) => `${err.message}${err.body.field ? ` (field: ${err.body.field})` : ""}`;

export class UnreachableError extends Error {
  override name = "UnreachableError";
  constructor(baseUrl: string, reason: string, options?: ErrorOptions) {
    super(`cannot reach the api at ${baseUrl} (RTB_API_URL): ${reason}`, options);
  }
}

export interface ApiClient {
  readonly baseUrl: string;
  get<T>(path: string, query?: Record<string, string | number | boolean | undefined>): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
  put<T>(path: string, body: unknown): Promise<T>;
  delete<T>(path: string): Promise<T>;
}

export interface ApiClientOptions {
  baseUrl: string;
  /** RTB_API_TOKEN: sent as `Authorization: Bearer <token>` on every request. */
  token?: string | undefined;
  timeoutMs: number;
  signal?: AbortSignal;
}

export function createApiClient({ baseUrl, token, timeoutMs, signal }: ApiClientOptions): ApiClient {
  const base = baseUrl.replace(/\/+$/, "");
  const request = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const url = `${base}${path}`;
    const headers: Record<string, string> = { accept: "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const timeout = AbortSignal.timeout(timeoutMs);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      const reason = timeout.aborted ? `no answer within ${timeoutMs} ms` : failureReason(err);
      throw new UnreachableError(base, reason, { cause: err });
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      throw new UnreachableError(base, `${method} ${path} answered ${res.status} with a body that is not JSON (${JSON.stringify(text.slice(0, 100))}); is RTB_API_URL an rtb api?`);
    }
    if (!res.ok) throw new ApiError(res.status, (parsed ?? {}) as ApiError["body"], `${method} ${path}`);
    return parsed as T;
  };
  return {
    baseUrl: base,
    get: (path, query) => request("GET", path + queryString(query)),
    post: (path, body) => request("POST", path, body),
    put: (path, body) => request("PUT", path, body),
    delete: (path) => request("DELETE", path),
  };
}

function queryString(query: Record<string, string | number | boolean | undefined> = {}): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== "") params.set(k, String(v));
  const s = params.toString();
  return s ? `?${s}` : "";
}

/** fetch's "fetch failed" hides the reason in `cause` (an AggregateError for localhost's two addresses). */
function failureReason(err: unknown): string {
  let e = err as { message?: string; code?: string; cause?: unknown; errors?: unknown[] } | undefined;
  if (e?.cause) e = e.cause as typeof e;
  if (e?.errors?.length) e = e.errors[0] as typeof e;
  return e?.message || e?.code || String(err);
}
