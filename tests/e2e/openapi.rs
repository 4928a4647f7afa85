//! The OpenAPI document at `GET /api/v1/openapi.json` (issue #14): served
//! as embedded, with caching and the browser headers of every REST answer;
//! valid to a real validator (Python's openapi-spec-validator); complete
//! (every binding, every error reason); true to the server (who may call
//! each operation, which query parameters it reads); and good enough to
//! generate a working client from: openapi-typescript's types and
//! openapi-fetch, checked by `tsc --strict`, run by Node.
//!
//! scripts/test.sh installs the validator into the test venv and the Node
//! project tests/e2e/js/openapi (`npm ci`); a missing tool fails the test
//! with that hint.

use std::{path::PathBuf, process::Command};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

use crate::harness::{self, PATIENCE, SERVICE_KEY, TestServer, get, http, sign_up};

const DOCUMENT: &str = "/api/v1/openapi.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool scripts/test.sh installs.
fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/test.sh`, which installs the OpenAPI test tools",
        path.display()
    );
    path
}

/// Runs a command off the async runtime: its output, and whether it exited 0.
async fn run(mut command: Command) -> (bool, String) {
    let shown = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("cannot run {shown}: {error}"));
    let text = format!(
        "{shown} ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn served(server: &TestServer) -> Value {
    let answer = get(&server.url(DOCUMENT)).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json()
}

#[tokio::test]
async fn the_document_is_served_as_embedded_with_an_etag_and_the_headers_of_rest() {
    let server = TestServer::start().await;
    let answer = http(
        Request::get(server.url(DOCUMENT))
            .header("origin", "http://app.example")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.body, slop_api::rest::OPENAPI_JSON.as_bytes());
    assert_eq!(answer.headers["etag"], slop_api::rest::OPENAPI_ETAG);
    assert_eq!(answer.headers["cache-control"], "no-cache");
    // The layers every REST route has: CORS and the security headers.
    assert_eq!(answer.headers["access-control-allow-origin"], "*");
    assert!(answer.headers.contains_key("content-security-policy"));
    assert!(answer.headers.contains_key("x-request-id"));

    let again = http(
        Request::get(server.url(DOCUMENT))
            .header("if-none-match", slop_api::rest::OPENAPI_ETAG)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.headers["etag"], slop_api::rest::OPENAPI_ETAG);

    let changed = http(
        Request::get(server.url(DOCUMENT))
            .header("if-none-match", "\"an-older-document\"")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK);

    let post = http(
        Request::post(server.url(DOCUMENT))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn openapi_spec_validator_accepts_the_document_and_refuses_a_broken_one() {
    let server = TestServer::start().await;
    let document = served(&server).await;
    let dir = harness::scratch_dir();
    let validator = installed(root().join(".tools/venv/bin/openapi-spec-validator"));

    let good = dir.join("openapi.json");
    std::fs::write(&good, serde_json::to_vec(&document).unwrap()).unwrap();
    let (ok, output) = run({
        let mut command = Command::new(&validator);
        command.arg(&good);
        command
    })
    .await;
    assert!(ok, "the served document is not valid OpenAPI: {output}");

    // The validator does look: a reference to no schema fails it.
    let mut broken = document.clone();
    broken["paths"]["/api/v1/auth/me"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"] = serde_json::json!({"$ref": "#/components/schemas/NoSuchMessage"});
    let bad = dir.join("broken.json");
    std::fs::write(&bad, serde_json::to_vec(&broken).unwrap()).unwrap();
    let (ok, output) = run({
        let mut command = Command::new(&validator);
        command.arg(&bad);
        command
    })
    .await;
    assert!(!ok, "a broken document passed: {output}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The operations of a document: (method, path, operation), upper-case
/// methods.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push((method.to_ascii_uppercase(), path.clone(), operation.clone()));
        }
    }
    operations
}

#[tokio::test]
async fn the_document_has_every_binding_and_every_error_reason() {
    let server = TestServer::start().await;
    let document = served(&server).await;
    let operations = operations(&document);
    for rule in slop_api::rest::HTTP_RULES {
        let (_, _, operation) = operations
            .iter()
            .find(|(method, path, _)| method == rule.method && path == rule.path)
            .unwrap_or_else(|| panic!("{} {} is not in the document", rule.method, rule.path));
        let (service, method) = rule.grpc_path[1..].split_once('/').unwrap();
        let service = service.rsplit('.').next().unwrap();
        assert_eq!(operation["operationId"], format!("{service}_{method}"));
        assert_eq!(operation["tags"][0], service);
        assert!(
            operation["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{rule:?}: no description"
        );
    }
    assert_eq!(operations.len(), slop_api::rest::HTTP_RULES.len());

    let schemas = &document["components"]["schemas"];
    let mut reasons: Vec<&str> = schemas["ErrorReason"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| {
            assert!(value["description"].is_string(), "{value}");
            value["const"].as_str().unwrap()
        })
        .collect();
    reasons.sort_unstable();
    let mut contract: Vec<&str> = (0..)
        .map_while(|n| slop_api::errors::ErrorReason::try_from(n).ok())
        .map(|reason| reason.as_str_name())
        .collect();
    contract.sort_unstable();
    assert_eq!(reasons, contract);
    assert_eq!(
        schemas["ErrorInfo"]["properties"]["reason"]["$ref"],
        "#/components/schemas/ErrorReason"
    );

    // The wire's forms, not the proto's types.
    let event = &schemas["Event"]["properties"];
    assert_eq!(event["offset"]["type"], "string", "uint64");
    assert_eq!(event["time"]["format"], "date-time");
    assert_eq!(event["namespace"]["$ref"], "#/components/schemas/Namespace");
    assert!(event.get("payload").is_some() && event.get("job").is_some());
    assert_eq!(
        schemas["TokenPair"]["properties"]["accessTokenExpiresIn"]["type"], "string",
        "Duration"
    );
    // The stream's limit, as the bridge has it.
    let channel = &document["paths"]["/api/v1/notifications/stream"]["get"]["parameters"][0];
    assert_eq!(channel["name"], "channel");
    let most = format!("at most {}", slop_bridge::sse::MAX_CHANNELS);
    assert!(
        channel["description"].as_str().unwrap().contains(&most),
        "{channel}"
    );
    let security = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    assert_eq!(
        security["sessionCookie"]["name"],
        slop_server::identity::caller::SESSION_COOKIE
    );
    assert_eq!(
        security["csrfToken"]["name"],
        slop_server::identity::caller::CSRF_HEADER
    );
}

/// The credentials of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credentials {
    None,
    AccessToken,
    ServiceKey,
    /// The session cookie without the CSRF header.
    Cookie,
    /// The session cookie with the CSRF header.
    CookieAndCsrf,
}

/// A user's credentials, renewed when a call ends their session.
struct User {
    email: &'static str,
    access_token: String,
    cookie: String,
    csrf: String,
}

impl User {
    async fn new(server: &TestServer) -> Self {
        let email = "openapi@example.com";
        let signed_in = sign_up(server, email).await;
        let mut user = Self {
            email,
            access_token: signed_in.access_token,
            cookie: String::new(),
            csrf: String::new(),
        };
        user.cookie_login(server).await;
        user
    }

    async fn cookie_login(&mut self, server: &TestServer) {
        let answer = crate::harness::rest(
            server,
            "POST",
            "/api/v1/auth/login?cookie=true",
            None,
            serde_json::json!({"email": self.email, "password": crate::harness::PASSWORD}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let mut pairs = Vec::new();
        for value in answer.headers.get_all("set-cookie") {
            let pair = value
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            if let Some(csrf) =
                pair.strip_prefix(&format!("{}=", slop_server::identity::caller::CSRF_COOKIE))
            {
                self.csrf = csrf.to_owned();
            }
            pairs.push(pair);
        }
        self.cookie = pairs.join("; ");
    }

    /// Logs in again where a call (Logout, RevokeOtherSessions) ended a
    /// session.
    async fn renew(&mut self, server: &TestServer) {
        let me = crate::harness::rest(
            server,
            "GET",
            "/api/v1/auth/me",
            Some(&self.access_token),
            Value::Null,
        )
        .await;
        if me.status == StatusCode::UNAUTHORIZED {
            self.access_token = crate::harness::log_in(server, self.email)
                .await
                .access_token;
        }
        let me = crate::harness::rest_with(
            server,
            "GET",
            "/api/v1/auth/me",
            None,
            &[("cookie", self.cookie.as_str())],
            Value::Null,
        )
        .await;
        if me.status == StatusCode::UNAUTHORIZED {
            self.cookie_login(server).await;
        }
    }

    fn headers(&self, credentials: Credentials) -> Vec<(&'static str, String)> {
        match credentials {
            Credentials::None => vec![],
            Credentials::AccessToken => {
                vec![("authorization", format!("Bearer {}", self.access_token))]
            }
            Credentials::ServiceKey => vec![("authorization", format!("Bearer {SERVICE_KEY}"))],
            Credentials::Cookie => vec![("cookie", self.cookie.clone())],
            Credentials::CookieAndCsrf => vec![
                ("cookie", self.cookie.clone()),
                (
                    slop_server::identity::caller::CSRF_HEADER,
                    self.csrf.clone(),
                ),
            ],
        }
    }
}

/// An operation's call with a concrete path (a topic for `{channel}`, `x`
/// for other fields), an empty JSON body where it takes one, and for a
/// stream a topic to follow.
struct Call {
    method: String,
    path: String,
    /// The query sent when the caller gives none.
    query: &'static str,
    body: Option<String>,
    /// A Server-Sent Events stream: its head is the answer.
    streams: bool,
}

impl Call {
    fn of(method: &str, template: &str, operation: &Value) -> Self {
        let path = template
            .split('/')
            .map(|segment| match segment {
                "{channel}" => "topic:news",
                s if s.starts_with('{') => "x",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        let streams = operation["responses"]["200"]["content"]
            .get("text/event-stream")
            .is_some();
        Self {
            method: method.to_owned(),
            path,
            query: if streams { "?channel=topic:news" } else { "" },
            body: operation.get("requestBody").map(|_| "{}".to_owned()),
            streams,
        }
    }

    /// The answer's status and its ErrorInfo reason ("" for none).
    async fn send(
        &self,
        server: &TestServer,
        query: &str,
        headers: &[(&str, String)],
    ) -> (StatusCode, String) {
        let query = if query.is_empty() { self.query } else { query };
        let mut request = Request::builder()
            .method(self.method.as_str())
            .uri(server.url(&format!("{}{query}", self.path)))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let body = Full::new(Bytes::from(self.body.clone().unwrap_or_default()));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let response = tokio::time::timeout(PATIENCE, client.request(request.body(body).unwrap()))
            .await
            .expect("an answer in time")
            .expect("an answer");
        let status = response.status();
        if self.streams && status == StatusCode::OK {
            // The stream opened; it would never end.
            return (status, String::new());
        }
        let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
            .await
            .expect("a body in time")
            .expect("a body")
            .to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reason = json["error"]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|detail| detail["reason"].as_str())
            .unwrap_or_default()
            .to_owned();
        let message = json["error"]["message"].as_str().unwrap_or_default();
        (
            status,
            if reason.is_empty() {
                message.to_owned()
            } else {
                reason
            },
        )
    }
}

/// The reasons that refuse a caller for who they are.
const CALLER_REFUSALS: [&str; 6] = [
    "CREDENTIALS_MISSING",
    "USER_REQUIRED",
    "SERVICE_REQUIRED",
    "CSRF_TOKEN_INVALID",
    "SESSION_ENDED",
    "TOKEN_INVALID",
];

/// Where the server and `document`'s `security` disagree, one line each.
/// Every operation is called with each kind of credentials, and must be
/// refused exactly where the document leaves that caller out: no
/// credentials are CREDENTIALS_MISSING (401) where security is required;
/// an access token or a cookie where only the service key is listed are
/// SERVICE_REQUIRED (403), a service key where only users' schemes are
/// listed USER_REQUIRED; the cookie without the CSRF header is
/// CSRF_TOKEN_INVALID where the cookie is listed only with it. Everything
/// listed gets past authentication (the answer may still refuse the
/// call's data).
async fn security_disagreements(server: &TestServer, document: &Value) -> Vec<String> {
    let mut disagreements = Vec::new();
    let mut user = User::new(server).await;
    for (method, template, operation) in operations(document) {
        let call = Call::of(&method, &template, &operation);
        let Some(alternatives) = operation["security"].as_array() else {
            disagreements.push(format!("{method} {template}: no security"));
            continue;
        };
        let alternatives: Vec<Vec<&String>> = alternatives
            .iter()
            .map(|set| set.as_object().unwrap().keys().collect())
            .collect();
        let listed = |schemes: &[&str]| {
            alternatives.iter().any(|set| {
                set.len() == schemes.len() && schemes.iter().all(|s| set.iter().any(|x| x == s))
            })
        };
        // Needs no credentials at all. (`{}` beside credentials is an
        // alternative to them, checked below.)
        let anonymous = alternatives.is_empty();
        let users = listed(&["accessToken"]);
        let services = listed(&["serviceKey"]);
        let cookie_alone = listed(&["sessionCookie"]);
        let cookie_with_csrf = listed(&["sessionCookie", "csrfToken"]);
        if users != (cookie_alone || cookie_with_csrf) {
            disagreements.push(format!(
                "{method} {template}: access tokens and cookies go together"
            ));
        }

        let expectations = [
            (
                Credentials::None,
                (!anonymous).then_some("CREDENTIALS_MISSING"),
            ),
            (
                Credentials::AccessToken,
                (!anonymous && !users).then_some("SERVICE_REQUIRED"),
            ),
            (
                Credentials::ServiceKey,
                (!anonymous && !services).then_some("USER_REQUIRED"),
            ),
            (
                Credentials::Cookie,
                if anonymous {
                    None
                } else if !users {
                    Some("SERVICE_REQUIRED")
                } else if cookie_alone {
                    None
                } else {
                    Some("CSRF_TOKEN_INVALID")
                },
            ),
            (
                Credentials::CookieAndCsrf,
                (!anonymous && !users).then_some("SERVICE_REQUIRED"),
            ),
        ];
        for (credentials, refusal) in expectations {
            user.renew(server).await;
            let (status, reason) = call.send(server, "", &user.headers(credentials)).await;
            let agrees = match refusal {
                Some(expected) => {
                    let code = if expected == "CREDENTIALS_MISSING" {
                        401
                    } else {
                        403
                    };
                    reason == expected && status.as_u16() == code
                }
                None => !CALLER_REFUSALS.contains(&reason.as_str()),
            };
            if !agrees {
                disagreements.push(format!(
                    "{method} {template} with {credentials:?}: {status} {reason}, expected {}",
                    refusal.unwrap_or("no refusal of the caller")
                ));
            }
        }
        // The anonymous alternative of a call that also takes credentials
        // (Logout): the refresh token in the body stands for them.
        if !anonymous && listed(&[]) {
            let with_token = Call {
                body: Some(r#"{"refreshToken":"not-a-refresh-token"}"#.into()),
                ..call
            };
            let (status, reason) = with_token.send(server, "", &[]).await;
            if (status, reason.as_str()) != (StatusCode::UNAUTHORIZED, "REFRESH_TOKEN_INVALID") {
                disagreements.push(format!(
                    "{method} {template} without credentials but with a refresh token: {status} {reason}"
                ));
            }
        }
    }
    disagreements
}

#[tokio::test]
async fn the_documents_security_is_what_the_server_enforces() {
    let server = TestServer::start().await;
    let document = served(&server).await;
    let disagreements = security_disagreements(&server, &document).await;
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// The check does look: a document that lets services read `me`, and
/// anyone publish, disagrees with the server on both.
#[tokio::test]
async fn a_document_with_the_wrong_security_disagrees_with_the_server() {
    let server = TestServer::start().await;
    let mut document = served(&server).await;
    document["paths"]["/api/v1/auth/me"]["get"]["security"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"serviceKey": []}));
    document["paths"]["/api/v1/notifications"]["post"]["security"] = serde_json::json!([]);
    let disagreements = security_disagreements(&server, &document).await;
    let about = |needle: &str| disagreements.iter().any(|line| line.starts_with(needle));
    assert!(
        about("GET /api/v1/auth/me with ServiceKey: 403 Forbidden USER_REQUIRED"),
        "{disagreements:#?}"
    );
    assert!(
        about("POST /api/v1/notifications with None: 401 Unauthorized CREDENTIALS_MISSING"),
        "{disagreements:#?}"
    );
    // And only on those two.
    assert!(
        disagreements
            .iter()
            .all(|line| line.starts_with("GET /api/v1/auth/me ")
                || line.starts_with("POST /api/v1/notifications ")),
        "{disagreements:#?}"
    );
}

/// A value for a documented query parameter.
fn sample(parameter: &Value, document: &Value) -> String {
    let mut schema = &parameter["schema"];
    if schema["type"] == "array" {
        schema = &schema["items"];
    }
    if let Some(any) = schema["anyOf"].as_array() {
        schema = &any[0];
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        schema = &document["components"]["schemas"][name];
    }
    if let Some(first) = schema["oneOf"].as_array().and_then(|values| values.last()) {
        return first["const"].as_str().unwrap().to_owned();
    }
    match schema["type"].as_str() {
        Some("integer") => "1".into(),
        Some("boolean") => "false".into(),
        _ if schema["pattern"] == "^[0-9]+$" => "0".into(),
        _ => "topic:news".into(),
    }
}

/// Every query parameter the document lists is one its route reads: sent
/// with a value of its schema, none is refused as unknown (routes refuse
/// parameters they do not read, so a misspelt one would be).
#[tokio::test]
async fn the_documented_query_parameters_are_the_ones_the_routes_read() {
    let server = TestServer::start().await;
    let document = served(&server).await;
    let user = User::new(&server).await;
    let mut checked = 0;
    for (method, template, operation) in operations(&document) {
        let parameters: Vec<&Value> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parameter| parameter["in"] == "query")
            .collect();
        if parameters.is_empty() {
            continue;
        }
        let query = parameters
            .iter()
            .map(|parameter| {
                format!(
                    "{}={}",
                    parameter["name"].as_str().unwrap(),
                    sample(parameter, &document)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let call = Call::of(&method, &template, &operation);
        let (status, reason) = call
            .send(
                &server,
                &format!("?{query}"),
                &user.headers(Credentials::AccessToken),
            )
            .await;
        assert!(
            !reason.contains("not a parameter of this route"),
            "{method} {template}?{query}: {status} {reason}"
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} operations have query parameters"
    );
}

/// The command docs/openapi.md shows for generating the types, as it is
/// run here: the server's URL for localhost:3000, the project's installed
/// binary for `npx`.
fn documented_command() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/openapi.md")).unwrap();
    let line = doc
        .lines()
        .find(|line| line.starts_with("npx openapi-typescript "))
        .expect("docs/openapi.md shows `npx openapi-typescript …`");
    line.split_whitespace().skip(2).map(str::to_owned).collect()
}

/// A client generated from the served document: openapi-typescript makes
/// the types from the URL, tsc --strict checks client.ts against them, and
/// Node runs it: register, login, me, sessions, publish, history, and typed
/// errors. docs/openapi.md's example is a part of client.ts.
#[tokio::test]
async fn a_typescript_client_generated_from_the_served_document_works() {
    let server = TestServer::start().await;
    let project = root().join("tests/e2e/js/openapi");
    let bin = project.join("node_modules/.bin");
    let generate = installed(bin.join("openapi-typescript"));
    let tsc = installed(bin.join("tsc"));

    // The docs' example is what runs.
    let doc = std::fs::read_to_string(root().join("docs/openapi.md")).unwrap();
    let client = std::fs::read_to_string(project.join("client.ts")).unwrap();
    let example = doc
        .split("```ts\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/openapi.md has a ```ts example");
    assert!(
        client.contains(example),
        "docs/openapi.md's example is not in tests/e2e/js/openapi/client.ts, which is what runs:\n{example}"
    );

    // Built in a directory of its own, with the project's node_modules.
    let dir = harness::scratch_dir();
    std::os::unix::fs::symlink(project.join("node_modules"), dir.join("node_modules")).unwrap();
    for file in ["client.ts", "tsconfig.json", "package.json"] {
        std::fs::copy(project.join(file), dir.join(file)).unwrap();
    }
    let mut command = Command::new(generate);
    for arg in documented_command() {
        command.arg(arg.replace("http://localhost:3000", &server.url("")));
    }
    command.current_dir(&dir);
    let (ok, output) = run(command).await;
    assert!(ok, "{output}");
    let schema = std::fs::read_to_string(dir.join("schema.d.ts")).unwrap();
    assert!(schema.contains("\"/api/v1/auth/login\""), "{schema}");

    let mut command = Command::new(tsc);
    command
        .args(["--strict", "-p"])
        .arg(dir.join("tsconfig.json"));
    let (ok, output) = run(command).await;
    assert!(ok, "tsc --strict refused the client: {output}");

    let mut command = Command::new("node");
    command
        .arg(dir.join("dist/client.js"))
        .arg(server.url(""))
        .arg(SERVICE_KEY);
    let (ok, output) = run(command).await;
    assert!(ok, "{output}");
    let line = output
        .lines()
        .find(|line| line.starts_with("stdout: "))
        .unwrap()
        .trim_start_matches("stdout: ");
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{output}"));
    assert_eq!(result["ok"], true, "{output}");
    assert_eq!(result["sessions"], 1);
    assert_eq!(result["offset"], "1");
    assert_eq!(result["refused"], "SERVICE_REQUIRED");
    let _ = std::fs::remove_dir_all(dir);
}
