import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  NotificationFeed,
  SubscribeResponseSchema,
  type NotificationService,
  type SubscribeRequest,
  type SubscribeResponse,
} from "../src/index.js";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { FakeTimers, settle } from "./fakes.js";

/** A Subscribe that answers each call with the next script. */
function fakeClient(scripts: (SubscribeResponse | ConnectError)[][]) {
  const requests: SubscribeRequest[] = [];
  const client = {
    subscribe(request: SubscribeRequest) {
      requests.push(request);
      const script = scripts.shift() ?? [];
      return (async function* () {
        for (const item of script) {
          if (item instanceof ConnectError) throw item;
          yield item;
        }
      })();
    },
  } as unknown as Client<typeof NotificationService>;
  return { client, requests };
}

const subscribed = (channel: string, offset?: bigint, recovering?: { recovered: boolean }) =>
  create(SubscribeResponseSchema, {
    message: {
      case: "subscribed",
      value: {
        channel,
        position: offset === undefined ? undefined : { offset, epoch: "e1" },
        wasRecovering: recovering !== undefined,
        recovered: recovering?.recovered ?? false,
      },
    },
  });
const event = (channel: string, offset: bigint) =>
  create(SubscribeResponseSchema, { message: { case: "event", value: { channel, offset, epoch: "e1", type: "t" } } });
const unavailable = new ConnectError("the server is shutting down", Code.Unavailable);

test("follows the own channel, then resumes it by name after an error, offset 0 included", async () => {
  const { client, requests } = fakeClient([
    [subscribed("user:1"), unavailable],
    [subscribed("user:1", 2n, { recovered: true }), event("user:1", 1n), event("user:1", 2n)],
  ]);
  const timers = new FakeTimers();
  const feed = new NotificationFeed(client, { timers, backoff: { random: () => 0.25 } });
  const offsets: bigint[] = [];
  feed.on("event", (e) => offsets.push(e.offset));
  feed.start();
  await settle();
  assert.deepEqual(requests[0]!.subscriptions, []);
  assert.deepEqual(timers.delays(), [250]);
  timers.fire();
  await settle();
  assert.equal(requests[1]!.subscriptions.length, 1);
  assert.equal(requests[1]!.subscriptions[0]!.channel, "user:1");
  const from = requests[1]!.subscriptions[0]!.resumeFrom;
  assert.ok(from, "offset 0 is a position to resume from");
  assert.equal(from.offset, 0n);
  assert.equal(from.epoch, "");
  assert.deepEqual(offsets, [1n, 2n]);
});

test("a session that ended asks to sign in and stops", async () => {
  const ended = new ConnectError("the session has ended", Code.Unauthenticated, undefined, [
    { desc: ErrorInfoSchema, value: { reason: "SESSION_ENDED", domain: "slop.studio" } },
  ]);
  const { client } = fakeClient([[subscribed("user:1", 3n), ended]]);
  const timers = new FakeTimers();
  const feed = new NotificationFeed(client, { timers });
  const seen: string[] = [];
  feed.on("error", (e) => seen.push(`error ${e.reason}`));
  feed.on("signInRequired", () => seen.push("sign in"));
  feed.on("stopped", () => seen.push("stopped"));
  feed.start();
  await settle();
  assert.deepEqual(seen, ["error SESSION_ENDED", "sign in", "stopped"]);
  assert.equal(timers.pending.size, 0);
});

test("recovered: false is surfaced and named channels are resumed", async () => {
  const { client, requests } = fakeClient([
    [subscribed("topic:a", 5n)],
    [subscribed("topic:a", 9n, { recovered: false })],
  ]);
  const timers = new FakeTimers();
  const feed = new NotificationFeed(client, { timers, channels: ["topic:a"] });
  const lost: string[] = [];
  feed.on("lost", (s) => lost.push(s.channel));
  feed.start();
  await settle();
  timers.fire(); // the stream ended without a status: reconnect
  await settle();
  assert.equal(requests[1]!.subscriptions[0]!.resumeFrom?.offset, 5n);
  assert.deepEqual(lost, ["topic:a"]);
  feed.close();
});
