// Where each followed channel stands: the offset and epoch of the last
// event handled. The same positions resume a channel on every transport
// (WebSocket, gRPC and grpc-web Subscribe, SSE), and they survive a reload
// when saved (toJSON / ResumePositions.fromJSON).

import type { Event, Subscribed } from "./gen/slop/notification/v1/notification_pb.js";

/** A resume position: after `offset` in `epoch`. */
export interface Position {
  offset: bigint;
  epoch: string;
}

/** What a `subscribed` message meant for its channel. */
export type SubscribedOutcome =
  /** A subscription that did not resume: live events follow its position. */
  | "live"
  /** Resumed: the missed events follow, then live ones. */
  | "recovered"
  /**
   * Events were lost (the channel's history no longer holds the gap, or a
   * new epoch): reload the state the channel feeds; live events follow.
   */
  | "lost";

export class ResumePositions {
  readonly #positions = new Map<string, Position>();

  /** Positions saved with toJSON. */
  static fromJSON(saved: Record<string, { offset: string; epoch: string }>): ResumePositions {
    const positions = new ResumePositions();
    for (const [channel, { offset, epoch }] of Object.entries(saved)) {
      positions.#positions.set(channel, { offset: BigInt(offset), epoch });
    }
    return positions;
  }

  /**
   * Whether `channel` has a position. A channel nobody has published to
   * yet stands at offset 0 with no epoch: that is a position too, and
   * resuming from it brings the channel's first events (never test a
   * position for truthiness).
   */
  has(channel: string): boolean {
    return this.#positions.has(channel);
  }

  get(channel: string): Position | undefined {
    const position = this.#positions.get(channel);
    return position && { ...position };
  }

  /** The channels with a position. */
  channels(): string[] {
    return [...this.#positions.keys()];
  }

  set(channel: string, position: Position): void {
    this.#positions.set(channel, { offset: position.offset, epoch: position.epoch });
  }

  delete(channel: string): void {
    this.#positions.delete(channel);
  }

  /**
   * Takes a `subscribed` message. A subscription that recovered moves
   * nothing (the missed events follow and move it); any other is where the
   * live events continue from. Canonical JSON and proto3 leave out zero
   * values, so a missing position is offset 0 with no epoch.
   */
  subscribed(subscribed: Subscribed): SubscribedOutcome {
    if (subscribed.wasRecovering && subscribed.recovered) return "recovered";
    this.set(subscribed.channel, {
      offset: subscribed.position?.offset ?? 0n,
      epoch: subscribed.position?.epoch ?? "",
    });
    return subscribed.wasRecovering ? "lost" : "live";
  }

  /** Takes an event once it has been handled. */
  event(event: Event): void {
    this.set(event.channel, { offset: event.offset, epoch: event.epoch });
  }

  /** The positions as JSON (offsets as strings), to save. */
  toJSON(): Record<string, { offset: string; epoch: string }> {
    const saved: Record<string, { offset: string; epoch: string }> = {};
    for (const [channel, { offset, epoch }] of this.#positions) {
      saved[channel] = { offset: offset.toString(), epoch };
    }
    return saved;
  }
}
