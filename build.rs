//! Compiles the contract in proto/ into Rust with no system `protoc`:
//! protox parses the .proto files, tonic-prost-build generates messages,
//! clients and servers, pbjson-build generates canonical proto3 JSON (serde),
//! the encoded descriptor set (with the RPCs' `google.api.http` options) is
//! written for gRPC server reflection, and the REST mapping those options
//! give is written as a table (`rest.rs`: [`HTTP_RULES`]) and as the OpenAPI
//! document of the REST bridge (`openapi.json`, made by proto/openapi/).

use std::{env, fmt::Write as _, fs, path::PathBuf};

use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

#[path = "proto/openapi/mod.rs"]
mod openapi;

/// The contract's files, relative to proto/, and the googleapis files it
/// uses: the error details it sends (in the descriptor set, so reflection
/// serves them; their Rust types are tonic-types') and the `google.api.http`
/// annotation of its REST mapping.
const PROTOS: &[&str] = &[
    "slop/auth/v1/auth.proto",
    "slop/session/v1/session.proto",
    "slop/notification/v1/notification.proto",
    "slop/errors/v1/errors.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
];

/// The HTTP verbs of `google.api.HttpRule`'s `pattern`, as its fields name
/// them.
const VERBS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let fds = compiler.file_descriptor_set();
    // With the extension options (the `google.api.http` annotations), which
    // `fds` does not keep.
    let descriptor_bytes = compiler.encode_file_descriptor_set();
    fs::write(out_dir.join("slop_descriptor.bin"), &descriptor_bytes)?;
    let pool = compiler.descriptor_pool();
    let bindings = bindings(&pool)?;
    fs::write(out_dir.join("rest.rs"), http_rules(&bindings)?)?;
    let document = openapi::document(&pool, &bindings, &env::var("CARGO_PKG_VERSION")?)?;
    let document = serde_json::to_string_pretty(&document)?;
    fs::write(
        out_dir.join("openapi_etag.rs"),
        format!("{:?}", format!("\"{:016x}\"", fnv1a(document.as_bytes()))),
    )?;
    fs::write(out_dir.join("openapi.json"), document)?;

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

/// One `google.api.http` binding of an RPC.
pub struct Binding {
    /// The RPC.
    pub method: MethodDescriptor,
    /// The HTTP method, upper case.
    pub verb: String,
    /// The path template.
    pub path: String,
    /// The body: `*`, a field's name, or empty.
    pub body: String,
}

/// Every `google.api.http` binding of a contract RPC (additional bindings
/// included), in the order of the files and their services.
fn bindings(pool: &DescriptorPool) -> Result<Vec<Binding>, Box<dyn std::error::Error>> {
    let http = pool
        .get_extension_by_name("google.api.http")
        .ok_or("google/api/annotations.proto defines no google.api.http")?;
    let mut bindings = Vec::new();
    for service in pool
        .services()
        .filter(|s| s.package_name().starts_with("slop."))
    {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let Value::Message(rule) = options.get_extension(&http).into_owned() else {
                return Err(
                    format!("{}: google.api.http is not a message", method.full_name()).into(),
                );
            };
            let mut rules = vec![rule.clone()];
            if let Some(Value::List(more)) = rule
                .get_field_by_name("additional_bindings")
                .map(|v| v.into_owned())
            {
                rules.extend(more.into_iter().filter_map(|binding| match binding {
                    Value::Message(binding) => Some(binding),
                    _ => None,
                }));
            }
            for rule in rules {
                let (verb, path) = VERBS
                    .iter()
                    .find_map(|verb| {
                        rule.has_field_by_name(verb).then(|| {
                            let path = rule.get_field_by_name(verb)?;
                            Some((verb.to_ascii_uppercase(), path.as_str()?.to_owned()))
                        })?
                    })
                    .ok_or_else(|| {
                        format!(
                            "{}: a google.api.http rule with no get, put, post, delete or patch",
                            method.full_name()
                        )
                    })?;
                let body = rule
                    .get_field_by_name("body")
                    .and_then(|body| body.as_str().map(str::to_owned))
                    .unwrap_or_default();
                bindings.push(Binding {
                    method: method.clone(),
                    verb,
                    path,
                    body,
                });
            }
        }
    }
    Ok(bindings)
}

/// The `HTTP_RULES` table: one `HttpRule` for each binding.
fn http_rules(bindings: &[Binding]) -> Result<String, Box<dyn std::error::Error>> {
    let mut table = String::from("&[\n");
    for binding in bindings {
        let method = &binding.method;
        writeln!(
            table,
            "    HttpRule {{ grpc_path: {:?}, method: {:?}, path: {:?}, body: {:?}, server_streaming: {} }},",
            format!("/{}/{}", method.parent_service().full_name(), method.name()),
            binding.verb,
            binding.path,
            binding.body,
            method.is_server_streaming(),
        )?;
    }
    table.push(']');
    Ok(table)
}

/// FNV-1a (64 bits): the document's ETag, the same for the same bytes on
/// every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
