// The page script of the Chromium test (tests/e2e/browser.rs), bundled
// with esbuild (npm run bundle:browser-test): a web app on another origin
// than the API's, signed in by cookie, following the user's channel over
// grpc-web and over the WebSocket with this package. It reports each step
// to its own origin's /report; the test reads the reports.

import { CookieSession, NotificationFeed, NotificationSocket, SlopError, connectWeb } from "../../src/index.js";

declare const SLOP_TEST: { api: string; email: string; password: string };

const report = (step: string, detail: unknown) =>
  fetch("/report", { method: "POST", body: JSON.stringify({ step, detail: String(detail) }) });

async function main(): Promise<void> {
  const { api, email, password } = SLOP_TEST;
  const slop = connectWeb({ baseUrl: api, credentials: new CookieSession() });

  // The REST cookie login: the browser holds the session cookie.
  const login = await slop.logIn(email, password);
  await report("login", login.user?.id);
  // grpc-web by cookie alone (a preflighted cross-origin call).
  const me = await slop.auth.getCurrentUser({});
  await report("me", me.user?.email);

  // Fast back-off: the test restarts the server.
  const backoff = { baseMs: 200, maxMs: 1000 };
  const feed = new NotificationFeed(slop.notifications, { credentials: slop.credentials, backoff });
  feed.on("subscribed", (s, outcome) => void report("grpc-web subscribed", `${s.channel} ${outcome}`));
  feed.on("event", (e) => void report("grpc-web event", `${e.type}@${e.offset}`));
  feed.on("lost", (s) => void report("error", `grpc-web lost events of ${s.channel}`));
  feed.on("disconnected", (d) => void report("grpc-web disconnected", d.recovery.action));
  feed.on("signInRequired", (error) => void report("grpc-web ended", error?.reason));
  feed.start();

  const socket = new NotificationSocket({ url: api, credentials: slop.credentials, backoff });
  socket.on("subscribed", (s, outcome) => void report("ws subscribed", `${s.channel} ${outcome}`));
  socket.on("event", (e) => void report("ws event", `${e.type}@${e.offset}`));
  socket.on("lost", (s) => void report("error", `ws lost events of ${s.channel}`));
  socket.on("disconnected", (d) => void report(d.recovery.action === "signIn" ? "ws ended" : "ws disconnected", d.code));
  socket.start();

  // Asked by the test once both streams have every event.
  await fetch("/next");
  // Without the CSRF header the cookie cannot log out; with it (the
  // package sends it), it can.
  const without = await fetch(`${api}/api/v1/auth/logout`, {
    method: "POST",
    credentials: "include",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  await slop.logOut();
  await report("logout", `${without.status} 200`);
}

main().catch((error: unknown) => {
  const detail = error instanceof SlopError ? `${error.code} ${error.reason ?? ""} ${error.message}` : error;
  void report("error", error instanceof Error && !(error instanceof SlopError) ? error.stack : detail);
});
