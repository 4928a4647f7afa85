// How calls prove who is calling (docs/errors.md, README "Signing in"):
// - a bearer access token (`authorization: Bearer …`), short-lived, renewed
//   with the refresh token (AuthService.RefreshToken); or
// - in browsers, the HttpOnly `slop_session` cookie of a REST cookie login,
//   sent by the browser itself, plus on state-changing calls the CSRF token
//   (the readable `slop_csrf` cookie) echoed in `x-csrf-token`.

import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { SlopError } from "./errors.js";

/** The name of the readable CSRF cookie a cookie login sets. */
export const CSRF_COOKIE = "slop_csrf";
/** The header that echoes it. */
export const CSRF_HEADER = "x-csrf-token";

/** Access and refresh tokens, as Login and RefreshToken answer them. */
export interface Tokens {
  accessToken: string;
  refreshToken?: string | undefined;
  /** When the access token expires (ms since the epoch), if known. */
  expiresAt?: number | undefined;
}

/** Renews the access token with the refresh token (null when there is none). */
export type Refresher = (refreshToken: string | undefined) => Promise<Tokens>;

/**
 * Bearer credentials: the tokens of one session, renewed when the access
 * token expires (one renewal at a time, whoever asks). Keep the refresh
 * token out of reach of page script when you can: a browser app that can
 * use cookies should (CookieSession).
 */
export class BearerSession {
  readonly kind = "bearer";
  #tokens: Tokens | undefined;
  #refresher: Refresher | undefined;
  #refreshing: Promise<string> | undefined;
  readonly #listeners = new Set<(tokens: Tokens | undefined) => void>();

  constructor(tokens?: Tokens, refresher?: Refresher) {
    this.#tokens = tokens;
    this.#refresher = refresher;
  }

  /** The current access token, if signed in. */
  get accessToken(): string | undefined {
    return this.#tokens?.accessToken;
  }

  /** Whether a refresh can renew the access token. */
  get canRefresh(): boolean {
    return this.#refresher !== undefined && this.#tokens !== undefined;
  }

  /** Sets the tokens (after Login, or from storage). */
  set(tokens: Tokens | undefined): void {
    this.#tokens = tokens;
    for (const listener of this.#listeners) listener(tokens);
  }

  /** Signs out locally: no more tokens. */
  clear(): void {
    this.set(undefined);
  }

  /** How to renew the access token; createSlopClient sets RefreshToken's. */
  useRefresher(refresher: Refresher, replace = false): void {
    if (replace || this.#refresher === undefined) this.#refresher = refresher;
  }

  /** Calls `listener` when the tokens change (a refresh, a sign-out). */
  onChange(listener: (tokens: Tokens | undefined) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * A fresh access token: renews it once however many callers ask at the
   * same time. Fails (the refresh's SlopError, e.g. REFRESH_TOKEN_INVALID)
   * when it cannot; then the user has to sign in again.
   */
  refresh(): Promise<string> {
    if (this.#refreshing) return this.#refreshing;
    const refresher = this.#refresher;
    if (!refresher) {
      return Promise.reject(
        new SlopError({ code: "UNAUTHENTICATED", message: "no way to refresh the access token" }),
      );
    }
    this.#refreshing = (async () => {
      try {
        const tokens = await refresher(this.#tokens?.refreshToken);
        this.set({ refreshToken: this.#tokens?.refreshToken, ...tokens });
        return tokens.accessToken;
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  /** Whether the access token expires within `marginMs`. */
  expiresWithin(marginMs: number, now = Date.now()): boolean {
    const at = this.#tokens?.expiresAt;
    return at !== undefined && at - now <= marginMs;
  }
}

/**
 * A browser signed in by cookie (`POST /api/v1/auth/login?cookie=true`):
 * the browser sends the session cookie itself; calls carry the CSRF token.
 */
export class CookieSession {
  readonly kind = "cookie";
  readonly #csrfToken: () => string | undefined;

  /**
   * `csrfToken` gives the CSRF token; by default the `slop_csrf` cookie,
   * which a page can read when it is served from the API's host (cookies
   * do not depend on the port). A page on another host cannot read it.
   */
  constructor(csrfToken?: () => string | undefined) {
    this.#csrfToken = csrfToken ?? (() => readCookie(CSRF_COOKIE));
  }

  get csrfToken(): string | undefined {
    return this.#csrfToken();
  }
}

/** Either kind of credentials. */
export type Credentials = BearerSession | CookieSession;

/** The value of cookie `name` in `document.cookie`, if any. */
export function readCookie(name: string, cookies?: string): string | undefined {
  const all = cookies ?? (globalThis as { document?: { cookie?: string } }).document?.cookie ?? "";
  for (const pair of all.split(";")) {
    const at = pair.indexOf("=");
    if (at > 0 && pair.slice(0, at).trim() === name) return decodeURIComponent(pair.slice(at + 1).trim());
  }
  return undefined;
}

/** How long before its expiry an access token is renewed ahead of a call. */
const EARLY_REFRESH_MS = 30_000;

/**
 * Puts the credentials on every call. With bearer credentials, a unary call
 * refused for an expired token (TOKEN_EXPIRED) is sent once more with a
 * fresh one; a token known to expire soon is renewed before the call.
 */
export function credentialsInterceptor(credentials: Credentials): Interceptor {
  if (credentials.kind === "cookie") {
    return (next) => (request) => {
      const csrf = credentials.csrfToken;
      if (csrf) request.header.set(CSRF_HEADER, csrf);
      return next(request);
    };
  }
  return (next) => async (request) => {
    if (credentials.canRefresh && credentials.expiresWithin(EARLY_REFRESH_MS)) {
      await credentials.refresh().catch(() => undefined);
    }
    const token = credentials.accessToken;
    if (token) request.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(request);
    } catch (error) {
      const retry =
        !request.stream &&
        token !== undefined &&
        credentials.canRefresh &&
        error instanceof ConnectError &&
        SlopError.from(error).reason === "TOKEN_EXPIRED";
      if (!retry) throw error;
      request.header.set("authorization", `Bearer ${await credentials.refresh()}`);
      return await next(request);
    }
  };
}
