// What a client does when a stream ends: reconnect after a back-off with
// full jitter (so a restarted server does not get every client back in the
// same second), get a fresh access token first, send the user to sign in
// again, or stop. The WebSocket says why in its close code, the other doors
// in the status (docs/websocket.md, docs/errors.md).

import type { SlopError } from "./errors.js";

/** What to do after a stream ended. */
export type Recovery =
  /** Reconnect after a back-off (at least `retryAfterMs` when given) and resume. */
  | { action: "retry"; retryAfterMs?: number | undefined }
  /** The access token was refused: refresh it, then reconnect. */
  | { action: "refresh" }
  /** The session is over (logged out, revoked, expired): sign in again. */
  | { action: "signIn" }
  /** Reconnecting as is cannot help (no permission, a client bug). */
  | { action: "stop" };

/**
 * What a WebSocket close code of `/api/v1/ws` asks for (docs/websocket.md,
 * "Errors that end a socket"); `reason` is the close reason, which for 4429
 * says how long to wait (`rate limited; retry in 30 s`).
 */
export function recoveryFromClose(code: number, reason = ""): Recovery {
  switch (code) {
    case 4401: // no or refused auth frame: an expired token, typically
      return { action: "refresh" };
    case 4410: // session ended
      return { action: "signIn" };
    case 4403: // permission denied
    case 1003: // a binary frame was sent
    case 1009: // a frame over 64 KiB was sent
      return { action: "stop" };
    case 4429: {
      const seconds = /retry in (\d+) s/.exec(reason)?.[1];
      return { action: "retry", retryAfterMs: (seconds === undefined ? 30 : Number(seconds)) * 1000 };
    }
    default:
      // 1001 going away, 1006 no close frame (the server or the network
      // went away), 1011, 1013, 4408 slow consumer, …
      return { action: "retry" };
  }
}

/** What an error that ended a stream (gRPC, grpc-web, SSE) asks for. */
export function recoveryFromError(error: SlopError): Recovery {
  switch (error.code) {
    case "UNAUTHENTICATED":
      return error.reason === "TOKEN_EXPIRED" || error.reason === "TOKEN_INVALID"
        ? { action: "refresh" }
        : { action: "signIn" };
    case "PERMISSION_DENIED":
    case "INVALID_ARGUMENT":
    case "NOT_FOUND":
    case "ALREADY_EXISTS":
    case "FAILED_PRECONDITION":
    case "OUT_OF_RANGE":
    case "UNIMPLEMENTED":
      return { action: "stop" };
    default:
      // UNAVAILABLE (a store is down, shutdown), RESOURCE_EXHAUSTED (rate
      // limited, slow consumer), INTERNAL, UNKNOWN (a network failure), …
      return { action: "retry", retryAfterMs: error.retryAfterMs };
  }
}

/** Exponential back-off with full jitter. */
export interface BackoffOptions {
  /** The cap of the first wait (ms); it doubles with every attempt. Default 1000. */
  baseMs?: number;
  /** The largest cap (ms). Default 30 000. */
  maxMs?: number;
  /** Random numbers in [0, 1); Math.random by default (tests fix it). */
  random?: () => number;
}

/**
 * Waits of exponential back-off with full jitter: attempt n waits a uniform
 * random time in [0, min(maxMs, baseMs·2ⁿ)), and never less than what the
 * server asked for.
 */
export class Backoff {
  #attempt = 0;
  readonly #base: number;
  readonly #max: number;
  readonly #random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.#base = options.baseMs ?? 1000;
    this.#max = options.maxMs ?? 30_000;
    this.#random = options.random ?? Math.random;
  }

  /** How many waits since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The cap of the next wait. */
  get ceilingMs(): number {
    return Math.min(this.#max, this.#base * 2 ** this.#attempt);
  }

  /** The next wait (ms), at least `atLeastMs`. */
  next(atLeastMs = 0): number {
    const wait = this.#random() * this.ceilingMs;
    this.#attempt += 1;
    return Math.max(atLeastMs, wait);
  }

  /** A connection worked: the next failure starts over. */
  reset(): void {
    this.#attempt = 0;
  }
}

/** Timers, so tests can use a fake clock. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};
