// A client generated from the served OpenAPI document: openapi-typescript
// wrote schema.d.ts from GET /api/v1/openapi.json, openapi-fetch makes the
// calls, and tsc --strict checks this file against those types. Run by
// tests/e2e/openapi.rs as `node dist/client.js <base URL> <service key>`;
// it prints one JSON line and exits non-zero on any failed check.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type ErrorBody = components["schemas"]["Error"];
type ErrorReason = components["schemas"]["ErrorReason"];

const [baseUrl, serviceKey] = process.argv.slice(2);
if (baseUrl === undefined || serviceKey === undefined) {
  throw new Error("usage: node dist/client.js <base URL> <service key>");
}

function check(condition: boolean, what: string, seen?: unknown): asserts condition {
  if (!condition) {
    throw new Error(`${what}: ${JSON.stringify(seen)}`);
  }
}

/** The reason of an error body's google.rpc.ErrorInfo, typed by the contract. */
function reasonOf(body: ErrorBody | undefined): ErrorReason | undefined {
  for (const detail of body?.error.details ?? []) {
    if (detail["@type"] === "type.googleapis.com/google.rpc.ErrorInfo") {
      return detail.reason;
    }
  }
  return undefined;
}

// --- the documentation's example (docs/openapi.md) --------------------------
const api = createClient<paths>({ baseUrl });

const email = `openapi-${Date.now()}@example.com`;
const password = "correct horse battery staple";
await api.POST("/api/v1/auth/register", {
  body: { email, password, displayName: "Ada" },
});
const { data: login, error } = await api.POST("/api/v1/auth/login", {
  body: { email, password },
});
if (error) {
  throw new Error(`login refused: ${reasonOf(error)}`);
}
const auth = { Authorization: `Bearer ${login.tokens?.accessToken}` };
const { data: me } = await api.GET("/api/v1/auth/me", { headers: auth });
console.error(`signed in as ${me?.user?.displayName}`);
// --- end of the example ------------------------------------------------------

check(login.sessionId !== undefined && login.user?.email === email, "login", login);
check(login.tokens?.tokenType === "Bearer", "token type", login.tokens);
// A Duration is a string of seconds.
const expiresIn: string | undefined = login.tokens?.accessTokenExpiresIn;
check(/^[0-9]+(\.[0-9]+)?s$/.test(expiresIn ?? ""), "access token lifetime", expiresIn);
check(me?.user?.email === email && me.user.id === login.user.id, "me", me);
// A Timestamp is an RFC 3339 string.
const created: string | undefined = me.user.createTime;
check(created !== undefined && !Number.isNaN(Date.parse(created)), "createTime", created);

const sessions = await api.GET("/api/v1/sessions", {
  headers: auth,
  params: { query: { page_size: 10 } },
});
const listed = sessions.data?.sessions ?? [];
check(sessions.response.status === 200 && listed.length === 1, "sessions", sessions.data);
check(listed[0]?.id === login.sessionId && listed[0]?.current === true, "current session", listed);
check(sessions.data?.totalSize === 1, "totalSize", sessions.data);

const channel = `user:${login.user.id}`;
const published = await api.POST("/api/v1/notifications", {
  headers: { Authorization: `Bearer ${serviceKey}` },
  body: {
    channels: [channel],
    namespace: "NAMESPACE_NOTIFICATIONS",
    type: "openapi.hello",
    payload: { text: "hello from openapi-fetch", n: 1 },
  },
});
const landed = published.data?.events?.[0];
// A uint64 is a decimal string.
const offset: string | undefined = landed?.position?.offset;
check(landed?.channel === channel && offset === "1", "publish", published.data);

const history = await api.GET("/api/v1/notifications/channels/{channel}/events", {
  headers: auth,
  params: { path: { channel }, query: { namespaces: ["NAMESPACE_NOTIFICATIONS"] } },
});
const event = history.data?.events?.[0];
check(event?.type === "openapi.hello" && event.offset === offset, "history", history.data);
check(event.payload?.["text"] === "hello from openapi-fetch", "payload", event.payload);

// Errors are typed too: a user may not publish.
const refused = await api.POST("/api/v1/notifications", {
  headers: auth,
  body: { channels: [channel], type: "openapi.nope" },
});
check(refused.response.status === 403, "publish as a user", refused.error);
check(reasonOf(refused.error) === "SERVICE_REQUIRED", "reason", refused.error);
check(refused.error?.error.status === "PERMISSION_DENIED", "status", refused.error);

// And no credentials at all.
const anonymous = await api.GET("/api/v1/auth/me");
check(anonymous.response.status === 401, "me without credentials", anonymous.error);
check(reasonOf(anonymous.error) === "CREDENTIALS_MISSING", "reason", anonymous.error);

console.log(
  JSON.stringify({
    ok: true,
    user: me.user.id,
    sessions: listed.length,
    offset,
    refused: reasonOf(refused.error),
  }),
);
