// A Node backend using this package as an app that installed it would:
// by its name, "@slop-studios/client/node", which Node and tsc resolve
// through package.json's "exports" to the BUILT package (dist/ and its
// declarations), not to src/. So `npm run build` must come first
// (`npm run check` does that). tests/e2e/node_client.rs runs it against a
// real server over native gRPC (HTTP/2) and asserts on what it prints: one
// JSON line per step, `{"step": "<name>", ...}`, or `{"step": "error"}`
// and exit status 1. It reads `expired` on stdin when the test has moved
// the server's clock past the access token's lifetime.
//
// Settings, from the environment: SLOP_API (http://host:port), SLOP_EMAIL,
// SLOP_PASSWORD, SLOP_SERVICE_KEY (a key of SERVICE_KEYS, to publish; never
// printed).

import { createInterface } from "node:readline";
import {
  BearerSession,
  NotificationFeed,
  SlopError,
  connectNode,
  type FeedEvents,
} from "@slop-studios/client/node";

/** How long any one step may take before the program gives up. */
const PATIENCE_MS = 10_000;

function setting(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function step(name: string, detail: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ step: name, ...detail })}\n`);
}

/** `promise`, or a failure naming `what` after PATIENCE_MS. */
function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${PATIENCE_MS} ms`)), PATIENCE_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** The next `name` the feed reports (listen before causing it). */
function next<K extends keyof FeedEvents>(feed: NotificationFeed, name: K): Promise<FeedEvents[K]> {
  return new Promise((resolve) => {
    const stop = feed.on(name, (...args) => {
      stop();
      resolve(args as unknown as FeedEvents[K]);
    });
  });
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Waits for the test to write `word` on stdin. */
async function told(word: string): Promise<void> {
  const line = await lines.next();
  if (line.done || line.value.trim() !== word) {
    throw new Error(`expected ${JSON.stringify(word)} on stdin, got ${line.done ? "its end" : JSON.stringify(line.value)}`);
  }
}

async function main(): Promise<void> {
  const baseUrl = setting("SLOP_API");
  const email = setting("SLOP_EMAIL");
  const password = setting("SLOP_PASSWORD");
  const serviceKey = setting("SLOP_SERVICE_KEY");

  // Public calls need no credentials.
  const anonymous = connectNode({ baseUrl });
  await anonymous.auth.register({ email, password, displayName: "Node" });
  step("register");

  const tokens = new BearerSession();
  let renewals = 0;
  tokens.onChange((changed) => {
    if (changed) renewals += 1;
  });
  const slop = connectNode({ baseUrl, credentials: tokens });

  try {
    await slop.logIn(email, `${password} but wrong`);
    throw new Error("a wrong password was accepted");
  } catch (caught) {
    if (!(caught instanceof SlopError)) throw caught;
    step("refused login", { code: caught.code, reason: caught.reason, signedIn: tokens.accessToken !== undefined });
  }

  const login = await slop.logIn(email, password);
  step("login", { userId: login.user?.id, sessionId: login.sessionId, canRefresh: tokens.canRefresh });
  renewals = 0;

  const me = await slop.auth.getCurrentUser({});
  step("current user", { email: me.user?.email });

  const { sessions } = await slop.sessions.listSessions({});
  step("sessions", { ids: sessions.map((s) => s.id), current: sessions.filter((s) => s.current).map((s) => s.id) });

  // The user's own channel over Subscribe; anything the feed says that the
  // steps below do not wait for is printed, so the test sees it out of turn.
  const feed = new NotificationFeed(slop.notifications, { credentials: tokens, backoff: { baseMs: 200, maxMs: 1000 } });
  feed.on("lost", (s) => step("feed lost", { channel: s.channel }));
  let stopped = false;
  feed.on("stopped", () => (stopped = true));
  // The end of the session is the one disconnect expected (see below).
  feed.on("disconnected", (d) => {
    if (d.recovery.action !== "signIn") step("feed disconnected", { action: d.recovery.action, reason: d.error?.reason });
  });
  const subscribed = next(feed, "subscribed");
  feed.start();
  const [own, outcome] = await within("subscribed", subscribed);
  step("subscribed", { channel: own.channel, outcome });

  // A backend service publishes to the user's channel with its key.
  const service = connectNode({ baseUrl, credentials: new BearerSession({ accessToken: serviceKey }) });
  async function publish(type: string): Promise<void> {
    const delivered = next(feed, "event");
    const answer = await service.notifications.publish({ channels: [own.channel], type, payload: { from: "node" } });
    const position = answer.events[0]?.position;
    step("published", { channel: answer.events[0]?.channel, offset: String(position?.offset) });
    const [event] = await within(`event ${type}`, delivered);
    step("event", { channel: event.channel, type: event.type, offset: String(event.offset), payload: event.payload });
  }
  await publish("node.hello");

  // The test moves the server's clock past the access token's lifetime: the
  // next call is refused with TOKEN_EXPIRED, the session renews the token
  // with its refresh token, and the call goes through.
  const expired = tokens.accessToken;
  step("expire the access token");
  await told("expired");
  const again = await slop.auth.getCurrentUser({});
  step("after expiry", { email: again.user?.email, renewals, newToken: tokens.accessToken !== expired });
  // The feed opened before is still following the channel.
  await publish("node.renewed");

  // Logging out ends the session, and with it the feed: sign in again.
  const ended = next(feed, "signInRequired");
  await slop.logOut();
  step("logged out", { signedIn: tokens.accessToken !== undefined });
  const [why] = await within("signInRequired", ended);
  step("feed ended", { code: why?.code, reason: why?.reason, stopped });
}

main().then(
  () => {
    step("done");
    // The HTTP/2 sessions would keep Node alive for their idle timeout.
    process.exit(0);
  },
  (error: unknown) => {
    // A refused call (SlopError, or the ConnectError of a raw service
    // call) with its code and reason; anything else with its stack.
    const refused = SlopError.from(error);
    step("error", {
      code: refused.code,
      reason: refused.reason,
      message: error instanceof Error ? (error.stack ?? error.message) : String(error),
    });
    process.exit(1);
  },
);
