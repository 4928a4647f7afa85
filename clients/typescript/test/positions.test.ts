import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { EventSchema, ResumePositions, SubscribedSchema } from "../src/index.js";

test("a channel at offset 0 with no epoch has a position, and it survives saving", () => {
  const positions = new ResumePositions();
  // Canonical JSON and proto3 leave the zero position out entirely.
  const outcome = positions.subscribed(create(SubscribedSchema, { channel: "topic:quiet" }));
  assert.equal(outcome, "live");
  assert.ok(positions.has("topic:quiet"));
  assert.deepEqual(positions.get("topic:quiet"), { offset: 0n, epoch: "" });
  const saved = JSON.parse(JSON.stringify(positions)) as Record<string, { offset: string; epoch: string }>;
  assert.deepEqual(saved, { "topic:quiet": { offset: "0", epoch: "" } });
  assert.deepEqual(ResumePositions.fromJSON(saved).get("topic:quiet"), { offset: 0n, epoch: "" });
});

test("recovered moves nothing, lost and live move to the subscription's position, events move", () => {
  const positions = new ResumePositions();
  positions.set("c", { offset: 4n, epoch: "e1" });
  const at = { offset: 9n, epoch: "e1" };
  assert.equal(positions.subscribed(create(SubscribedSchema, { channel: "c", position: at, wasRecovering: true, recovered: true })), "recovered");
  assert.deepEqual(positions.get("c"), { offset: 4n, epoch: "e1" });
  positions.event(create(EventSchema, { channel: "c", offset: 5n, epoch: "e1" }));
  assert.deepEqual(positions.get("c"), { offset: 5n, epoch: "e1" });
  const lost = create(SubscribedSchema, { channel: "c", position: { offset: 2n, epoch: "e2" }, wasRecovering: true });
  assert.equal(positions.subscribed(lost), "lost");
  assert.deepEqual(positions.get("c"), { offset: 2n, epoch: "e2" });
});
