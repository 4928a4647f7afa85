// @slop-studios/client: typed clients of the Slop Studios API for browsers
// (grpc-web) and, through "@slop-studios/client/node", Node (gRPC), and
// notification streams with resume over WebSocket, Server-Sent Events and
// Subscribe. This entry point pulls in nothing of Node.

import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Interceptor } from "@connectrpc/connect";
import { createSlopClient, interceptorsFor, type SlopClient } from "./client.js";
import type { Credentials } from "./credentials.js";

export { createSlopClient, interceptorsFor, tokensOf, type SlopClient, type SlopClientOptions } from "./client.js";
export {
  BearerSession,
  CookieSession,
  CSRF_COOKIE,
  CSRF_HEADER,
  credentialsInterceptor,
  readCookie,
  type Credentials,
  type Refresher,
  type Tokens,
} from "./credentials.js";
export { ERROR_DOMAIN, SlopError, codeName, type ErrorReasonName, type FieldViolation, type StatusCode } from "./errors.js";
export { NotificationFeed, type Disconnect, type FeedEvents, type FeedOptions, type NotificationFeedOptions } from "./feed.js";
export { ResumePositions, type Position, type SubscribedOutcome } from "./positions.js";
export {
  Backoff,
  recoveryFromClose,
  recoveryFromError,
  type BackoffOptions,
  type Recovery,
  type Timers,
} from "./retry.js";
export {
  NotificationSocket,
  socketUrl,
  type NotificationSocketOptions,
  type SocketEvents,
  type WebSocketFactory,
  type WebSocketLike,
} from "./socket.js";
export {
  NotificationEventStream,
  type EventSourceFactory,
  type EventSourceLike,
  type NotificationEventStreamOptions,
} from "./sse.js";
export * from "./gen/slop/auth/v1/auth_pb.js";
export * from "./gen/slop/session/v1/session_pb.js";
export * from "./gen/slop/notification/v1/notification_pb.js";
export * from "./gen/slop/errors/v1/errors_pb.js";

/** Options of connectWeb. */
export interface WebClientOptions {
  /** The API's base URL, `https://api.example.com`. */
  baseUrl: string;
  /** A BearerSession, or a CookieSession for a page signed in by cookie. */
  credentials?: Credentials | undefined;
  /** More interceptors, after the credentials'. */
  interceptors?: Interceptor[];
  /** fetch (the global one by default). */
  fetch?: typeof globalThis.fetch;
}

/**
 * The three services over grpc-web, for browsers. With a CookieSession,
 * every call sends the browser's cookies (`credentials: "include"`) and
 * the CSRF token.
 */
export function connectWeb(options: WebClientOptions): SlopClient {
  const { baseUrl, credentials } = options;
  const fetch: typeof globalThis.fetch = (input, init) =>
    (options.fetch ?? globalThis.fetch)(input, {
      ...init,
      credentials: credentials?.kind === "cookie" ? "include" : "same-origin",
    });
  const transport = createGrpcWebTransport({
    baseUrl,
    fetch,
    interceptors: [...interceptorsFor(credentials), ...(options.interceptors ?? [])],
  });
  return createSlopClient({ baseUrl, transport, credentials, fetch });
}
