//! Compiles the contract in proto/ into Rust with no system `protoc`:
//! protox parses the .proto files, tonic-prost-build generates messages,
//! clients and servers, pbjson-build generates canonical proto3 JSON (serde),
//! and the encoded descriptor set is written for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

/// The contract's files, relative to proto/, and the googleapis files of the
/// error details it sends (in the descriptor set, so reflection serves them;
/// their Rust types are tonic-types').
const PROTOS: &[&str] = &[
    "slop/auth/v1/auth.proto",
    "slop/session/v1/session.proto",
    "slop/notification/v1/notification.proto",
    "slop/errors/v1/errors.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptor_bytes = fds.encode_to_vec();
    fs::write(out_dir.join("slop_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Well-known types with serde support, so the JSON of a Timestamp is
        // an RFC 3339 string, as canonical proto3 JSON requires.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".google.rpc", "::tonic_types")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".slop"])?;
    Ok(())
}
