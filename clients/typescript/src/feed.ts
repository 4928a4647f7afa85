// What every notification stream of this package tells its listener, and
// the stream over Subscribe (gRPC, grpc-web): reconnects with back-off and
// resumes every channel from the last event handled.

import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  SubscribeRequestSchema,
  type Event,
  type Namespace,
  type NotificationService,
  type Subscribed,
} from "./gen/slop/notification/v1/notification_pb.js";
import { BearerSession, type Credentials } from "./credentials.js";
import { Emitter } from "./emitter.js";
import { SlopError } from "./errors.js";
import { ResumePositions, type SubscribedOutcome } from "./positions.js";
import {
  Backoff,
  realTimers,
  recoveryFromError,
  type BackoffOptions,
  type Recovery,
  type Timers,
} from "./retry.js";

/** Why a stream's connection ended, and what happens next. */
export interface Disconnect {
  recovery: Recovery;
  /** When it reconnects: in this many ms (none when it does not). */
  retryInMs?: number | undefined;
  /** The error that ended it, if any. */
  error?: SlopError | undefined;
  /** WebSocket only: the close code and reason. */
  code?: number | undefined;
  reason?: string | undefined;
}

/** What a notification stream reports, whichever its transport. */
export interface FeedEvents {
  /** An event, in offset order per channel, each once. */
  event: [event: Event];
  /** A channel's subscription started (or resumed). */
  subscribed: [subscribed: Subscribed, outcome: SubscribedOutcome];
  /**
   * `recovered: false`: events of this channel were lost (at a resume, or
   * mid-stream). Reload the state it feeds (e.g. ListChannelEvents); live
   * events follow.
   */
  lost: [subscribed: Subscribed];
  /** An error the server sent (the stream may go on; `disconnected` says if not). */
  error: [error: SlopError, id: string | undefined];
  /** The connection ended; `recovery` says what happens now. */
  disconnected: [disconnect: Disconnect];
  /** The session is over (logged out, revoked, expired): sign in again. */
  signInRequired: [error: SlopError | undefined];
  /** The stream stopped for good (close(), sign-in required, or a stop). */
  stopped: [];
}

/** Options every notification stream takes. */
export interface FeedOptions {
  /**
   * The channels to follow, e.g. `["user:<id>", "topic:news"]`. None: the
   * user's own channel. (The WebSocket always follows the own channel; list
   * only the others there.)
   */
  channels?: string[];
  /** Only these namespaces (all when empty). */
  namespaces?: Namespace[];
  /** Where to resume from; shared and saved by the caller if it likes. */
  positions?: ResumePositions;
  backoff?: BackoffOptions;
  /** setTimeout and clearTimeout (tests use a fake clock). */
  timers?: Timers;
}

/** Shared by the streams: positions, back-off, the lost-channel rule. */
export abstract class Feed<M extends FeedEvents = FeedEvents> extends Emitter<M> {
  readonly positions: ResumePositions;
  protected readonly backoff: Backoff;
  protected readonly timers: Timers;
  protected readonly channels: string[];
  protected readonly namespaces: Namespace[];
  /** Channels followed on an earlier connection (a position may be missing). */
  readonly #followed = new Set<string>();
  /** Channels asked for on this connection. */
  readonly #asked = new Set<string>();
  #retry: unknown;
  protected stopped = false;

  constructor(options: FeedOptions) {
    super();
    this.positions = options.positions ?? new ResumePositions();
    this.backoff = new Backoff(options.backoff);
    this.timers = options.timers ?? realTimers;
    this.channels = [...(options.channels ?? [])];
    this.namespaces = [...(options.namespaces ?? [])];
  }

  /** Stops the stream for good. */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.#retry !== undefined) this.timers.clearTimeout(this.#retry);
    this.#retry = undefined;
    this.disconnect();
    (this as Feed).emit("stopped");
  }

  /** Ends the current connection (the transport's part of close()). */
  protected abstract disconnect(): void;
  /** Opens a connection (the transport's part). */
  protected abstract connect(): void;

  /** Starts the stream. */
  start(): this {
    this.connect();
    return this;
  }

  /** A `subscribed` message: moves the position, reports a loss. */
  protected onSubscribed(subscribed: Subscribed): void {
    const self = this as Feed;
    const known = this.positions.has(subscribed.channel);
    let outcome = this.positions.subscribed(subscribed);
    // A fresh subscription of a channel we followed before without ever
    // learning where it stood: what it missed cannot be known.
    if (outcome === "live" && !known && this.#followed.has(subscribed.channel)) outcome = "lost";
    this.#followed.add(subscribed.channel);
    this.backoff.reset();
    self.emit("subscribed", subscribed, outcome);
    if (outcome === "lost") self.emit("lost", subscribed);
  }

  /** An event: handed out, then its position recorded. */
  protected onEvent(event: Event): void {
    this.backoff.reset();
    (this as Feed).emit("event", event);
    this.positions.event(event);
  }

  /** Marks a channel followed (before its subscribed message came). */
  protected followed(channel: string): void {
    this.#asked.add(channel);
  }

  /**
   * The connection ended: reconnect, refresh first, or stop, as `recovery`
   * says. `refreshed` tells whether a refresh just happened (a second
   * refusal means the session is over).
   */
  protected ended(disconnect: Omit<Disconnect, "retryInMs">, credentials: Credentials | undefined): void {
    const self = this as Feed;
    for (const channel of this.#asked) this.#followed.add(channel);
    this.#asked.clear();
    if (this.stopped) return;
    let recovery = disconnect.recovery;
    if (recovery.action === "refresh" && !(credentials instanceof BearerSession && credentials.canRefresh)) {
      recovery = { action: "signIn" };
    }
    switch (recovery.action) {
      case "retry": {
        const retryInMs = this.backoff.next(recovery.retryAfterMs ?? 0);
        self.emit("disconnected", { ...disconnect, recovery, retryInMs });
        this.#retry = this.timers.setTimeout(() => {
          this.#retry = undefined;
          if (!this.stopped) this.connect();
        }, retryInMs);
        return;
      }
      case "refresh": {
        const retryInMs = this.backoff.next();
        self.emit("disconnected", { ...disconnect, recovery, retryInMs });
        (credentials as BearerSession).refresh().then(
          () => {
            this.#retry = this.timers.setTimeout(() => {
              this.#retry = undefined;
              if (!this.stopped) this.connect();
            }, retryInMs);
          },
          (error: unknown) => {
            const failure = SlopError.from(error);
            // A refresh that failed for want of a network is retried later.
            if (recoveryFromError(failure).action === "retry") {
              this.ended({ recovery: { action: "refresh" }, error: failure }, credentials);
            } else {
              self.emit("signInRequired", failure);
              this.close();
            }
          },
        );
        return;
      }
      case "signIn":
        self.emit("disconnected", { ...disconnect, recovery });
        self.emit("signInRequired", disconnect.error);
        this.close();
        return;
      case "stop":
        self.emit("disconnected", { ...disconnect, recovery });
        this.close();
        return;
    }
  }
}

/** Options of a NotificationFeed. */
export interface NotificationFeedOptions extends FeedOptions {
  /** The credentials of the client's transport (for refreshing the token). */
  credentials?: Credentials | undefined;
}

/**
 * Follows channels over `Subscribe` (grpc-web in browsers, gRPC in Node):
 * `channels`, or the user's own channel, reconnecting after an error with
 * back-off and full jitter, resuming each channel from its position.
 */
export class NotificationFeed extends Feed {
  readonly #client: Client<typeof NotificationService>;
  readonly #credentials: Credentials | undefined;
  #abort: AbortController | undefined;
  /** The user's own channel, once a stream has said its name. */
  #own: string | undefined;

  constructor(client: Client<typeof NotificationService>, options: NotificationFeedOptions = {}) {
    super(options);
    this.#client = client;
    this.#credentials = options.credentials;
  }

  protected override disconnect(): void {
    this.#abort?.abort();
    this.#abort = undefined;
  }

  protected override connect(): void {
    const abort = new AbortController();
    this.#abort = abort;
    void this.#run(abort.signal);
  }

  /**
   * The Subscribe request: every channel, each from its position if it has
   * one (offset 0 included). Without channels, the user's own channel,
   * which is named once a first Subscribed has said its name.
   */
  request() {
    const channels = this.channels.length > 0 ? this.channels : this.#own === undefined ? [] : [this.#own];
    return create(SubscribeRequestSchema, {
      subscriptions: channels.map((channel) => ({
        channel,
        namespaces: this.namespaces,
        resumeFrom: this.positions.get(channel),
      })),
    });
  }

  async #run(signal: AbortSignal): Promise<void> {
    const request = this.request();
    for (const s of request.subscriptions) this.followed(s.channel);
    try {
      for await (const response of this.#client.subscribe(request, { signal })) {
        const message = response.message;
        if (message.case === "subscribed") {
          if (request.subscriptions.length === 0) this.#own ??= message.value.channel;
          this.onSubscribed(message.value);
        } else if (message.case === "event") {
          this.onEvent(message.value);
        }
      }
      if (signal.aborted) return;
      // The server ended the call without a status.
      this.ended({ recovery: { action: "retry" } }, this.#credentials);
    } catch (error) {
      if (signal.aborted) return;
      const failure = SlopError.from(error);
      this.emit("error", failure, undefined);
      this.ended({ recovery: recoveryFromError(failure), error: failure }, this.#credentials);
    }
  }
}
