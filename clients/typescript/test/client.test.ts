import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import {
  AuthService,
  BearerSession,
  CookieSession,
  createSlopClient,
  interceptorsFor,
  readCookie,
  SlopError,
} from "../src/index.js";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";

test("the package version is the Cargo workspace version", () => {
  const root = new URL("../../../../", import.meta.url);
  const cargo = readFileSync(new URL("Cargo.toml", root), "utf8");
  const workspace = /\[workspace\.package\][^[]*?\nversion\s*=\s*"([^"]+)"/.exec(cargo)?.[1];
  const pkg = JSON.parse(readFileSync(new URL("clients/typescript/package.json", root), "utf8")) as { version: string };
  assert.ok(workspace, "Cargo.toml has [workspace.package] version");
  assert.equal(pkg.version, workspace);
});

test("bearer: every call carries the token; an expired one is renewed once and the call sent again", async () => {
  const seen: string[] = [];
  const credentials = new BearerSession({ accessToken: "old", refreshToken: "r1" });
  const transport = createRouterTransport(
    ({ service }) => {
      service(AuthService, {
        getCurrentUser(_request, context) {
          const authorization = context.requestHeader.get("authorization") ?? "";
          seen.push(authorization);
          if (authorization !== "Bearer new") {
            throw new ConnectError("the access token has expired: refresh it", Code.Unauthenticated, undefined, [
              { desc: ErrorInfoSchema, value: { reason: "TOKEN_EXPIRED", domain: "slop.studio" } },
            ]);
          }
          return { user: { id: "u1", email: "ada@example.com" } };
        },
        refreshToken(request) {
          seen.push(`refresh ${request.refreshToken}`);
          return { tokens: { accessToken: "new", refreshToken: "r2" }, sessionId: "s" };
        },
      });
    },
    { transport: { interceptors: interceptorsFor(credentials) } },
  );
  const slop = createSlopClient({ baseUrl: "http://x", transport, credentials });
  const me = await slop.auth.getCurrentUser({});
  assert.equal(me.user?.email, "ada@example.com");
  assert.deepEqual(seen, ["Bearer old", "refresh r1", "Bearer new"]);
});

test("cookie: calls carry the CSRF token; login and logout are the REST cookie routes", async () => {
  const calls: { url: string; init: RequestInit }[] = [];
  const credentials = new CookieSession(() => "csrf-1");
  const transport = createRouterTransport(() => {}, { transport: { interceptors: interceptorsFor(credentials) } });
  const slop = createSlopClient({
    baseUrl: "http://api/",
    transport,
    credentials,
    fetch: async (url, init) => {
      calls.push({ url: String(url), init: init ?? {} });
      if (String(url).includes("logout")) {
        return new Response(
          JSON.stringify({ error: { code: 403, status: "PERMISSION_DENIED", message: "csrf", details: [
            { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "CSRF_TOKEN_INVALID", domain: "slop.studio" },
          ] } }),
          { status: 403 },
        );
      }
      return new Response(JSON.stringify({ sessionId: "s1", user: { id: "u1", email: "a@b" }, tokens: { accessToken: "t" } }));
    },
  });
  const login = await slop.logIn("a@b", "pw", { accessToken: true });
  assert.equal(login.user?.id, "u1");
  assert.equal(login.tokens?.accessToken, "t");
  assert.equal(calls[0]!.url, "http://api/api/v1/auth/login?cookie=true&access_token=true");
  assert.equal(calls[0]!.init.credentials, "include");
  await assert.rejects(slop.logOut(), (error: unknown) => error instanceof SlopError && error.reason === "CSRF_TOKEN_INVALID");
  assert.equal((calls[1]!.init.headers as Record<string, string>)["x-csrf-token"], "csrf-1");
});

test("the CSRF cookie is read from document.cookie", () => {
  assert.equal(readCookie("slop_csrf", "a=1; slop_csrf=abc%3D; b=2"), "abc=");
  assert.equal(readCookie("slop_csrf", "a=1"), undefined);
});
