import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, recoveryFromClose, recoveryFromError, SlopError } from "../src/index.js";

test("full jitter: every wait is uniform in [0, min(max, base·2ⁿ))", () => {
  const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000];
  for (const r of [0, 0.25, 0.999999]) {
    const backoff = new Backoff({ baseMs: 1000, maxMs: 30_000, random: () => r });
    for (const ceiling of ceilings) {
      const wait = backoff.next();
      assert.equal(wait, r * ceiling);
      assert.ok(wait >= 0 && wait < ceiling);
    }
  }
});

test("with Math.random the waits stay within their bounds and are not all alike", () => {
  const waits = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const backoff = new Backoff({ baseMs: 100, maxMs: 800 });
    for (const ceiling of [100, 200, 400, 800, 800]) {
      const wait = backoff.next();
      assert.ok(wait >= 0 && wait < ceiling, `${wait} < ${ceiling}`);
      waits.add(Math.floor(wait / 10));
    }
  }
  assert.ok(waits.size > 20, "jittered waits spread out");
});

test("a wait is never shorter than the server asked, and reset starts over", () => {
  const backoff = new Backoff({ baseMs: 1000, random: () => 0.5 });
  assert.equal(backoff.next(7000), 7000);
  assert.equal(backoff.next(), 1000);
  assert.equal(backoff.attempt, 2);
  backoff.reset();
  assert.equal(backoff.next(), 500);
});

test("close codes say what to do", () => {
  const cases: [number, string, string][] = [
    [1001, "server shutting down", "retry"],
    [1006, "", "retry"],
    [1011, "internal error", "retry"],
    [1013, "unavailable; try again later", "retry"],
    [4408, "slow consumer", "retry"],
    [4429, "rate limited; retry in 12 s", "retry"],
    [4401, "unauthenticated", "refresh"],
    [4410, "session ended", "signIn"],
    [4403, "permission denied", "stop"],
    [1003, "send JSON text frames", "stop"],
    [1009, "frames are at most 64 KiB", "stop"],
  ];
  for (const [code, reason, action] of cases) {
    assert.equal(recoveryFromClose(code, reason).action, action, `${code}`);
  }
  assert.deepEqual(recoveryFromClose(4429, "rate limited; retry in 12 s"), { action: "retry", retryAfterMs: 12_000 });
  assert.deepEqual(recoveryFromClose(4429, "rate limited"), { action: "retry", retryAfterMs: 30_000 });
});

test("errors that end a stream say what to do", () => {
  const error = (code: SlopError["code"], reason?: string, retryAfterMs?: number) =>
    new SlopError({ code, message: "", reason, retryAfterMs });
  assert.equal(recoveryFromError(error("UNAUTHENTICATED", "SESSION_ENDED")).action, "signIn");
  assert.equal(recoveryFromError(error("UNAUTHENTICATED", "TOKEN_EXPIRED")).action, "refresh");
  assert.equal(recoveryFromError(error("PERMISSION_DENIED", "CHANNEL_FORBIDDEN")).action, "stop");
  assert.equal(recoveryFromError(error("UNAVAILABLE")).action, "retry");
  assert.deepEqual(recoveryFromError(error("RESOURCE_EXHAUSTED", "RATE_LIMITED", 30_000)), {
    action: "retry",
    retryAfterMs: 30_000,
  });
});
