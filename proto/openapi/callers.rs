//! Who may call each RPC, and whether it changes state: the source of the
//! OpenAPI document's `security`.
//!
//! The services decide this (each calls the server's one
//! authenticate-the-caller function, asking for a user, a service or
//! either, to read or to write); this table states what they decide, in a
//! form the document can carry. tests/e2e/openapi.rs calls every operation
//! of the served document with no credentials, a user's access token, a
//! service key and the session cookie with and without the CSRF header,
//! and fails wherever the server and the document disagree. A new RPC
//! fails the build until it has a row here.

/// What a call does, as the session cookie sees it: a call that changes
/// state and is authenticated by the cookie also needs the CSRF header
/// (double submit), so another site cannot act with a browser's cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: the cookie alone is enough.
    Read,
    /// Changes state: the cookie needs `x-csrf-token`.
    Write,
}

/// The callers an RPC accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// Anyone: no credentials are read (the call is for people not signed
    /// in yet; rate limited by address instead).
    Anyone,
    /// Signed-in users: an access token, or the session cookie.
    Users(Access),
    /// Backend services: a service key.
    Services,
    /// Signed-in users and backend services.
    UsersAndServices(Access),
    /// A signed-in user, or no credentials at all with the session's refresh
    /// token in the body (Logout, for a client whose access token expired).
    UsersOrRefreshToken,
}

/// Every RPC of the contract's three services, by gRPC path.
pub const CALLERS: &[(&str, Callers)] = &[
    ("/slop.auth.v1.AuthService/Register", Callers::Anyone),
    ("/slop.auth.v1.AuthService/Login", Callers::Anyone),
    ("/slop.auth.v1.AuthService/RefreshToken", Callers::Anyone),
    (
        "/slop.auth.v1.AuthService/Logout",
        Callers::UsersOrRefreshToken,
    ),
    (
        "/slop.auth.v1.AuthService/GetCurrentUser",
        Callers::Users(Access::Read),
    ),
    (
        "/slop.auth.v1.AuthService/UpdateCurrentUser",
        Callers::Users(Access::Write),
    ),
    (
        "/slop.auth.v1.AuthService/ChangePassword",
        Callers::Users(Access::Write),
    ),
    (
        "/slop.auth.v1.AuthService/RequestPasswordReset",
        Callers::Anyone,
    ),
    ("/slop.auth.v1.AuthService/ResetPassword", Callers::Anyone),
    ("/slop.auth.v1.AuthService/ValidateToken", Callers::Services),
    (
        "/slop.session.v1.SessionService/GetSession",
        Callers::UsersAndServices(Access::Read),
    ),
    (
        "/slop.session.v1.SessionService/ListSessions",
        Callers::UsersAndServices(Access::Read),
    ),
    (
        "/slop.session.v1.SessionService/RevokeSession",
        Callers::UsersAndServices(Access::Write),
    ),
    (
        "/slop.session.v1.SessionService/RevokeOtherSessions",
        Callers::Users(Access::Write),
    ),
    (
        "/slop.session.v1.SessionService/RevokeUserSessions",
        Callers::Services,
    ),
    (
        "/slop.notification.v1.NotificationService/Publish",
        Callers::Services,
    ),
    (
        "/slop.notification.v1.NotificationService/Subscribe",
        Callers::UsersAndServices(Access::Read),
    ),
    (
        "/slop.notification.v1.NotificationService/GetChannel",
        Callers::UsersAndServices(Access::Read),
    ),
    (
        "/slop.notification.v1.NotificationService/ListChannelEvents",
        Callers::UsersAndServices(Access::Read),
    ),
];

/// The callers of the RPC at `grpc_path`, if the table has it.
pub fn of(grpc_path: &str) -> Option<Callers> {
    CALLERS
        .iter()
        .find(|(path, _)| *path == grpc_path)
        .map(|(_, callers)| *callers)
}
