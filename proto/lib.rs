//! The v1 contract of the Slop Studios backend core, generated from the
//! .proto files beside this one (see build.rs).
//!
//! Each package module holds the prost messages, the tonic client
//! (`*_client`) and server (`*_server`) modules, and serde impls that give the
//! canonical proto3 JSON mapping used by the REST bridge and the WebSocket
//! adapter; [`json`] prints that JSON as the canonical printers do.
//! [`FILE_DESCRIPTOR_SET`] is the encoded contract, for gRPC server
//! reflection. [`errors`] is the error vocabulary every service and front
//! door answers in.

pub mod json;

/// The encoded `FileDescriptorSet` of every .proto file of the contract.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("slop_descriptor");

/// Packages under `slop`.
pub mod slop {
    /// `slop.auth.v1`: accounts, login, tokens.
    pub mod auth {
        /// Version 1 of the auth API.
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("slop.auth.v1");
            include!(concat!(env!("OUT_DIR"), "/slop.auth.v1.serde.rs"));
        }
    }
    /// `slop.session.v1`: the sessions of signed-in users.
    pub mod session {
        /// Version 1 of the session API.
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("slop.session.v1");
            include!(concat!(env!("OUT_DIR"), "/slop.session.v1.serde.rs"));
        }
    }
    /// `slop.notification.v1`: channels, publish and subscribe.
    pub mod notification {
        /// Version 1 of the notification API.
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("slop.notification.v1");
            include!(concat!(env!("OUT_DIR"), "/slop.notification.v1.serde.rs"));
        }
    }
    /// `slop.errors.v1`: the reasons errors carry.
    pub mod errors {
        /// Version 1 of the error reasons.
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("slop.errors.v1");
            include!(concat!(env!("OUT_DIR"), "/slop.errors.v1.serde.rs"));
        }
    }
}

/// The error vocabulary of the whole API: every `google.rpc.ErrorInfo` a
/// service or front door sends has the domain [`DOMAIN`] and an
/// [`ErrorReason`] as its reason, and each reason has one gRPC code
/// ([`ErrorReason::code`]). The server builds statuses from these, never
/// from strings, so a reason outside the contract cannot be sent, and a
/// client parses a received reason with [`ErrorReason::from_str_name`].
pub mod errors {
    pub use crate::slop::errors::v1::ErrorReason;

    /// The `ErrorInfo.domain` of every error of the API (AIP-193: the
    /// service's name; one for all services, as reasons are unique across
    /// them).
    pub const DOMAIN: &str = "slop.studio";

    impl ErrorReason {
        /// The gRPC code every error with this reason has, as
        /// proto/slop/errors/v1/errors.proto says of each value. One code
        /// per reason, so a client that matches on the reason need not
        /// also look at the code, and the HTTP status and WebSocket close
        /// code of a reason follow from it.
        pub fn code(self) -> tonic::Code {
            use tonic::Code;
            match self {
                Self::Unspecified => Code::Unknown,
                Self::CredentialsMissing
                | Self::CredentialsInvalid
                | Self::ServiceKeyWithName
                | Self::TokenExpired
                | Self::TokenInvalid
                | Self::CookieInvalid
                | Self::SessionEnded
                | Self::AccountGone
                | Self::InvalidCredentials
                | Self::RefreshTokenInvalid
                | Self::RefreshTokenReused => Code::Unauthenticated,
                Self::CsrfTokenInvalid
                | Self::UserRequired
                | Self::ServiceRequired
                | Self::ChannelForbidden
                | Self::WrongPassword
                | Self::OriginNotAllowed => Code::PermissionDenied,
                Self::SessionNotFound | Self::RouteNotFound => Code::NotFound,
                Self::MethodNotAllowed => Code::Unimplemented,
                Self::RateLimited
                | Self::LoginThrottled
                | Self::SlowConsumer
                | Self::TooManyConnections => Code::ResourceExhausted,
                Self::ConnectionLimit => Code::Unavailable,
                Self::MalformedMessage | Self::RequestTooLarge => Code::InvalidArgument,
                Self::RequestBodyTimeout => Code::DeadlineExceeded,
            }
        }
    }
}

pub use slop::{auth::v1 as auth, notification::v1 as notification, session::v1 as session};
