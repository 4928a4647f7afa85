//! The clients: REST over HTTP/1.1 keep-alive connections (one per task),
//! gRPC over a few HTTP/2 connections shared by the tasks, and the REST
//! calls that set a run up (register, login, many users at once) or
//! that sign in over and over as load ([`Login`]).

use std::net::SocketAddr;

use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Bytes, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use slop_api::auth::{ValidateTokenRequest, auth_service_client::AuthServiceClient};
use tokio::{net::TcpStream, task::JoinSet};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::load::Caller;

/// The REST path of GetCurrentUser.
pub const ME: &str = "/api/v1/auth/me";
/// The REST path of Register.
const REGISTER: &str = "/api/v1/auth/register";
/// The REST path of Login.
pub const LOGIN: &str = "/api/v1/auth/login";

/// An HTTP/1.1 connection, kept alive between requests.
pub struct Http1 {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Http1 {
    /// Opens a connection to `addr` (TCP_NODELAY, as the server sets it).
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect to {addr}: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| format!("TCP_NODELAY: {error}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("HTTP/1.1 handshake with {addr}: {error}"))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes.
            let _ = connection.await;
        });
        Ok(Self { addr, sender })
    }

    /// Sends a request, first reconnecting if the server closed the
    /// connection, and reads the whole answer.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), String> {
        if self.sender.is_closed() {
            *self = Self::connect(self.addr).await?;
        }
        self.sender
            .ready()
            .await
            .map_err(|error| format!("connection: {error}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|error| format!("request: {error}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("response body: {error}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// POSTs a JSON body to `path`; answers the status and the JSON body.
    pub async fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let request = Request::post(path)
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| error.to_string())?;
        let (status, body) = self.send(request).await?;
        let json = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|error| {
                format!(
                    "POST {path}: HTTP {status}, not JSON ({error}): {}",
                    String::from_utf8_lossy(&body)
                )
            })?
        };
        Ok((status, json))
    }
}

/// `GET /api/v1/auth/me` with a bearer access token, over one connection.
pub struct RestMe {
    connection: Http1,
    authorization: HeaderValue,
}

impl RestMe {
    /// Connects to `addr`, to call as the holder of `access_token`.
    pub async fn connect(addr: SocketAddr, access_token: &str) -> Result<Self, String> {
        Ok(Self {
            connection: Http1::connect(addr).await?,
            authorization: HeaderValue::from_str(&format!("Bearer {access_token}"))
                .map_err(|error| error.to_string())?,
        })
    }

    /// One caller per task, each on its own connection.
    pub async fn many(
        addr: SocketAddr,
        access_token: &str,
        count: usize,
    ) -> Result<Vec<Self>, String> {
        let mut callers = Vec::with_capacity(count);
        for _ in 0..count {
            callers.push(Self::connect(addr, access_token).await?);
        }
        Ok(callers)
    }
}

impl Caller for RestMe {
    async fn call(&mut self) -> Result<(), String> {
        let request = Request::get(ME)
            .header(header::HOST, "127.0.0.1")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .body(Full::default())
            .map_err(|error| error.to_string())?;
        let (status, body) = self.connection.send(request).await?;
        if status != StatusCode::OK {
            return Err(format!(
                "GET {ME}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }
}

/// Opens `count` HTTP/2 connections (gRPC channels) to `addr`.
pub async fn grpc_channels(addr: SocketAddr, count: usize) -> Result<Vec<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|error| error.to_string())?
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|error| format!("gRPC connect to {addr}: {error}"))?,
        );
    }
    Ok(channels)
}

/// `slop.auth.v1.AuthService/ValidateToken` with a service key, for a
/// user's access token; a token found inactive counts as a failure.
pub struct GrpcValidate {
    client: AuthServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    access_token: String,
}

impl GrpcValidate {
    /// `count` callers sharing `channels` round robin.
    pub fn many(
        channels: &[Channel],
        service_key: &str,
        access_token: &str,
        count: usize,
    ) -> Result<Vec<Self>, String> {
        let authorization: MetadataValue<Ascii> = format!("Bearer {service_key}")
            .parse()
            .map_err(|_| "the service key is not ASCII".to_owned())?;
        Ok((0..count)
            .map(|index| Self {
                client: AuthServiceClient::new(channels[index % channels.len()].clone()),
                authorization: authorization.clone(),
                access_token: access_token.to_owned(),
            })
            .collect())
    }
}

impl Caller for GrpcValidate {
    async fn call(&mut self) -> Result<(), String> {
        let mut request = tonic::Request::new(ValidateTokenRequest {
            access_token: self.access_token.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let answer = self
            .client
            .validate_token(request)
            .await
            .map_err(|status| format!("ValidateToken: {:?}: {}", status.code(), status.message()))?
            .into_inner();
        if !answer.active {
            return Err(format!(
                "ValidateToken: token inactive ({:?})",
                answer.inactive_reason()
            ));
        }
        Ok(())
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user's id.
    pub user_id: String,
    /// The session's id.
    pub session_id: String,
    /// The access token (JWT).
    pub access_token: String,
}

/// Registers an account over REST.
pub async fn register(
    addr: SocketAddr,
    email: &str,
    password: &str,
    display_name: &str,
) -> Result<(), String> {
    let body = serde_json::json!({
        "email": email,
        "password": password,
        "displayName": display_name,
    });
    let (status, answer) = Http1::connect(addr)
        .await?
        .post_json(REGISTER, &body)
        .await?;
    if status != StatusCode::OK {
        return Err(format!("POST {REGISTER}: HTTP {status}: {answer}"));
    }
    Ok(())
}

/// The login request body.
pub fn login_body(email: &str, password: &str) -> serde_json::Value {
    serde_json::json!({ "email": email, "password": password })
}

/// Logs in over REST.
pub async fn login(addr: SocketAddr, email: &str, password: &str) -> Result<SignedIn, String> {
    let (status, answer) = Http1::connect(addr)
        .await?
        .post_json(LOGIN, &login_body(email, password))
        .await?;
    if status != StatusCode::OK {
        return Err(format!("POST {LOGIN}: HTTP {status}: {answer}"));
    }
    let text = |value: &serde_json::Value| {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("POST {LOGIN}: unexpected answer {answer}"))
    };
    Ok(SignedIn {
        user_id: text(&answer["user"]["id"])?,
        session_id: text(&answer["sessionId"])?,
        access_token: text(&answer["tokens"]["accessToken"])?,
    })
}

/// Registers and signs in `count` users, `<label>-<n>@example.com` with
/// one random password, a few at a time (each is two password hashes);
/// answers them in the order they finished.
pub async fn sign_in_many(
    addr: SocketAddr,
    count: u32,
    label: &str,
    display_name: &str,
) -> Result<Vec<SignedIn>, String> {
    let password = crate::setup::random_hex(12);
    let mut users = Vec::new();
    let mut pending = JoinSet::new();
    for n in 0..count {
        if pending.len() >= 8
            && let Some(done) = pending.join_next().await
        {
            users.push(done.map_err(|error| error.to_string())??);
        }
        let email = format!("{label}-{n}@example.com");
        let password = password.clone();
        let display_name = display_name.to_owned();
        pending.spawn(async move {
            register(addr, &email, &password, &display_name).await?;
            login(addr, &email, &password).await
        });
    }
    while let Some(done) = pending.join_next().await {
        users.push(done.map_err(|error| error.to_string())??);
    }
    Ok(users)
}

/// A login as one account, on a connection of its own each time (as a
/// browser signing in), as load: every call hashes the password (argon2id)
/// and creates a session. The server keeps at most 100 sessions per user
/// and ends the least recently used beyond that, so the account must be
/// one whose sessions nothing else needs.
pub struct Login {
    addr: SocketAddr,
    email: String,
    password: String,
}

impl Login {
    /// Logins as `email` with `password` at `addr`.
    pub fn new(addr: SocketAddr, email: &str, password: &str) -> Self {
        Self {
            addr,
            email: email.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl Caller for Login {
    async fn call(&mut self) -> Result<(), String> {
        login(self.addr, &self.email, &self.password)
            .await
            .map(drop)
    }
}
