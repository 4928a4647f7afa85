import assert from "node:assert/strict";
import { test } from "node:test";
import { NotificationEventStream } from "../src/index.js";
import { FakeEventSource, FakeTimers, settle } from "./fakes.js";

function setUp(fetchStatus?: { status: number; body: unknown }) {
  const timers = new FakeTimers();
  const sources: FakeEventSource[] = [];
  const stream = new NotificationEventStream({
    url: "https://api.example.com",
    channels: ["user:1", "topic:news"],
    lastEventId: "user:1=4@e1",
    timers,
    backoff: { random: () => 0.5 },
    eventSource: (url, init) => {
      const source = new FakeEventSource(url, init);
      sources.push(source);
      return source;
    },
    fetch: async () =>
      new Response(JSON.stringify(fetchStatus?.body ?? null), { status: fetchStatus?.status ?? 200 }),
  });
  const seen: string[] = [];
  stream.on("event", (e) => seen.push(`event ${e.channel}#${e.offset}`));
  stream.on("lost", (s) => seen.push(`lost ${s.channel}`));
  stream.on("signInRequired", () => seen.push("sign in"));
  stream.start();
  return { stream, timers, sources, seen };
}

const body = (status: string, code: number, reason?: string) => ({
  error: {
    code,
    message: "…",
    status,
    details: reason ? [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason, domain: "slop.studio" }] : [],
  },
});

test("resumes from the last id, with the cookie, across reconnects", () => {
  const { stream, timers, sources, seen } = setUp();
  const first = sources[0]!;
  assert.equal(
    first.url,
    "https://api.example.com/api/v1/notifications/stream?channel=user%3A1&channel=topic%3Anews&last_event_id=user%3A1%3D4%40e1",
  );
  assert.ok(first.init.withCredentials);
  first.dispatch("subscribed", { channel: "user:1", position: { offset: "5", epoch: "e1" }, wasRecovering: true, recovered: true }, "user:1=4@e1");
  first.dispatch("subscribed", { channel: "topic:news" }, "user:1=4@e1;topic:news=0@");
  first.dispatch("event", { channel: "user:1", offset: "5", epoch: "e1", type: "t" }, "user:1=5@e1;topic:news=0@");
  assert.equal(stream.lastEventId, "user:1=5@e1;topic:news=0@");
  // The server shuts down: its final message, then the stream ends.
  first.dispatch("error", body("UNAVAILABLE", 503));
  assert.ok(first.closed);
  assert.deepEqual(timers.delays(), [500]);
  timers.fire();
  assert.ok(sources[1]!.url.endsWith("last_event_id=user%3A1%3D5%40e1%3Btopic%3Anews%3D0%40"));
  assert.deepEqual(seen, ["event user:1#5"]);
  assert.deepEqual(stream.positions.get("topic:news"), { offset: 0n, epoch: "" });
});

test("a dropped connection reconnects with jitter instead of EventSource's own retry", () => {
  const { timers, sources } = setUp();
  sources[0]!.dispatch("error");
  assert.ok(sources[0]!.closed);
  assert.deepEqual(timers.delays(), [500]);
});

test("recovered: false is surfaced", () => {
  const { sources, seen } = setUp();
  sources[0]!.dispatch("subscribed", { channel: "user:1", position: { offset: "1", epoch: "e2" }, wasRecovering: true }, "x");
  assert.deepEqual(seen, ["lost user:1"]);
});

test("the session ended: sign in again, no reconnect", () => {
  const { timers, sources, seen } = setUp();
  sources[0]!.dispatch("error", body("UNAUTHENTICATED", 401, "SESSION_ENDED"));
  assert.deepEqual(seen, ["sign in"]);
  assert.equal(timers.pending.size, 0);
});

test("a refused stream is asked why: 401 asks to sign in", async () => {
  const { timers, sources, seen } = setUp({ status: 401, body: body("UNAUTHENTICATED", 401, "CREDENTIALS_MISSING") });
  sources[0]!.readyState = 2;
  sources[0]!.dispatch("error");
  await settle();
  await settle();
  assert.deepEqual(seen, ["sign in"]);
  assert.equal(timers.pending.size, 0);
});
