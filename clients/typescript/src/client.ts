// The three services as typed clients over one transport (grpc-web in
// browsers, gRPC in Node), with the credentials put on every call, and
// signing in and out for either kind of credentials.

import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  AuthService,
  LoginResponseSchema,
  type LoginResponse,
  type TokenPair,
} from "./gen/slop/auth/v1/auth_pb.js";
import { NotificationService } from "./gen/slop/notification/v1/notification_pb.js";
import { SessionService } from "./gen/slop/session/v1/session_pb.js";
import {
  BearerSession,
  CSRF_HEADER,
  CookieSession,
  credentialsInterceptor,
  type Credentials,
  type Tokens,
} from "./credentials.js";
import { SlopError } from "./errors.js";

/** Typed clients of the three services. */
export interface SlopClient {
  /** `slop.auth.v1.AuthService`. */
  readonly auth: Client<typeof AuthService>;
  /** `slop.session.v1.SessionService`. */
  readonly sessions: Client<typeof SessionService>;
  /** `slop.notification.v1.NotificationService`. */
  readonly notifications: Client<typeof NotificationService>;
  /** The API's base URL, `https://api.example.com`. */
  readonly baseUrl: string;
  /** The credentials every call carries. */
  readonly credentials: Credentials | undefined;
  /**
   * Signs in. Bearer credentials: Login over the transport, the tokens kept
   * (and renewed) by the BearerSession. Cookie credentials: the REST cookie
   * login, so the browser holds the session cookie; `accessToken: true`
   * asks for an access token in the answer too.
   */
  logIn(email: string, password: string, options?: { accessToken?: boolean }): Promise<LoginResponse>;
  /** Ends the session (and, with cookies, signs the browser out of it). */
  logOut(): Promise<void>;
}

/** What a SlopClient is made from. */
export interface SlopClientOptions {
  baseUrl: string;
  transport: Transport;
  credentials?: Credentials | undefined;
  /** fetch for the REST cookie login and logout (the global one by default). */
  fetch?: typeof globalThis.fetch;
}

/** The interceptors that put `credentials` on a transport's calls. */
export function interceptorsFor(credentials: Credentials | undefined): Interceptor[] {
  return credentials ? [credentialsInterceptor(credentials)] : [];
}

/** Tokens of a TokenPair, with the access token's expiry. */
export function tokensOf(pair: TokenPair, now = Date.now()): Tokens {
  const ttl = pair.accessTokenExpiresIn;
  return {
    accessToken: pair.accessToken,
    refreshToken: pair.refreshToken || undefined,
    expiresAt: ttl ? now + Number(ttl.seconds) * 1000 + Math.floor(ttl.nanos / 1e6) : undefined,
  };
}

/**
 * Clients of the three services over `transport`, whose interceptors must
 * include interceptorsFor(credentials) (connectWeb and connectNode do
 * that). Bearer credentials without a refresher get RefreshToken's.
 */
export function createSlopClient(options: SlopClientOptions): SlopClient {
  const { transport, credentials } = options;
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const auth = createClient(AuthService, transport);
  const doFetch = (input: string, init: RequestInit) => (options.fetch ?? globalThis.fetch)(input, init);
  if (credentials instanceof BearerSession) {
    credentials.useRefresher(async (refreshToken) => {
      if (!refreshToken) {
        throw new SlopError({ code: "UNAUTHENTICATED", reason: "REFRESH_TOKEN_INVALID", message: "no refresh token" });
      }
      try {
        const answer = await auth.refreshToken({ refreshToken });
        if (!answer.tokens) throw new SlopError({ code: "INTERNAL", message: "RefreshToken answered no tokens" });
        return tokensOf(answer.tokens);
      } catch (error) {
        throw SlopError.from(error);
      }
    });
  }

  async function rest(path: string, body: unknown): Promise<JsonValue> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    const csrf = credentials instanceof CookieSession ? credentials.csrfToken : undefined;
    if (csrf) headers[CSRF_HEADER] = csrf;
    const response = await doFetch(baseUrl + path, {
      method: "POST",
      credentials: "include",
      headers,
      body: JSON.stringify(body),
    });
    const json = (await response.json().catch(() => null)) as JsonValue;
    if (!response.ok) throw SlopError.fromBody(json, response.status);
    return json;
  }

  return {
    auth,
    sessions: createClient(SessionService, transport),
    notifications: createClient(NotificationService, transport),
    baseUrl,
    credentials,
    async logIn(email, password, { accessToken = false } = {}) {
      if (credentials instanceof CookieSession) {
        const query = accessToken ? "?cookie=true&access_token=true" : "?cookie=true";
        const json = await rest(`/api/v1/auth/login${query}`, { email, password });
        return fromJson(LoginResponseSchema, json, { ignoreUnknownFields: true });
      }
      try {
        const login = await auth.login({ email, password });
        if (credentials instanceof BearerSession && login.tokens) credentials.set(tokensOf(login.tokens));
        return login;
      } catch (error) {
        throw SlopError.from(error);
      }
    },
    async logOut() {
      if (credentials instanceof CookieSession) {
        await rest("/api/v1/auth/logout", {});
        return;
      }
      try {
        await auth.logout({ refreshToken: "" });
      } catch (error) {
        throw SlopError.from(error);
      } finally {
        if (credentials instanceof BearerSession) credentials.clear();
      }
    },
  };
}
