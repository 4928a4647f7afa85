//! The v1 contract of the Slop Studios backend core, generated from the
//! .proto files beside this one (see build.rs).
//!
//! Each package module holds the prost messages, the tonic client
//! (`*_client`) and server (`*_server`) modules, and serde impls that give the
//! canonical proto3 JSON mapping used by the REST bridge and the WebSocket
//! adapter; [`json`] prints that JSON as the canonical printers do.
//! [`FILE_DESCRIPTOR_SET`] is the encoded contract, for gRPC server
//! reflection.

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
}

pub use slop::{auth::v1 as auth, notification::v1 as notification, session::v1 as session};
