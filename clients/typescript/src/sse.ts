// Server-Sent Events, `GET /api/v1/notifications/stream` (docs/sse.md;
// bridge/src/sse.rs), for where WebSockets are blocked. EventSource cannot
// set headers, so a browser stream rides on the session cookie of a cookie
// login. The id of every `subscribed` and `event` message is the resume
// position of every channel of the stream; this stream keeps the last one
// and reconnects with it (`last_event_id`), with back-off and full jitter,
// rather than EventSource's fixed 3 s.

import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { EventSchema, Namespace, SubscribedSchema } from "./gen/slop/notification/v1/notification_pb.js";
import { SlopError } from "./errors.js";
import { Feed, type FeedOptions } from "./feed.js";
import { recoveryFromError } from "./retry.js";

/** The part of the EventSource API the stream uses (a browser's, or a fake). */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: { data?: unknown; lastEventId?: string }) => void): void;
  close(): void;
}

export type EventSourceFactory = (url: string, init: { withCredentials: boolean }) => EventSourceLike;

export interface NotificationEventStreamOptions extends FeedOptions {
  /** The API's base URL, `https://api.example.com`. */
  url: string;
  /** The id to resume from (saved from `lastEventId`), for a first connect. */
  lastEventId?: string | undefined;
  /** Send the session cookie to another origin (CORS_ORIGIN must list the page's). Default true. */
  withCredentials?: boolean;
  /** Opens the EventSource; `new EventSource(url, init)` by default. */
  eventSource?: EventSourceFactory;
  /**
   * fetch, to learn why a connection was refused (EventSource hides the
   * status): a refused stream is asked for again with fetch, whose error
   * body says (401: sign in again; 429: wait). The global fetch by default.
   */
  fetch?: typeof globalThis.fetch;
}

const CLOSED = 2;

/**
 * Notifications over Server-Sent Events: `channels` (none: the user's own),
 * resumed after every reconnect from the last id, `lost` when the server
 * says `recovered: false`.
 */
export class NotificationEventStream extends Feed {
  readonly #base: string;
  readonly #withCredentials: boolean;
  readonly #open: EventSourceFactory;
  readonly #fetch: (() => typeof globalThis.fetch) | undefined;
  #source: EventSourceLike | undefined;
  /** The id of the last `subscribed` or `event` message: where to resume. */
  lastEventId: string | undefined;

  constructor(options: NotificationEventStreamOptions) {
    super(options);
    this.#base = options.url.replace(/\/+$/, "");
    this.lastEventId = options.lastEventId;
    this.#withCredentials = options.withCredentials ?? true;
    this.#open =
      options.eventSource ??
      ((url, init) =>
        new (globalThis as unknown as { EventSource: new (u: string, i: object) => EventSourceLike }).EventSource(
          url,
          init,
        ));
    const fetch = options.fetch;
    this.#fetch = fetch ? () => fetch : typeof globalThis.fetch === "function" ? () => globalThis.fetch : undefined;
  }

  /** The stream's URL: its channels and namespaces, and where to resume. */
  url(): string {
    const params = new URLSearchParams();
    for (const channel of this.channels) params.append("channel", channel);
    for (const namespace of this.namespaces) params.append("namespace", `NAMESPACE_${Namespace[namespace]}`);
    if (this.lastEventId) params.set("last_event_id", this.lastEventId);
    const query = params.toString();
    return `${this.#base}/api/v1/notifications/stream${query ? `?${query}` : ""}`;
  }

  protected override disconnect(): void {
    this.#source?.close();
    this.#source = undefined;
  }

  protected override connect(): void {
    for (const channel of this.channels) this.followed(channel);
    const url = this.url();
    const source = this.#open(url, { withCredentials: this.#withCredentials });
    this.#source = source;
    const current = () => this.#source === source;
    source.addEventListener("subscribed", ({ data, lastEventId }) => {
      if (!current()) return;
      this.onSubscribed(fromJson(SubscribedSchema, JSON.parse(String(data)) as JsonValue, { ignoreUnknownFields: true }));
      if (lastEventId) this.lastEventId = lastEventId;
    });
    source.addEventListener("event", ({ data, lastEventId }) => {
      if (!current()) return;
      this.onEvent(fromJson(EventSchema, JSON.parse(String(data)) as JsonValue, { ignoreUnknownFields: true }));
      if (lastEventId) this.lastEventId = lastEventId;
    });
    source.addEventListener("error", ({ data }) => {
      if (!current()) return;
      const refused = source.readyState === CLOSED;
      this.#source = undefined;
      source.close();
      if (typeof data === "string" && data) {
        // The server's final message: the AIP-193 body of the status that
        // ended the stream.
        const error = SlopError.fromBody(JSON.parse(data) as unknown);
        this.emit("error", error, undefined);
        this.ended({ recovery: recoveryFromError(error), error }, undefined);
      } else if (refused) {
        // Refused (EventSource hides the answer): ask why.
        void this.#refused(url);
      } else {
        // The connection dropped: reconnect ourselves, with jitter.
        this.ended({ recovery: { action: "retry" } }, undefined);
      }
    });
  }

  async #refused(url: string): Promise<void> {
    let error: SlopError | undefined;
    const fetch = this.#fetch?.();
    if (fetch) {
      const abort = new AbortController();
      try {
        const response = await fetch(url, {
          credentials: this.#withCredentials ? "include" : "same-origin",
          headers: { accept: "text/event-stream" },
          signal: abort.signal,
        });
        if (!response.ok) error = SlopError.fromBody(await response.json().catch(() => null), response.status);
      } catch {
        // The server is not there: retry.
      } finally {
        abort.abort();
      }
    }
    if (error) this.emit("error", error, undefined);
    this.ended({ recovery: error ? recoveryFromError(error) : { action: "retry" }, error }, undefined);
  }
}
