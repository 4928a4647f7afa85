// Errors as values: every front door of the server answers an error the
// same way (docs/errors.md), a gRPC status code, a message for people, and
// details (google.rpc.ErrorInfo with a reason of slop.errors.v1.ErrorReason
// in the domain "slop.studio", RetryInfo, BadRequest). SlopError is that,
// whichever door it came through: a grpc-web or gRPC call (ConnectError
// with the grpc-status-details-bin trailer), a REST or SSE AIP-193 body, or
// a WebSocket error frame.

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "./gen/slop/errors/v1/errors_pb.js";

/** The domain of every ErrorInfo the server sends. */
export const ERROR_DOMAIN = "slop.studio";

/** A gRPC status code by its canonical name, as the JSON bodies spell it. */
export type StatusCode =
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

// Indexed by the numeric code (connect's Code enum is the gRPC numbering).
const CODE_NAMES: readonly (StatusCode | "OK")[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/**
 * A reason of the contract (`slop.errors.v1.ErrorReason`), as sent on the
 * wire: `"SESSION_ENDED"`, `"TOKEN_EXPIRED"`, …
 */
export type ErrorReasonName = Exclude<keyof typeof ErrorReason, "ERROR_REASON_UNSPECIFIED" | number>;

/** One field of a request that was wrong (google.rpc.BadRequest). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** What a SlopError is made of. */
export interface SlopErrorInit {
  code: StatusCode;
  message: string;
  reason?: string | undefined;
  metadata?: Record<string, string> | undefined;
  retryAfterMs?: number | undefined;
  fieldViolations?: FieldViolation[] | undefined;
  httpStatus?: number | undefined;
  cause?: unknown;
}

/** An error the server answered (or the transport failed with). */
export class SlopError extends Error {
  override readonly name = "SlopError";
  /** The gRPC status code. */
  readonly code: StatusCode;
  /**
   * The ErrorInfo reason in the domain `slop.studio`, when the server gave
   * one: match on this, never on the message. A reason newer than this
   * package is kept as the string it is.
   */
  readonly reason: ErrorReasonName | (string & {}) | undefined;
  /** The ErrorInfo's metadata. */
  readonly metadata: Readonly<Record<string, string>>;
  /** How long to wait before trying again (RetryInfo), when the server said. */
  readonly retryAfterMs: number | undefined;
  /** The request fields that were wrong (BadRequest). */
  readonly fieldViolations: readonly FieldViolation[];
  /** The HTTP status, for errors that came as an AIP-193 body. */
  readonly httpStatus: number | undefined;

  constructor(init: SlopErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = init.code;
    this.reason = init.reason;
    this.metadata = init.metadata ?? {};
    this.retryAfterMs = init.retryAfterMs;
    this.fieldViolations = init.fieldViolations ?? [];
    this.httpStatus = init.httpStatus;
  }

  /** Whether this error has `reason`. */
  is(reason: ErrorReasonName): boolean {
    return this.reason === reason;
  }

  /**
   * Any error as a SlopError: a ConnectError (grpc-web and gRPC calls, with
   * its details), a SlopError as it is, anything else as UNKNOWN.
   */
  static from(error: unknown): SlopError {
    if (error instanceof SlopError) return error;
    const connect = ConnectError.from(error);
    const info = connect.findDetails(ErrorInfoSchema).find((i) => i.domain === ERROR_DOMAIN);
    const retry = connect.findDetails(RetryInfoSchema)[0]?.retryDelay;
    const bad = connect.findDetails(BadRequestSchema)[0];
    return new SlopError({
      code: codeName(connect.code),
      message: connect.rawMessage,
      reason: info?.reason,
      metadata: info?.metadata,
      retryAfterMs:
        retry === undefined ? undefined : Number(retry.seconds) * 1000 + Math.ceil(retry.nanos / 1e6),
      fieldViolations: bad?.fieldViolations.map(({ field, description }) => ({ field, description })),
      cause: error,
    });
  }

  /**
   * An AIP-193 error body (REST answers, the answer to a refused WebSocket
   * upgrade, the final `error` message of an SSE stream):
   * `{"error": {code, message, status, details}}`. A body that is not one
   * gives an error of its HTTP status alone.
   */
  static fromBody(body: unknown, httpStatus?: number): SlopError {
    const error = isObject(body) && isObject(body.error) ? body.error : undefined;
    const status = typeof error?.status === "string" ? error.status : undefined;
    const http = httpStatus ?? (typeof error?.code === "number" ? error.code : undefined);
    return SlopError.fromParts(
      isStatusCode(status) ? status : codeOfHttp(http),
      typeof error?.message === "string" ? error.message : `HTTP ${http ?? "error"}`,
      Array.isArray(error?.details) ? error.details : [],
      http,
    );
  }

  /** A WebSocket `error` frame: `{code, message, details}`. */
  static fromFrame(frame: { code?: unknown; message?: unknown; details?: unknown }): SlopError {
    return SlopError.fromParts(
      isStatusCode(frame.code) ? frame.code : "UNKNOWN",
      typeof frame.message === "string" ? frame.message : "",
      Array.isArray(frame.details) ? frame.details : [],
      undefined,
    );
  }

  private static fromParts(
    code: StatusCode,
    message: string,
    details: unknown[],
    httpStatus: number | undefined,
  ): SlopError {
    let reason: string | undefined;
    let metadata: Record<string, string> | undefined;
    let retryAfterMs: number | undefined;
    let fieldViolations: FieldViolation[] | undefined;
    for (const detail of details) {
      if (!isObject(detail)) continue;
      const type = String(detail["@type"] ?? "");
      if (type.endsWith("/google.rpc.ErrorInfo") && detail.domain === ERROR_DOMAIN) {
        reason = typeof detail.reason === "string" ? detail.reason : undefined;
        metadata = isObject(detail.metadata) ? (detail.metadata as Record<string, string>) : undefined;
      } else if (type.endsWith("/google.rpc.RetryInfo") && typeof detail.retryDelay === "string") {
        retryAfterMs = durationMs(detail.retryDelay);
      } else if (type.endsWith("/google.rpc.BadRequest") && Array.isArray(detail.fieldViolations)) {
        fieldViolations = detail.fieldViolations.filter(isObject).map((v) => ({
          field: String(v.field ?? ""),
          description: String(v.description ?? ""),
        }));
      }
    }
    return new SlopError({ code, message, reason, metadata, retryAfterMs, fieldViolations, httpStatus });
  }
}

/** The canonical name of a connect `Code`. */
export function codeName(code: Code): StatusCode {
  const name = CODE_NAMES[code];
  return name === undefined || name === "OK" ? "UNKNOWN" : name;
}

function isStatusCode(value: unknown): value is StatusCode {
  return typeof value === "string" && value !== "OK" && (CODE_NAMES as readonly string[]).includes(value);
}

// grpc-gateway's mapping back, for bodies that have no `status`.
function codeOfHttp(status: number | undefined): StatusCode {
  switch (status) {
    case 400:
      return "INVALID_ARGUMENT";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 404:
      return "NOT_FOUND";
    case 409:
      return "ALREADY_EXISTS";
    case 429:
      return "RESOURCE_EXHAUSTED";
    case 501:
      return "UNIMPLEMENTED";
    case 503:
      return "UNAVAILABLE";
    case 504:
      return "DEADLINE_EXCEEDED";
    default:
      return status !== undefined && status >= 500 ? "INTERNAL" : "UNKNOWN";
  }
}

/** A proto3 JSON Duration ("1.500s") in milliseconds, rounded up. */
function durationMs(text: string): number | undefined {
  const match = /^(\d+)(?:\.(\d{1,9}))?s$/.exec(text);
  if (!match) return undefined;
  const nanos = Number((match[2] ?? "").padEnd(9, "0"));
  return Number(match[1]) * 1000 + Math.ceil(nanos / 1e6);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
