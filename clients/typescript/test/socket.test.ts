import assert from "node:assert/strict";
import { test } from "node:test";
import { BearerSession, CookieSession, NotificationSocket, type Event, type Subscribed } from "../src/index.js";
import { FakeTimers, settle, socketFactory } from "./fakes.js";

const USER = "7f3a";
const OWN = `user:${USER}`;

function setUp(options: { credentials?: BearerSession | CookieSession; channels?: string[]; random?: () => number } = {}) {
  const timers = new FakeTimers();
  const factory = socketFactory();
  const socket = new NotificationSocket({
    url: "https://api.example.com/",
    credentials: options.credentials ?? new BearerSession({ accessToken: "a1", refreshToken: "r1" }),
    channels: options.channels ?? [],
    webSocket: factory.open,
    timers,
    backoff: { baseMs: 1000, maxMs: 30_000, random: options.random ?? (() => 0.5) },
  });
  const seen = {
    events: [] as Event[],
    lost: [] as Subscribed[],
    signIn: 0,
    stopped: 0,
    disconnects: [] as { action: string; retryInMs?: number | undefined; code?: number | undefined }[],
  };
  socket.on("event", (event) => seen.events.push(event));
  socket.on("lost", (subscribed) => seen.lost.push(subscribed));
  socket.on("signInRequired", () => seen.signIn++);
  socket.on("stopped", () => seen.stopped++);
  socket.on("disconnected", (d) => seen.disconnects.push({ action: d.recovery.action, retryInMs: d.retryInMs, code: d.code }));
  socket.start();
  return { socket, timers, factory, seen };
}

const welcome = { type: "welcome", userId: USER, sessionId: "s1" };
const event = (channel: string, offset: number, epoch = "e1", id?: string) => ({
  type: "event",
  ...(id ? { id } : {}),
  event: { channel, namespace: "NAMESPACE_NOTIFICATIONS", offset: String(offset), epoch, type: "t", payload: {} },
});

test("signs in with an auth frame first, and the own channel comes without asking", () => {
  const { factory, seen, socket } = setUp({ channels: ["topic:news"] });
  const ws = factory.last();
  assert.equal(ws.url, "wss://api.example.com/api/v1/ws");
  ws.open();
  assert.deepEqual(ws.sent[0], { type: "auth", token: "a1" });
  ws.receive(welcome);
  // No position yet: the automatic subscription stays; the topic is asked for.
  assert.deepEqual(ws.frames("subscribe"), [{ type: "subscribe", id: "c0", channel: "topic:news" }]);
  ws.receive({ type: "subscribed", subscribed: { channel: OWN, position: { offset: "41", epoch: "e1" } } });
  ws.receive(event(OWN, 42));
  assert.equal(seen.events.length, 1);
  assert.equal(seen.events[0]!.offset, 42n);
  assert.deepEqual(socket.positions.get(OWN), { offset: 42n, epoch: "e1" });
});

test("a cookie socket sends no auth frame", () => {
  const { factory } = setUp({ credentials: new CookieSession(() => "csrf") });
  const ws = factory.last();
  ws.open();
  assert.equal(ws.sent.length, 0);
  ws.receive(welcome);
  assert.equal(ws.sent.length, 0);
});

test("reconnects with jittered back-off and resumes every channel, offset 0 included", () => {
  const { factory, timers, seen, socket } = setUp({ channels: ["topic:quiet"], random: () => 0.5 });
  let ws = factory.last();
  ws.open();
  ws.receive(welcome);
  ws.receive({ type: "subscribed", subscribed: { channel: OWN, position: { offset: "3", epoch: "e1" } } });
  // Nobody has published to the topic: its position is {}, offset 0.
  ws.receive({ type: "subscribed", id: "c0", subscribed: { channel: "topic:quiet", position: {} } });
  ws.receive(event(OWN, 4));

  ws.serverClose(1001, "server shutting down");
  assert.deepEqual(timers.delays(), [500]); // 0.5 × 1000
  assert.equal(seen.disconnects[0]!.action, "retry");
  timers.fire();
  ws = factory.last();
  assert.equal(factory.sockets.length, 2);
  ws.open();
  ws.receive(welcome);
  assert.deepEqual(ws.frames("subscribe"), [
    { type: "subscribe", id: "own", channel: OWN, resumeFrom: { offset: "4", epoch: "e1" } },
    { type: "subscribe", id: "c0", channel: "topic:quiet", resumeFrom: { offset: "0", epoch: "" } },
  ]);
  // The automatic subscription's frames are left to the resuming one.
  ws.receive({ type: "subscribed", subscribed: { channel: OWN, position: { offset: "6", epoch: "e1" } } });
  ws.receive(event(OWN, 6));
  assert.equal(seen.events.length, 1);
  ws.receive({
    type: "subscribed",
    id: "own",
    subscribed: { channel: OWN, position: { offset: "6", epoch: "e1" }, wasRecovering: true, recovered: true },
  });
  ws.receive(event(OWN, 5, "e1", "own"));
  ws.receive(event(OWN, 6, "e1", "own"));
  ws.receive(event("topic:quiet", 1, "q1", "c0"));
  assert.deepEqual(
    seen.events.map((e) => `${e.channel}#${e.offset}`),
    [`${OWN}#4`, `${OWN}#5`, `${OWN}#6`, "topic:quiet#1"],
  );
  assert.deepEqual(seen.lost, []);
  assert.deepEqual(socket.positions.get("topic:quiet"), { offset: 1n, epoch: "q1" });
});

test("back-off grows while connections fail and starts over once one works", () => {
  const { factory, timers } = setUp({ random: () => 0.999 });
  const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000];
  for (const ceiling of ceilings) {
    factory.last().serverClose(1006);
    const [delay] = timers.delays();
    assert.ok(delay! < ceiling && delay! >= 0.999 * ceiling - 1, `${delay} for ${ceiling}`);
    timers.fire();
  }
  const ws = factory.last();
  ws.open();
  ws.receive(welcome);
  ws.receive({ type: "subscribed", subscribed: { channel: OWN } });
  ws.serverClose(1013);
  assert.ok(timers.delays()[0]! < 1000);
});

test("recovered: false is surfaced, at a resume and mid-stream", () => {
  const { factory, timers, seen, socket } = setUp();
  let ws = factory.last();
  ws.open();
  ws.receive(welcome);
  ws.receive({ type: "subscribed", subscribed: { channel: OWN, position: { offset: "10", epoch: "e1" } } });
  ws.serverClose(1006);
  timers.fire();
  ws = factory.last();
  ws.open();
  ws.receive(welcome);
  ws.receive({
    type: "subscribed",
    id: "own",
    subscribed: { channel: OWN, position: { offset: "2", epoch: "e2" }, wasRecovering: true },
  });
  assert.equal(seen.lost.length, 1);
  assert.equal(seen.lost[0]!.channel, OWN);
  assert.deepEqual(socket.positions.get(OWN), { offset: 2n, epoch: "e2" });
  ws.receive({
    type: "subscribed",
    id: "own",
    subscribed: { channel: OWN, position: { offset: "9", epoch: "e3" }, wasRecovering: true, recovered: false },
  });
  assert.equal(seen.lost.length, 2);
  assert.deepEqual(socket.positions.get(OWN), { offset: 9n, epoch: "e3" });
});

test("a channel followed before but never positioned is reported lost", () => {
  const { factory, timers, seen } = setUp();
  let ws = factory.last();
  ws.open();
  ws.receive(welcome);
  ws.serverClose(1006); // before its subscribed frame
  timers.fire();
  ws = factory.last();
  ws.open();
  ws.receive(welcome);
  assert.deepEqual(ws.frames("subscribe"), []);
  ws.receive({ type: "subscribed", subscribed: { channel: OWN, position: { offset: "7", epoch: "e1" } } });
  assert.equal(seen.lost.length, 1);
});

test("4410 asks to sign in again and stops; 4403 stops", () => {
  for (const [code, signIn] of [
    [4410, 1],
    [4403, 0],
  ] as const) {
    const { factory, timers, seen } = setUp();
    factory.last().serverClose(code);
    assert.equal(timers.pending.size, 0, `${code}: no reconnect`);
    assert.equal(seen.signIn, signIn);
    assert.equal(seen.stopped, 1);
  }
});

test("4429 waits at least what the close reason says", () => {
  const { factory, timers } = setUp({ random: () => 0.1 });
  factory.last().serverClose(4429, "rate limited; retry in 7 s");
  assert.deepEqual(timers.delays(), [7000]);
});

test("4401 refreshes the token and reconnects; refused again, it asks to sign in", async () => {
  let refreshes = 0;
  const credentials = new BearerSession({ accessToken: "old", refreshToken: "r" }, async () => {
    refreshes++;
    return { accessToken: `new${refreshes}`, refreshToken: "r2" };
  });
  const { factory, timers, seen } = setUp({ credentials });
  factory.last().open();
  factory.last().serverClose(4401, "unauthenticated");
  await settle();
  assert.equal(refreshes, 1);
  timers.fire();
  const ws = factory.last();
  ws.open();
  assert.deepEqual(ws.sent[0], { type: "auth", token: "new1" });
  ws.serverClose(4401, "unauthenticated");
  await settle();
  assert.equal(refreshes, 1);
  assert.equal(seen.signIn, 1);
  assert.equal(timers.pending.size, 0);
});

test("a renewed token goes to the server; an expired one on subscribe is renewed and the subscribe sent again", async () => {
  const credentials = new BearerSession({ accessToken: "a1", refreshToken: "r" }, async () => ({ accessToken: "a2" }));
  const { factory } = setUp({ credentials, channels: ["topic:news"] });
  const ws = factory.last();
  ws.open();
  ws.receive(welcome);
  ws.receive({
    type: "error",
    id: "c0",
    code: "UNAUTHENTICATED",
    message: "the access token has expired: refresh it",
    details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "TOKEN_EXPIRED", domain: "slop.studio" }],
  });
  await settle();
  assert.deepEqual(ws.sent.slice(2), [
    { type: "auth", token: "a2" },
    { type: "subscribe", id: "c0", channel: "topic:news" },
  ]);
});

test("close() ends the socket and every timer", () => {
  const { factory, timers, socket, seen } = setUp();
  factory.last().serverClose(1006);
  socket.close();
  assert.equal(timers.pending.size, 0);
  assert.equal(seen.stopped, 1);
});
