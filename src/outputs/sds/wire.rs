//! SDS responses as gRPC messages ready to write: the length-prefixed message split
//! into chunks, in which every resource's encoding is the catalog's shared bytes
//! (sliced, never copied) and only the few bytes around them are written per
//! response.
//!
//! The encoding is the protobuf encoding of `DiscoveryResponse` and
//! `DeltaDiscoveryResponse` (fields in field-number order, as prost writes them), so
//! any protobuf decoder reads it; the tests decode it with prost and compare. It does
//! not own what a response holds (`super::protocol`) or how it is sent
//! (`super::stream`).

use std::collections::VecDeque;

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::resources::{Resource, SECRET_TYPE_URL};

/// The largest piece of a response handed to the HTTP layer at once. Sending a large
/// secret in pieces lets the stream show progress as the client reads (a client that
/// reads slowly but steadily is never taken for one that stopped reading), and bounds
/// what HTTP/2 buffers beyond the flow-control window.
pub const CHUNK: usize = 64 * 1024;

/// One gRPC message (5-byte prefix and protobuf body) in chunks.
#[derive(Debug, Default)]
pub struct Frames {
    chunks: VecDeque<Bytes>,
}

impl Frames {
    /// The next chunk to write.
    pub fn pop(&mut self) -> Option<Bytes> {
        self.chunks.pop_front()
    }

    /// Whether every chunk has been taken.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The whole message, copied into one buffer (tests and diagnostics).
    pub fn concat(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

/// A `DiscoveryResponse` (`StreamSecrets`).
pub fn sotw(version_info: &str, nonce: &str, resources: &[Resource]) -> Frames {
    let mut message = Message::default();
    message.string(1, version_info);
    for resource in resources {
        message.shared(2, &resource.encoded);
    }
    message.string(4, SECRET_TYPE_URL);
    message.string(5, nonce);
    message.finish()
}

/// A `DeltaDiscoveryResponse` (`DeltaSecrets`).
pub fn delta(
    system_version_info: &str,
    nonce: &str,
    resources: &[Resource],
    removed: &[String],
) -> Frames {
    let mut message = Message::default();
    message.string(1, system_version_info);
    for resource in resources {
        // envoy.service.discovery.v3.Resource: version = 1, resource = 2, name = 3.
        let any_len = resource.encoded.len();
        let inner = string_len(1, &resource.version)
            + key_len(2)
            + encoded_len_varint(any_len as u64)
            + any_len
            + string_len(3, &resource.name);
        message.header(2, inner);
        message.string(1, &resource.version);
        message.shared(2, &resource.encoded);
        message.string(3, &resource.name);
    }
    message.string(4, SECRET_TYPE_URL);
    message.string(5, nonce);
    for name in removed {
        message.repeated_string(6, name);
    }
    message.finish()
}

/// A message under construction: small parts written into buffers, shared parts
/// kept as they are.
#[derive(Default)]
struct Message {
    parts: Vec<Bytes>,
    small: BytesMut,
    len: usize,
}

impl Message {
    /// A length-delimited field's key and length.
    fn header(&mut self, tag: u32, len: usize) {
        let before = self.small.len();
        encode_key(tag, WireType::LengthDelimited, &mut self.small);
        encode_varint(len as u64, &mut self.small);
        self.len += self.small.len() - before;
    }

    /// A string field (proto3: left out when empty).
    fn string(&mut self, tag: u32, value: &str) {
        if !value.is_empty() {
            self.repeated_string(tag, value);
        }
    }

    /// One item of a repeated string field (written even when empty).
    fn repeated_string(&mut self, tag: u32, value: &str) {
        self.header(tag, value.len());
        self.small.put_slice(value.as_bytes());
        self.len += value.len();
    }

    /// A message field whose encoding is `shared`.
    fn shared(&mut self, tag: u32, shared: &Bytes) {
        self.header(tag, shared.len());
        if !self.small.is_empty() {
            self.parts.push(self.small.split().freeze());
        }
        let mut offset = 0;
        while offset < shared.len() {
            let end = (offset + CHUNK).min(shared.len());
            self.parts.push(shared.slice(offset..end));
            offset = end;
        }
        self.len += shared.len();
    }

    /// The gRPC length prefix (uncompressed) and the parts.
    fn finish(mut self) -> Frames {
        if !self.small.is_empty() {
            self.parts.push(self.small.split().freeze());
        }
        let mut prefix = BytesMut::with_capacity(5);
        prefix.put_u8(0);
        // A response is far below 4 GiB: the catalog holds CA certificates whose
        // documents are capped by policy.max_document_bytes.
        prefix.put_u32(u32::try_from(self.len).unwrap_or(u32::MAX));
        let mut chunks = VecDeque::with_capacity(self.parts.len() + 1);
        chunks.push_back(prefix.freeze());
        chunks.extend(self.parts);
        Frames { chunks }
    }
}

fn key_len(tag: u32) -> usize {
    prost::encoding::key_len(tag)
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource as DeltaResource,
    };
    use prost::Message as _;

    use super::*;
    use crate::outputs::sds::resources::{Catalog, Naming};
    use crate::trust::policy::testing::{bundle, td};

    fn catalog() -> Catalog {
        let naming = Naming {
            all_bundles_name: "ALL".into(),
            default_bundle_name: "ROOTCA".into(),
            default_domain: None,
            allowed: None,
        };
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        Catalog::build(7, [&a, &b], &naming)
    }

    fn body(frames: &Frames) -> Vec<u8> {
        let all = frames.concat();
        assert_eq!(all[0], 0, "uncompressed");
        let len = u32::from_be_bytes(all[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, all.len() - 5, "the prefix gives the message length");
        all[5..].to_vec()
    }

    #[test]
    fn sotw_frames_decode_to_the_message_prost_would_write() {
        let catalog = catalog();
        let resources: Vec<Resource> = catalog
            .names()
            .filter_map(|n| catalog.get(n))
            .cloned()
            .collect();
        let frames = sotw("7", "3", &resources);
        let expected = DiscoveryResponse {
            version_info: "7".into(),
            resources: resources.iter().map(Resource::any).collect(),
            type_url: SECRET_TYPE_URL.into(),
            nonce: "3".into(),
            ..DiscoveryResponse::default()
        };
        let bytes = body(&frames);
        assert_eq!(
            DiscoveryResponse::decode(bytes.as_slice()).unwrap(),
            expected
        );
        assert_eq!(bytes, expected.encode_to_vec(), "byte for byte");
    }

    #[test]
    fn delta_frames_decode_to_the_message_prost_would_write() {
        let catalog = catalog();
        let resources: Vec<Resource> = catalog
            .names()
            .filter_map(|n| catalog.get(n))
            .cloned()
            .collect();
        let removed = vec!["spiffe://gone.test".to_owned(), String::new()];
        let frames = delta("7", "1", &resources, &removed);
        let expected = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            resources: resources
                .iter()
                .map(|r| DeltaResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.any()),
                    ..DeltaResource::default()
                })
                .collect(),
            type_url: SECRET_TYPE_URL.into(),
            removed_resources: removed,
            nonce: "1".into(),
            ..DeltaDiscoveryResponse::default()
        };
        let bytes = body(&frames);
        assert_eq!(
            DeltaDiscoveryResponse::decode(bytes.as_slice()).unwrap(),
            expected
        );
        assert_eq!(bytes, expected.encode_to_vec(), "byte for byte");
    }

    #[test]
    fn large_resources_are_shared_and_sliced_not_copied() {
        let big = Resource {
            name: "spiffe://big.test".into(),
            encoded: Bytes::from(vec![7_u8; 3 * CHUNK + 10]),
            version: "v".into(),
        };
        let mut frames = sotw("1", "1", std::slice::from_ref(&big));
        let mut sizes = Vec::new();
        let mut shared = 0;
        while let Some(chunk) = frames.pop() {
            let inside = big.encoded.as_ptr_range();
            if inside.contains(&chunk.as_ptr()) {
                shared += chunk.len();
            }
            sizes.push(chunk.len());
        }
        assert_eq!(
            shared,
            big.encoded.len(),
            "every byte of the secret is the catalog's"
        );
        assert!(sizes.iter().all(|s| *s <= CHUNK), "{sizes:?}");
    }
}
