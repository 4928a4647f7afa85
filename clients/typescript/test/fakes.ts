// Fakes for the unit tests: a clock whose timers run when the test says,
// a WebSocket and an EventSource the test plays the server of.

import type { EventSourceLike, Timers, WebSocketLike } from "../src/index.js";

export class FakeTimers implements Timers {
  #next = 1;
  readonly pending = new Map<number, { callback: () => void; ms: number }>();

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.#next++;
    this.pending.set(id, { callback, ms });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  /** The delays of the pending timers. */
  delays(): number[] {
    return [...this.pending.values()].map((t) => t.ms);
  }

  /** Runs the one pending timer; answers its delay. */
  fire(): number {
    const entries = [...this.pending.entries()];
    if (entries.length !== 1) throw new Error(`expected one pending timer, have ${entries.length}`);
    const [id, timer] = entries[0]!;
    this.pending.delete(id);
    timer.callback();
    return timer.ms;
  }
}

export class FakeSocket implements WebSocketLike {
  readonly sent: Record<string, unknown>[] = [];
  closedByClient: { code?: number | undefined; reason?: string | undefined } | undefined;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
  }

  open(): void {
    this.onopen?.({});
  }

  receive(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  serverClose(code: number, reason = ""): void {
    this.onclose?.({ code, reason });
  }

  /** The frames sent of `type`. */
  frames(type: string): Record<string, unknown>[] {
    return this.sent.filter((frame) => frame.type === type);
  }
}

/** A socket factory that keeps every socket it opened. */
export function socketFactory(): { open: (url: string) => FakeSocket; sockets: FakeSocket[]; last: () => FakeSocket } {
  const sockets: FakeSocket[] = [];
  return {
    sockets,
    open: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket;
    },
    last: () => {
      const socket = sockets.at(-1);
      if (!socket) throw new Error("no socket opened");
      return socket;
    },
  };
}

type Listener = (event: { data?: unknown; lastEventId?: string }) => void;

export class FakeEventSource implements EventSourceLike {
  readyState = 0;
  closed = false;
  readonly listeners = new Map<string, Listener[]>();

  constructor(
    readonly url: string,
    readonly init: { withCredentials: boolean },
  ) {}

  addEventListener(type: string, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.closed = true;
    this.readyState = 2;
  }

  dispatch(type: string, data?: unknown, lastEventId?: string): void {
    const event: { data?: unknown; lastEventId?: string } = {};
    if (data !== undefined) event.data = typeof data === "string" ? data : JSON.stringify(data);
    if (lastEventId !== undefined) event.lastEventId = lastEventId;
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }
}

/** Lets promise callbacks run. */
export const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
