//! The OpenAPI 3.1 document of the REST bridge, made by build.rs from the
//! contract's descriptors and its `google.api.http` bindings. Compiled into
//! the build script (`#[path]`), not into the crate; the crate embeds its
//! output (`slop_api::rest::OPENAPI_JSON`) and the bridge serves it at
//! `GET /api/v1/openapi.json`.
//!
//! The document describes the wire as the bridge writes it, not an ideal:
//! bodies are pbjson's canonical proto3 JSON (lowerCamelCase names, 64-bit
//! integers as strings, enums by name, `Timestamp` as an RFC 3339 string
//! with a `+00:00` offset, `Duration` as `"<seconds>s"`, default values left
//! out of answers); errors are the AIP-193 body of bridge/src/error.rs; the
//! query of a GET or DELETE spells fields as the bridge reads them (proto
//! names, a message field's fields as `<field>_<subfield>`); and what the
//! bridge adds to a binding (login's `?cookie=true`, PATCH with a User,
//! Server-Sent Events for `Subscribe`) is described in [`bridge_extras`].
//! Descriptions are the .proto comments. Who may call what is
//! [`callers`]'s table.

mod callers;

use std::{collections::HashMap, error::Error};

use prost_reflect::{DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use self::callers::{Access, Callers};
use crate::Binding;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// The security schemes' names in the document.
const ACCESS_TOKEN: &str = "accessToken";
const SERVICE_KEY: &str = "serviceKey";
const SESSION_COOKIE: &str = "sessionCookie";
const CSRF_TOKEN: &str = "csrfToken";

/// The google.rpc details the bridge shows in an error body
/// (bridge/src/error.rs, `detail_json`).
const ERROR_DETAILS: [&str; 8] = [
    "google.rpc.ErrorInfo",
    "google.rpc.BadRequest",
    "google.rpc.RetryInfo",
    "google.rpc.QuotaFailure",
    "google.rpc.PreconditionFailure",
    "google.rpc.ResourceInfo",
    "google.rpc.Help",
    "google.rpc.LocalizedMessage",
];

/// The canonical names of the gRPC codes an error can have.
const CODES: [&str; 16] = [
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

/// The document for `bindings`, as JSON.
pub fn document(pool: &DescriptorPool, bindings: &[Binding], version: &str) -> Result<Value> {
    let mut schemas = Schemas::new(pool);
    let mut paths = Map::new();
    let mut tags = Vec::new();
    let mut operation_ids = HashMap::new();
    for binding in bindings {
        let method = &binding.method;
        let service = method.parent_service();
        if !tags.iter().any(|tag: &Value| tag["name"] == service.name()) {
            tags.push(json!({
                "name": service.name(),
                "description": schemas.comments.of(service.parent_file().name(), service.path()),
            }));
        }
        let id = format!("{}_{}", service.name(), method.name());
        let seen = operation_ids.entry(id.clone()).or_insert(0);
        *seen += 1;
        let id = if *seen == 1 {
            id
        } else {
            format!("{id}{seen}")
        };
        let (path, operation) = operation(&mut schemas, binding, id)?;
        let item = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[binding.verb.to_ascii_lowercase()] = operation;
    }
    let reason = schemas.enumeration(
        &pool
            .get_enum_by_name("slop.errors.v1.ErrorReason")
            .ok_or("slop.errors.v1.ErrorReason is missing")?,
    );
    let mut details = Vec::new();
    let mut mapping = Map::new();
    for name in ERROR_DETAILS {
        let message = pool
            .get_message_by_name(name)
            .ok_or_else(|| format!("{name} is missing"))?;
        let reference = schemas.message(&message);
        let type_url = format!("type.googleapis.com/{name}");
        mapping.insert(type_url.clone(), reference["$ref"].clone());
        let schema = schemas.definition_mut(&message);
        schema["properties"]
            .as_object_mut()
            .ok_or("a detail has no properties")?
            .shift_insert(0, "@type".into(), json!({ "const": type_url }));
        schema["required"] = json!(["@type"]);
        details.push(reference);
    }
    // The contract's reason, not any string: every ErrorInfo the server
    // sends is in its domain, with a reason of the enum.
    let error_info = schemas.definition_mut(
        &pool
            .get_message_by_name("google.rpc.ErrorInfo")
            .ok_or("google.rpc.ErrorInfo is missing")?,
    );
    let description = error_info["properties"]["reason"]["description"].clone();
    error_info["properties"]["reason"] =
        json!({"$ref": reason["$ref"], "description": description});
    error_info["properties"]["domain"]["const"] = json!("slop.studio");

    let mut components = schemas.into_definitions();
    components.insert("Error".into(), json!({
        "type": "object",
        "description": "The AIP-193 error body every REST answer that is not a success has (docs/errors.md). Match on `details[].reason` of the `google.rpc.ErrorInfo` detail, never on the message.",
        "required": ["error"],
        "properties": {"error": {"$ref": "#/components/schemas/Status"}},
    }));
    components.insert("Status".into(), json!({
        "type": "object",
        "description": "A google.rpc.Status as AIP-193 writes it over HTTP: `code` is the HTTP status, `status` the gRPC code's name.",
        "required": ["code", "message", "status", "details"],
        "properties": {
            "code": {"type": "integer", "description": "The HTTP status of the answer."},
            "message": {"type": "string", "description": "For people; it may change. An internal error's message hides its cause, which the server log has under the call's x-request-id."},
            "status": {"type": "string", "enum": CODES, "description": "The canonical name of the gRPC code (google.rpc.Code)."},
            "details": {
                "type": "array",
                "description": "google.rpc detail messages, each with its `@type`; none for an internal error.",
                "items": {
                    "oneOf": details,
                    "discriminator": {"propertyName": "@type", "mapping": mapping},
                },
            },
        },
    }));

    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Slop Studios backend core: REST API",
            "version": version,
            "description": INFO,
        },
        "servers": [{"url": "/", "description": "The server that serves this document."}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                "Error": error_response("An error, as the AIP-193 body (docs/errors.md)."),
                "Unauthenticated": error_response("UNAUTHENTICATED: no credentials, or bad ones (`details[].reason` says which, e.g. CREDENTIALS_MISSING, TOKEN_EXPIRED, SESSION_ENDED)."),
                "PermissionDenied": error_response("PERMISSION_DENIED: the credentials are good but do not allow this call (e.g. USER_REQUIRED, SERVICE_REQUIRED, CSRF_TOKEN_INVALID)."),
            },
            "securitySchemes": {
                ACCESS_TOKEN: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A user's access token from Login or RefreshToken: `authorization: Bearer <access token>`.",
                },
                SERVICE_KEY: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A backend service's key, the secret part of a SERVICE_KEYS entry: `authorization: Bearer <service key>`.",
                },
                SESSION_COOKIE: {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "slop_session",
                    "description": "Browsers: the HttpOnly session cookie that `POST /api/v1/auth/login?cookie=true` sets.",
                },
                CSRF_TOKEN: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-csrf-token",
                    "description": "With the session cookie, on calls that change state: the value of the `slop_csrf` cookie (double submit).",
                },
            },
        },
    }))
}

const INFO: &str = "The REST bridge of the Slop Studios backend core: the same operations as its gRPC services (proto/slop/*/v1), each bound to HTTP by its `google.api.http` annotation, generated from the contract at build time.\n\n\
Bodies are canonical proto3 JSON: fields in lowerCamelCase (requests may use the proto names too; an unknown field is refused), 64-bit integers as strings, enums by name, times as RFC 3339 strings, durations as `\"<seconds>s\"`. Answers leave out fields that have their default value (0, \"\", false, empty lists, the enum's UNSPECIFIED): read a missing field as its default.\n\n\
Errors are the AIP-193 body `{\"error\": {code, message, status, details}}` (components.schemas.Error); the `google.rpc.ErrorInfo` detail's `reason` is one of components.schemas.ErrorReason, in the domain `slop.studio`.\n\n\
Not described here: the WebSocket adapter at /api/v1/ws (JSON frames, docs/websocket.md), gRPC and grpc-web (the .proto files, or server reflection), and the health endpoints.";

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {
            "Retry-After": {"description": "Seconds to wait before retrying (RESOURCE_EXHAUSTED, rounded up from the google.rpc.RetryInfo detail).", "schema": {"type": "integer"}},
            "WWW-Authenticate": {"description": "On 401: `Bearer realm=\"slop\"`.", "schema": {"type": "string"}},
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// The OpenAPI path and operation of one binding.
fn operation(schemas: &mut Schemas, binding: &Binding, id: String) -> Result<(String, Value)> {
    let method = &binding.method;
    let grpc_path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let input = method.input();
    let comment = schemas
        .comments
        .of(method.parent_file().name(), method.path())
        .unwrap_or_default();
    let (path, path_fields) = path_template(&binding.path);
    let mut parameters = Vec::new();
    for name in &path_fields {
        let field = input.get_field_by_name(name).ok_or_else(|| {
            format!("{grpc_path}: the path names {name}, which the request does not have")
        })?;
        let mut schema = schemas.field(&field);
        let description = schema.as_object_mut().and_then(|s| s.remove("description"));
        parameters.push(json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": description,
            "schema": schema,
        }));
    }
    let mut operation = json!({
        "operationId": id,
        "tags": [method.parent_service().name()],
        "summary": summary(&comment),
        "description": comment,
    });
    if binding.body.is_empty() && !method.is_server_streaming() {
        for field in input.fields() {
            if !path_fields.iter().any(|name| name == field.name()) {
                parameters.extend(query_parameters(schemas, &field));
            }
        }
    } else if binding.body == "*" {
        let mut schema = schemas.message(&input);
        if !path_fields.is_empty() {
            // The body is the message without the fields the path holds.
            let mut copy = schemas.definition_mut(&input).clone();
            if let Some(properties) = copy["properties"].as_object_mut() {
                properties.retain(|name, _| {
                    !path_fields.iter().any(|field| {
                        input
                            .get_field_by_json_name(name)
                            .is_some_and(|f| f.name() == field)
                    })
                });
            }
            schema = copy;
        }
        operation["requestBody"] = request_body(schema);
    } else if !binding.body.is_empty() {
        let field = input.get_field_by_name(&binding.body).ok_or_else(|| {
            format!(
                "{grpc_path}: the body is {}, which the request does not have",
                binding.body
            )
        })?;
        operation["requestBody"] = request_body(schemas.field(&field));
    }
    operation["responses"] = json!({});
    if !method.is_server_streaming() {
        let output = method.output();
        let answer = schemas
            .comments
            .of(output.parent_file().name(), output.path())
            .unwrap_or_else(|| "The answer.".into());
        operation["responses"]["200"] = json!({
            "description": answer,
            "content": {"application/json": {"schema": schemas.message(&output)}},
        });
    }
    operation["responses"]["default"] = json!({"$ref": "#/components/responses/Error"});
    let callers = callers::of(&grpc_path)
        .ok_or_else(|| format!("{grpc_path}: say who may call it in proto/openapi/callers.rs"))?;
    operation["security"] = security(callers);
    if callers != Callers::Anyone {
        operation["responses"]["401"] = json!({"$ref": "#/components/responses/Unauthenticated"});
        operation["responses"]["403"] = json!({"$ref": "#/components/responses/PermissionDenied"});
    }
    if method.is_server_streaming() {
        server_sent_events(schemas, &grpc_path, &mut operation, &mut parameters)?;
    }
    bridge_extras(schemas, &grpc_path, &mut operation, &mut parameters)?;
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    Ok((path, operation))
}

/// The path in OpenAPI's form (`{field}` for `{field=pattern}`) and the
/// fields it holds.
fn path_template(template: &str) -> (String, Vec<String>) {
    let mut path = String::new();
    let mut fields = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        path.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |end| start + end);
        let field = rest[start + 1..end].split('=').next().unwrap_or_default();
        path.push('{');
        path.push_str(field);
        path.push('}');
        fields.push(field.to_owned());
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    path.push_str(rest);
    (path, fields)
}

/// The first sentence of a comment.
fn summary(comment: &str) -> String {
    let flat = comment.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(end) => flat[..=end].to_owned(),
        None => flat,
    }
}

fn request_body(schema: Value) -> Value {
    json!({
        "description": "The request message as JSON. An empty body is the empty message.",
        "required": false,
        "content": {"application/json": {"schema": schema}},
    })
}

/// The query parameters a field of a GET or DELETE request is read from:
/// itself under its proto name, or, for a message, each of its fields as
/// `<field>_<subfield>` (how the bridge spells `after.offset`:
/// `after_offset`).
fn query_parameters(schemas: &mut Schemas, field: &FieldDescriptor) -> Vec<Value> {
    let parameter = |name: String, mut schema: Value, list: bool| {
        let description = schema.as_object_mut().and_then(|s| s.remove("description"));
        let mut parameter = json!({
            "name": name,
            "in": "query",
            "description": description,
            "schema": schema,
        });
        if list {
            parameter["style"] = json!("form");
            parameter["explode"] = json!(true);
        }
        parameter
    };
    match field.kind() {
        Kind::Message(message) if !field.is_list() && !is_well_known(&message) => message
            .fields()
            .map(|sub| {
                let mut schema = schemas.field(&sub);
                let whole = schemas.field(field)["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let part = schema["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                schema["description"] = json!(format!(
                    "{whole}\n\nThe `{}` of `{}`: {part}",
                    sub.name(),
                    field.name()
                ));
                parameter(
                    format!("{}_{}", field.name(), sub.name()),
                    schema,
                    sub.is_list(),
                )
            })
            .collect(),
        _ => vec![parameter(
            field.name().to_owned(),
            schemas.field(field),
            field.is_list(),
        )],
    }
}

/// The `security` of an operation with these callers: alternatives, each
/// a set of schemes sent together (`{}`: none).
fn security(callers: Callers) -> Value {
    let users = |access: Access| match access {
        Access::Read => vec![json!({ACCESS_TOKEN: []}), json!({SESSION_COOKIE: []})],
        Access::Write => vec![
            json!({ACCESS_TOKEN: []}),
            json!({SESSION_COOKIE: [], CSRF_TOKEN: []}),
        ],
    };
    let service = json!({SERVICE_KEY: []});
    Value::Array(match callers {
        Callers::Anyone => Vec::new(),
        Callers::Users(access) => users(access),
        Callers::Services => vec![service],
        Callers::UsersAndServices(access) => {
            let mut both = users(access);
            both.push(service);
            both
        }
        Callers::UsersOrRefreshToken => {
            let mut or_none = users(Access::Write);
            or_none.push(json!({}));
            or_none
        }
    })
}

/// A server-streaming RPC over REST: what the bridge serves for it.
fn server_sent_events(
    schemas: &mut Schemas,
    grpc_path: &str,
    operation: &mut Value,
    parameters: &mut Vec<Value>,
) -> Result<()> {
    if grpc_path != "/slop.notification.v1.NotificationService/Subscribe" {
        return Err(format!(
            "{grpc_path} streams: say in proto/openapi/mod.rs how the REST bridge serves it"
        )
        .into());
    }
    let message = |name: &str, schemas: &mut Schemas| -> Result<Value> {
        let message = schemas
            .pool
            .get_message_by_name(&format!("slop.notification.v1.{name}"))
            .ok_or_else(|| format!("slop.notification.v1.{name} is missing"))?;
        Ok(schemas.message(&message))
    };
    let namespace = schemas.enumeration(
        &schemas
            .pool
            .get_enum_by_name("slop.notification.v1.Namespace")
            .ok_or("slop.notification.v1.Namespace is missing")?,
    );
    parameters.extend([
        json!({
            "name": "channel",
            "in": "query",
            "description": "A channel to follow, `user:<id>` or `topic:<name>`; repeat the parameter (or separate channels with commas) for several, at most 16. None: the caller's own channel, or, when resuming, the channels of the resume id.",
            "style": "form",
            "explode": true,
            "schema": {"type": "array", "items": {"type": "string"}},
        }),
        json!({
            "name": "namespace",
            "in": "query",
            "description": "Only events of these namespaces, for every channel of the stream: the enum's names, or `notifications` and `media`.",
            "style": "form",
            "explode": true,
            "schema": {"type": "array", "items": {"anyOf": [namespace, {"type": "string", "enum": ["notifications", "media"]}]}},
        }),
        json!({
            "name": "last_event_id",
            "in": "query",
            "description": "Where to resume, on a first connect: the `id` of the last message seen (`<channel>=<offset>@<epoch>` joined by `;`). The Last-Event-ID header wins when both are given.",
            "schema": {"type": "string"},
        }),
        json!({
            "name": "Last-Event-ID",
            "in": "header",
            "description": "Where to resume: EventSource sends the `id` of the last message it saw when it reconnects.",
            "schema": {"type": "string"},
        }),
    ]);
    operation["description"] = json!(format!(
        "{}\n\nOver REST: Server-Sent Events (docs/sse.md). The request is the query, not a SubscribeRequest.",
        operation["description"].as_str().unwrap_or_default()
    ));
    operation["responses"]
        .as_object_mut()
        .ok_or("an operation without responses")?
        .shift_insert(0, "200".into(), json!({
        "description": "A Server-Sent Events stream. Each message's `event:` says what its `data:` is: `subscribed` (a Subscribed), `event` (an Event), `heartbeat` (a Heartbeat), each as canonical proto3 JSON, and a final `error` (the Error body) when the stream ends with a status. The `id:` of `subscribed` and `event` messages is the resume position of every channel of the stream.",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "x-sse-events": {
                    "subscribed": message("Subscribed", schemas)?,
                    "event": message("Event", schemas)?,
                    "heartbeat": message("Heartbeat", schemas)?,
                    "error": {"$ref": "#/components/schemas/Error"},
                },
            },
        },
    }));
    Ok(())
}

/// What the bridge serves beyond an RPC's binding (bridge/src/rest.rs).
fn bridge_extras(
    schemas: &mut Schemas,
    grpc_path: &str,
    operation: &mut Value,
    parameters: &mut Vec<Value>,
) -> Result<()> {
    match grpc_path {
        "/slop.auth.v1.AuthService/Login" => {
            parameters.extend([
                json!({
                    "name": "cookie",
                    "in": "query",
                    "description": "Browsers: keep the session in cookies (the HttpOnly `slop_session` and the `slop_csrf` whose value state-changing calls echo in `x-csrf-token`). The answer then carries no refresh token, and no access token unless `access_token=true`.",
                    "schema": {"type": "boolean", "default": false},
                }),
                json!({
                    "name": "access_token",
                    "in": "query",
                    "description": "With `cookie=true`: put the access token in the answer too.",
                    "schema": {"type": "boolean", "default": false},
                }),
            ]);
            operation["responses"]["200"]["headers"] = json!({
                "Set-Cookie": {
                    "description": "With `cookie=true`: the session and CSRF cookies.",
                    "schema": {"type": "string"},
                },
            });
        }
        "/slop.auth.v1.AuthService/UpdateCurrentUser" => {
            let user = schemas.message(
                &schemas
                    .pool
                    .get_message_by_name("slop.auth.v1.User")
                    .ok_or("slop.auth.v1.User is missing")?,
            );
            let request = operation["requestBody"]["content"]["application/json"]["schema"].take();
            operation["requestBody"]["description"] = json!(
                "The request message, or the User alone: then the fields present are the ones changed, unless `update_mask` in the query names them. `updateMask` is one string of comma-separated lowerCamelCase paths, e.g. \"displayName\"."
            );
            operation["requestBody"]["content"]["application/json"]["schema"] =
                json!({"anyOf": [request, user]});
            parameters.push(json!({
                "name": "update_mask",
                "in": "query",
                "description": "With a User as the body: the fields to change, comma-separated (e.g. `displayName`).",
                "schema": {"type": "string"},
            }));
        }
        _ => {}
    }
    Ok(())
}

/// The .proto comments, by file and path in it.
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut comments = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            for location in &info.location {
                let Some(text) = &location.leading_comments else {
                    continue;
                };
                let text = text
                    .lines()
                    .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
                    .collect::<Vec<_>>()
                    .join("\n");
                let text = text.trim();
                if !text.is_empty() {
                    comments.insert(
                        (file.name().to_owned(), location.path.clone()),
                        text.to_owned(),
                    );
                }
            }
        }
        Self(comments)
    }

    fn of(&self, file: &str, path: &[i32]) -> Option<String> {
        self.0.get(&(file.to_owned(), path.to_vec())).cloned()
    }
}

/// The JSON Schemas of the messages and enums the operations use,
/// `components.schemas`, keyed by their names without the package.
struct Schemas<'a> {
    pool: &'a DescriptorPool,
    comments: Comments,
    definitions: Map<String, Value>,
    /// The full name of the type each key stands for, to refuse two types
    /// of one name.
    owners: HashMap<String, String>,
}

impl<'a> Schemas<'a> {
    fn new(pool: &'a DescriptorPool) -> Self {
        Self {
            pool,
            comments: Comments::new(pool),
            definitions: Map::new(),
            owners: HashMap::new(),
        }
    }

    fn into_definitions(self) -> Map<String, Value> {
        self.definitions
    }

    /// The key of a type: its full name without the package, so
    /// `BadRequest.FieldViolation` for a nested message. Two packages with
    /// a type of one name fail the build rather than share a schema.
    fn key(&mut self, full_name: &str, package: &str) -> String {
        let key = full_name
            .strip_prefix(package)
            .and_then(|name| name.strip_prefix('.'))
            .unwrap_or(full_name)
            .to_owned();
        let owner = self
            .owners
            .entry(key.clone())
            .or_insert_with(|| full_name.to_owned());
        assert_eq!(
            owner, full_name,
            "two types are named {key}: give proto/openapi/mod.rs a naming rule for them"
        );
        key
    }

    fn definition_mut(&mut self, message: &MessageDescriptor) -> &mut Value {
        let key = self.key(message.full_name(), message.package_name());
        self.definitions.entry(key).or_insert(Value::Null)
    }

    /// The schema of a message: inline for a well-known type (its special
    /// JSON form), else a reference to its definition, made on first use.
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message) {
            return schema;
        }
        let key = self.key(message.full_name(), message.package_name());
        let reference = json!({ "$ref": format!("#/components/schemas/{key}") });
        if self.definitions.contains_key(&key) {
            return reference;
        }
        // Placed first, so a message that contains itself ends.
        self.definitions.insert(key.clone(), Value::Null);
        let mut properties = Map::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_owned(), self.field(&field));
        }
        let mut description = self
            .comments
            .of(message.parent_file().name(), message.path())
            .unwrap_or_default();
        for oneof in message.oneofs().filter(|oneof| !oneof.is_synthetic()) {
            let names: Vec<String> = oneof
                .fields()
                .map(|f| format!("`{}`", f.json_name()))
                .collect();
            description.push_str(&format!("\n\nAt most one of {} is set.", names.join(", ")));
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if !description.trim().is_empty() {
            schema["description"] = json!(description.trim());
        }
        self.definitions.insert(key, schema);
        reference
    }

    /// A reference to an enum's definition: its value names, each with its
    /// comment.
    fn enumeration(&mut self, enumeration: &EnumDescriptor) -> Value {
        let key = self.key(enumeration.full_name(), enumeration.package_name());
        let reference = json!({ "$ref": format!("#/components/schemas/{key}") });
        if self.definitions.contains_key(&key) {
            return reference;
        }
        let file = enumeration.parent_file();
        let values: Vec<Value> = enumeration
            .values()
            .map(|value| {
                let mut one = json!({"const": value.name()});
                if let Some(comment) = self.comments.of(file.name(), value.path()) {
                    one["description"] = json!(comment);
                }
                one
            })
            .collect();
        let mut schema = json!({"type": "string", "oneOf": values});
        if let Some(comment) = self.comments.of(file.name(), enumeration.path()) {
            schema["description"] = json!(comment);
        }
        self.definitions.insert(key, schema);
        reference
    }

    /// The schema of a field's JSON value, with the field's comment.
    fn field(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("a map field's kind is its entry message")
            };
            json!({
                "type": "object",
                "additionalProperties": self.kind(&entry.map_entry_value_field().kind()),
            })
        } else if field.is_list() {
            json!({"type": "array", "items": self.kind(&field.kind())})
        } else {
            self.kind(&field.kind())
        };
        if let Some(comment) = self.comments.of(field.parent_file().name(), field.path()) {
            schema["description"] = json!(comment);
        }
        schema
    }

    /// The schema of one value of a kind, as canonical proto3 JSON writes it.
    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({
                "type": "string",
                "format": "int64",
                "pattern": "^-?[0-9]+$",
                "description": "A 64-bit integer, as a decimal string.",
            }),
            Kind::Uint64 | Kind::Fixed64 => json!({
                "type": "string",
                "format": "uint64",
                "pattern": "^[0-9]+$",
                "description": "A 64-bit unsigned integer, as a decimal string.",
            }),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Message(message) => self.message(message),
            Kind::Enum(enumeration) => self.enumeration(enumeration),
        }
    }
}

fn is_well_known(message: &MessageDescriptor) -> bool {
    well_known(message).is_some()
}

/// The JSON form of a well-known type, which is not that of its fields.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({
            "type": "string",
            "format": "date-time",
            "examples": ["2026-12-01T09:16:00.123+00:00"],
        }),
        "google.protobuf.Duration" => json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "examples": ["900s", "1.500s"],
        }),
        "google.protobuf.FieldMask" => json!({
            "type": "string",
            "description": "Comma-separated lowerCamelCase field paths.",
        }),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "required": ["@type"],
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": true,
        }),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "contentEncoding": "base64"}),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "pattern": "^-?[0-9]+$"})
        }
        _ => return None,
    })
}
