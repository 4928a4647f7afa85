import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { SlopError } from "../src/index.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";

test("a grpc-web or gRPC error keeps its code, reason, retry delay and field violations", () => {
  const connect = new ConnectError("too many new streams", Code.ResourceExhausted, undefined, [
    { desc: ErrorInfoSchema, value: { reason: "RATE_LIMITED", domain: "slop.studio", metadata: { limit: "10" } } },
    { desc: RetryInfoSchema, value: { retryDelay: create(DurationSchema, { seconds: 2n, nanos: 500_000_000 }) } },
    { desc: BadRequestSchema, value: { fieldViolations: [{ field: "channels[0]", description: "bad" }] } },
  ]);
  const error = SlopError.from(connect);
  assert.equal(error.code, "RESOURCE_EXHAUSTED");
  assert.equal(error.reason, "RATE_LIMITED");
  assert.ok(error.is("RATE_LIMITED"));
  assert.equal(error.message, "too many new streams");
  assert.deepEqual(error.metadata, { limit: "10" });
  assert.equal(error.retryAfterMs, 2500);
  assert.deepEqual(error.fieldViolations, [{ field: "channels[0]", description: "bad" }]);
});

test("a reason of another domain is not the contract's", () => {
  const connect = new ConnectError("x", Code.Unauthenticated, undefined, [
    { desc: ErrorInfoSchema, value: { reason: "SESSION_ENDED", domain: "example.com" } },
  ]);
  assert.equal(SlopError.from(connect).reason, undefined);
  assert.equal(SlopError.from(new Error("network down")).code, "UNKNOWN");
});

test("an AIP-193 body, as REST and SSE send it", () => {
  const error = SlopError.fromBody(
    {
      error: {
        code: 401,
        message: "the session has ended (logged out, revoked or expired): log in again",
        status: "UNAUTHENTICATED",
        details: [
          { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "SESSION_ENDED", domain: "slop.studio", metadata: {} },
          { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "30.000000000s" },
        ],
      },
    },
    401,
  );
  assert.equal(error.code, "UNAUTHENTICATED");
  assert.equal(error.reason, "SESSION_ENDED");
  assert.equal(error.httpStatus, 401);
  assert.equal(error.retryAfterMs, 30_000);
  assert.equal(SlopError.fromBody("<html>", 503).code, "UNAVAILABLE");
});

test("a WebSocket error frame", () => {
  const error = SlopError.fromFrame({
    type: "error",
    id: "spy",
    code: "PERMISSION_DENIED",
    message: "not yours",
    details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "CHANNEL_FORBIDDEN", domain: "slop.studio" }],
  } as { code: unknown; message: unknown; details: unknown });
  assert.equal(error.code, "PERMISSION_DENIED");
  assert.equal(error.reason, "CHANNEL_FORBIDDEN");
});
