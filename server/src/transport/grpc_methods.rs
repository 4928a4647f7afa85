//! The gRPC methods this server serves, read from the encoded descriptor
//! sets it also gives reflection: what the layers that treat methods apart
//! (streams cut at shutdown, request bodies that may take their time,
//! messages that do not decode) look paths up in.

use prost::Message as _;
use prost_types::MethodDescriptorProto;

/// Every method of every service in the encoded `FileDescriptorSet`s, with
/// its path (`/package.Service/Method`).
pub fn methods(
    sets: &[&[u8]],
) -> Result<impl Iterator<Item = (String, MethodDescriptorProto)>, prost::DecodeError> {
    let mut methods = Vec::new();
    for encoded in sets {
        let set = prost_types::FileDescriptorSet::decode(*encoded)?;
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    let path = format!("/{package}.{service_name}/{}", method.name());
                    methods.push((path, method));
                }
            }
        }
    }
    Ok(methods.into_iter())
}
