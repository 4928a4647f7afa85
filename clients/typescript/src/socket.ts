// The WebSocket adapter `/api/v1/ws` (docs/websocket.md), as the server's
// bridge/src/ws speaks it: JSON text frames; signed in at the upgrade (the
// session cookie) or by an `auth` frame first (an access token), answered
// by `welcome`; the user's own channel followed without asking (frames
// without an `id`), replaced by a `subscribe` of it that resumes; `subscribe`
// frames for other channels; a close code that says what to do.

import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import {
  EventSchema,
  Namespace,
  SubscribedSchema,
} from "./gen/slop/notification/v1/notification_pb.js";
import { BearerSession, type Credentials } from "./credentials.js";
import { SlopError } from "./errors.js";
import { Feed, type FeedEvents, type FeedOptions } from "./feed.js";
import { recoveryFromClose } from "./retry.js";

/** The part of the WebSocket API the socket uses (a browser's, or a fake). */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** Opens a WebSocket to `url` (in Node, e.g. with the `ws` package). */
export type WebSocketFactory = (url: string) => WebSocketLike;

/** What a NotificationSocket reports: the feed's events, and `welcome`. */
export interface SocketEvents extends FeedEvents {
  /** Signed in (also after each new token); the own channel is live. */
  welcome: [welcome: { userId: string; sessionId: string }];
}

export interface NotificationSocketOptions extends FeedOptions {
  /** The API's base URL (`https://api.example.com`), or the socket's `wss://…/api/v1/ws`. */
  url: string;
  /**
   * Bearer credentials sign the socket in with an `auth` frame (and a new
   * one whenever the token is renewed); cookie credentials (or none) rely
   * on the session cookie the browser sends with the upgrade.
   */
  credentials?: Credentials | undefined;
  /** Opens the WebSocket; `new WebSocket(url)` by default. */
  webSocket?: WebSocketFactory;
}

/** The id of the subscription that replaces the automatic one. */
const OWN = "own";

/** One connection's state. */
interface Connection {
  socket: WebSocketLike;
  welcomed: boolean;
  /** The automatic subscription has been replaced by `OWN`: ignore id-less frames. */
  replacedOwn: boolean;
  /** The subscribe frames sent, by id (sent again after a token renewal). */
  subscribes: Map<string, Record<string, unknown>>;
  lastError: SlopError | undefined;
  stopListening: () => void;
}

/**
 * Notifications over `/api/v1/ws`: the user's own channel and `channels`,
 * each resumed from its position after every reconnect, with exponential
 * back-off and full jitter; `lost` when the server says `recovered: false`.
 */
export class NotificationSocket extends Feed<SocketEvents> {
  readonly #url: string;
  readonly #credentials: Credentials | undefined;
  readonly #open: WebSocketFactory;
  #connection: Connection | undefined;
  /** The connection follows a token refresh made for a 4401. */
  #afterRefresh = false;

  constructor(options: NotificationSocketOptions) {
    super(options);
    this.#url = socketUrl(options.url);
    this.#credentials = options.credentials;
    this.#open =
      options.webSocket ??
      ((url) => new (globalThis as unknown as { WebSocket: new (url: string) => WebSocketLike }).WebSocket(url));
  }

  /** Follows one more channel (now, if connected, and after every reconnect). */
  follow(channel: string): void {
    if (this.channels.includes(channel)) return;
    this.channels.push(channel);
    const connection = this.#connection;
    if (connection?.welcomed) this.#subscribe(connection, `c${this.channels.length - 1}`, channel);
  }

  protected override disconnect(): void {
    const connection = this.#connection;
    this.#connection = undefined;
    if (!connection) return;
    connection.stopListening();
    connection.socket.onclose = null;
    connection.socket.onmessage = null;
    connection.socket.onerror = null;
    connection.socket.onopen = null;
    connection.socket.close(1000, "client closed");
  }

  protected override connect(): void {
    const socket = this.#open(this.#url);
    const credentials = this.#credentials;
    const connection: Connection = {
      socket,
      welcomed: false,
      replacedOwn: false,
      subscribes: new Map(),
      lastError: undefined,
      stopListening: () => {},
    };
    this.#connection = connection;
    if (credentials instanceof BearerSession) {
      // A renewed token goes to the server at once: later subscriptions
      // (and resubscriptions) need a valid one.
      connection.stopListening = credentials.onChange((tokens) => {
        if (connection.welcomed && tokens) send(connection, { type: "auth", token: tokens.accessToken });
      });
    }
    socket.onopen = () => {
      if (!(credentials instanceof BearerSession)) return;
      const token = credentials.accessToken;
      // Without a token the server closes with 4401 after 5 s; refresh then.
      if (token) send(connection, { type: "auth", token });
      else socket.close(4000, "no access token");
    };
    socket.onmessage = ({ data }) => {
      if (this.#connection !== connection || typeof data !== "string") return;
      let frame: Record<string, unknown>;
      try {
        frame = JSON.parse(data) as Record<string, unknown>;
      } catch {
        return;
      }
      this.#receive(connection, frame);
    };
    socket.onclose = ({ code, reason }) => {
      if (this.#connection !== connection) return;
      this.#connection = undefined;
      connection.stopListening();
      let recovery = recoveryFromClose(code, reason);
      if (code === 4000 || (recovery.action === "refresh" && this.#afterRefresh)) {
        // No token, or a fresh one refused too.
        recovery = this.#afterRefresh || code !== 4000 ? { action: "signIn" } : { action: "refresh" };
      }
      this.#afterRefresh = recovery.action === "refresh";
      this.ended({ recovery, code, reason, error: connection.lastError }, credentials);
    };
  }

  #receive(connection: Connection, frame: Record<string, unknown>): void {
    const id = typeof frame.id === "string" ? frame.id : undefined;
    switch (frame.type) {
      case "welcome": {
        const welcome = { userId: String(frame.userId), sessionId: String(frame.sessionId) };
        if (!connection.welcomed) {
          connection.welcomed = true;
          this.#afterRefresh = false;
          this.#followAll(connection, `user:${welcome.userId}`);
        }
        this.emit("welcome", welcome);
        return;
      }
      case "subscribed": {
        // Frames without an id are the automatic subscription's; once it is
        // replaced, the resuming subscription brings every event instead.
        if (id === undefined && connection.replacedOwn) return;
        this.onSubscribed(fromJson(SubscribedSchema, frame.subscribed as JsonValue, { ignoreUnknownFields: true }));
        return;
      }
      case "event": {
        if (id === undefined && connection.replacedOwn) return;
        this.onEvent(fromJson(EventSchema, frame.event as JsonValue, { ignoreUnknownFields: true }));
        return;
      }
      case "error": {
        const error = SlopError.fromFrame(frame);
        connection.lastError = error;
        this.emit("error", error, id);
        const credentials = this.#credentials;
        const resend = id === undefined ? undefined : connection.subscribes.get(id);
        if (resend && error.reason === "TOKEN_EXPIRED" && credentials instanceof BearerSession && credentials.canRefresh) {
          // The refresh sends the new token (onChange); then the subscription again.
          credentials.refresh().then(
            () => {
              if (this.#connection === connection) send(connection, resend);
            },
            (failure: unknown) => this.emit("error", SlopError.from(failure), id),
          );
        }
        return;
      }
      default:
        // pong, unsubscribed, and frame types newer than this client.
        return;
    }
  }

  /** After `welcome`: the own channel (resumed if it has a position) and the others. */
  #followAll(connection: Connection, own: string): void {
    this.followed(own);
    if (this.positions.has(own)) {
      connection.replacedOwn = true;
      this.#subscribe(connection, OWN, own);
    }
    this.channels.forEach((channel, i) => {
      if (channel !== own) this.#subscribe(connection, `c${i}`, channel);
    });
  }

  #subscribe(connection: Connection, id: string, channel: string): void {
    this.followed(channel);
    const frame: Record<string, unknown> = { type: "subscribe", id, channel };
    if (this.namespaces.length > 0) frame.namespaces = this.namespaces.map((n) => `NAMESPACE_${Namespace[n]}`);
    const position = this.positions.get(channel);
    // Offset 0 with no epoch is a position too: "before the first event".
    if (position) frame.resumeFrom = { offset: position.offset.toString(), epoch: position.epoch };
    connection.subscribes.set(id, frame);
    send(connection, frame);
  }
}

function send(connection: Connection, frame: Record<string, unknown>): void {
  try {
    connection.socket.send(JSON.stringify(frame));
  } catch {
    // The socket is closing: its close event reconnects.
  }
}

/** `wss://host/api/v1/ws` for a base URL `https://host` (or the socket URL itself). */
export function socketUrl(url: string): string {
  const ws = url.replace(/^http(s?):/, "ws$1:").replace(/\/+$/, "");
  return ws.endsWith("/api/v1/ws") ? ws : `${ws}/api/v1/ws`;
}
