//! The xDS conversation of one stream, as pure state machines: what to answer to a
//! request, and what to push when the catalog changes. No I/O, no clock.
//!
//! State of the world ([`Sotw`], `StreamSecrets`) follows SPIRE's agent
//! (`pkg/agent/endpoints/sdsv3`): every response carries the full current state of
//! the subscribed names (DIST-5), `version_info` is the trust store's global revision,
//! and each response has a fresh nonce. A request whose `response_nonce` is not the
//! last nonce sent is stale and ignored; a request with `error_detail` is a NACK: it is
//! reported (the stream goes on, and the NACKed state is not re-sent until something
//! changes); a request whose name set changed is answered at once; an unchanged name
//! set is an ACK and needs no answer. An empty name list means every `spiffe://<td>`
//! resource, as in SPIRE.
//!
//! Unlike SPIRE, a name that is not offered (unknown, outside the allow-list, or a
//! domain not fetched yet or removed) is left out of the response instead of failing
//! the stream with `InvalidArgument`: Envoy multiplexes every SDS name on one stream,
//! so an error for one removed domain would stop `ALL` and every other secret from
//! updating (and, on reconnection, fail again). A name that becomes available later
//! is pushed then.
//!
//! Removal (POLL-4, DIST-4): a removed domain leaves `ALL` in the next push, and its
//! `spiffe://<td>` resource is no longer sent. In state-of-the-world xDS, absence from
//! a response removes only Listener and Cluster resources; Envoy keeps the last
//! secret it got under a name until the listener or cluster that refers to it goes.
//! In [`Delta`] (`DeltaSecrets`) the name is listed in `removed_resources`, which
//! Envoy's SDS also ignores for the same reason. So the removal that takes effect in
//! Envoy is the one in `ALL`; docs/envoy.md says to use it.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::resources::{Catalog, Resource, SECRET_TYPE_URL};
use super::wire::{self, Frames};

/// What a request asks of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Answer now with the current state.
    Respond,
    /// Nothing to send.
    Nothing,
}

/// A request that ends the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The request asks for another resource type than `Secret`.
    #[error("type_url {found:?} is not {SECRET_TYPE_URL}: this server offers secrets only")]
    WrongType {
        /// The type URL asked for.
        found: String,
    },
}

/// A NACK: the client could not apply a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version the client still uses.
    pub version_info: String,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// The client's reason.
    pub message: String,
}

/// What the caller should know about a request besides the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// What to do.
    pub step: Step,
    /// Set when the request NACKs a response.
    pub nack: Option<Nack>,
    /// The request carried a nonce other than the last one sent, and was ignored.
    pub stale: bool,
}

fn check_type(type_url: &str) -> Result<(), ProtocolError> {
    if type_url.is_empty() || type_url == SECRET_TYPE_URL {
        Ok(())
    } else {
        Err(ProtocolError::WrongType {
            found: type_url.to_owned(),
        })
    }
}

fn nack(version_info: &str, nonce: &str, detail: Option<&RpcStatus>) -> Option<Nack> {
    detail.map(|status| Nack {
        version_info: version_info.to_owned(),
        nonce: nonce.to_owned(),
        message: status.message.clone(),
    })
}

/// One `StreamSecrets` conversation.
#[derive(Debug, Default)]
pub struct Sotw {
    subscribed: Option<BTreeSet<String>>,
    last_nonce: Option<String>,
    sent: Option<Vec<(String, String)>>,
    nonces: u64,
}

impl Sotw {
    /// Take in a request.
    ///
    /// # Errors
    /// [`ProtocolError`] when the request cannot be served at all.
    pub fn receive(&mut self, request: &DiscoveryRequest) -> Result<Received, ProtocolError> {
        check_type(&request.type_url)?;
        let nack = nack(
            &request.version_info,
            &request.response_nonce,
            request.error_detail.as_ref(),
        );
        if let Some(last) = &self.last_nonce
            && *last != request.response_nonce
        {
            return Ok(Received {
                step: Step::Nothing,
                nack,
                stale: true,
            });
        }
        let names: BTreeSet<String> = request
            .resource_names
            .iter()
            .filter(|name| !name.is_empty())
            .cloned()
            .collect();
        let changed = self.subscribed.as_ref() != Some(&names);
        self.subscribed = Some(names);
        Ok(Received {
            step: if changed {
                Step::Respond
            } else {
                Step::Nothing
            },
            nack,
            stale: false,
        })
    }

    /// The subscribed names, once a request has come in.
    pub fn subscribed(&self) -> Option<&BTreeSet<String>> {
        self.subscribed.as_ref()
    }

    /// The response to send for `catalog`: always after [`Step::Respond`] (`force`),
    /// otherwise only when the subscribed resources differ from the last ones sent.
    pub fn respond(&mut self, catalog: &Catalog, force: bool) -> Option<SotwResponse> {
        let names = self.subscribed.as_ref()?;
        let selected = catalog.select(names);
        let fingerprint: Vec<(String, String)> = selected
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        if !force && self.sent.as_ref() == Some(&fingerprint) {
            return None;
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let response = SotwResponse {
            version_info: catalog.revision.to_string(),
            resources: selected.into_iter().cloned().collect(),
            nonce: nonce.clone(),
        };
        self.last_nonce = Some(nonce);
        self.sent = Some(fingerprint);
        Some(response)
    }
}

/// A `StreamSecrets` response: the current state of the subscribed names.
#[derive(Debug, Clone, PartialEq)]
pub struct SotwResponse {
    /// The trust store revision.
    pub version_info: String,
    /// The resources, in name order.
    pub resources: Vec<Resource>,
    /// This response's nonce.
    pub nonce: String,
}

impl SotwResponse {
    /// As a protobuf message (unary answers, tests).
    pub fn message(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version_info.clone(),
            resources: self.resources.iter().map(Resource::any).collect(),
            type_url: SECRET_TYPE_URL.to_owned(),
            nonce: self.nonce.clone(),
            ..DiscoveryResponse::default()
        }
    }

    /// As gRPC frames sharing the catalog's encodings.
    pub fn frames(&self) -> Frames {
        wire::sotw(&self.version_info, &self.nonce, &self.resources)
    }
}

/// A `DeltaSecrets` response: changed resources and removed names.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaResponse {
    /// The trust store revision.
    pub system_version_info: String,
    /// Resources the client lacks or holds at another version.
    pub resources: Vec<Resource>,
    /// Names the client holds that are no longer offered.
    pub removed_resources: Vec<String>,
    /// This response's nonce.
    pub nonce: String,
}

impl DeltaResponse {
    /// As a protobuf message (tests).
    pub fn message(&self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.system_version_info.clone(),
            resources: self
                .resources
                .iter()
                .map(|resource| DeltaResource {
                    name: resource.name.clone(),
                    version: resource.version.clone(),
                    resource: Some(resource.any()),
                    ..DeltaResource::default()
                })
                .collect(),
            type_url: SECRET_TYPE_URL.to_owned(),
            removed_resources: self.removed_resources.clone(),
            nonce: self.nonce.clone(),
            ..DeltaDiscoveryResponse::default()
        }
    }

    /// As gRPC frames sharing the catalog's encodings.
    pub fn frames(&self) -> Frames {
        wire::delta(
            &self.system_version_info,
            &self.nonce,
            &self.resources,
            &self.removed_resources,
        )
    }
}

/// One `DeltaSecrets` conversation: per-resource versions, `removed_resources`.
#[derive(Debug, Default)]
pub struct Delta {
    started: bool,
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the client holds: name → version.
    known: BTreeMap<String, String>,
    nonces: u64,
}

impl Delta {
    /// Take in a request: subscriptions, unsubscriptions, (N)ACKs. The first request
    /// may carry the versions the client already holds (after a reconnection); a
    /// first request without names subscribes to every `spiffe://<td>` resource
    /// (legacy wildcard), as does the name `*`.
    ///
    /// # Errors
    /// [`ProtocolError`] when the request cannot be served at all.
    pub fn receive(&mut self, request: &DeltaDiscoveryRequest) -> Result<Received, ProtocolError> {
        check_type(&request.type_url)?;
        let mut changed = false;
        if !self.started {
            self.started = true;
            changed = true;
            self.known = request
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.wildcard = request.resource_names_subscribe.is_empty();
        }
        for name in &request.resource_names_subscribe {
            changed = true;
            if name == "*" {
                self.wildcard = true;
            } else if !name.is_empty() {
                self.subscribed.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            changed = true;
            if name == "*" {
                self.wildcard = false;
            } else {
                self.subscribed.remove(name);
                self.known.remove(name);
            }
        }
        Ok(Received {
            step: if changed {
                Step::Respond
            } else {
                Step::Nothing
            },
            nack: nack("", &request.response_nonce, request.error_detail.as_ref()),
            stale: false,
        })
    }

    /// The changes to send for `catalog`: resources the client lacks or holds at
    /// another version, and names it holds that are no longer offered. `None` when
    /// there is nothing to say.
    pub fn respond(&mut self, catalog: &Catalog) -> Option<DeltaResponse> {
        let mut wanted = self.subscribed.clone();
        if self.wildcard {
            wanted.extend(catalog.domain_names().iter().cloned());
        }
        let mut resources = Vec::new();
        for resource in wanted.iter().filter_map(|name| catalog.get(name)) {
            if self.known.get(&resource.name) != Some(&resource.version) {
                self.known
                    .insert(resource.name.clone(), resource.version.clone());
                resources.push(resource.clone());
            }
        }
        let removed: Vec<String> = self
            .known
            .keys()
            .filter(|name| !wanted.contains(*name) || catalog.get(name).is_none())
            .cloned()
            .collect();
        for name in &removed {
            self.known.remove(name);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.nonces += 1;
        Some(DeltaResponse {
            system_version_info: catalog.revision.to_string(),
            resources,
            removed_resources: removed,
            nonce: self.nonces.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::sds::resources::Naming;
    use crate::trust::policy::testing::{bundle, td};

    fn naming() -> Naming {
        Naming {
            all_bundles_name: "ALL".into(),
            default_bundle_name: "ROOTCA".into(),
            default_domain: None,
            allowed: None,
        }
    }

    fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
            version_info: version.to_owned(),
            response_nonce: nonce.to_owned(),
            type_url: SECRET_TYPE_URL.to_owned(),
            ..DiscoveryRequest::default()
        }
    }

    fn names_of(response: &DiscoveryResponse) -> Vec<String> {
        use prost::Message as _;
        response
            .resources
            .iter()
            .map(|any| {
                envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(
                    any.value.as_slice(),
                )
                .unwrap()
                .name
            })
            .collect()
    }

    #[test]
    fn sotw_answers_new_names_ignores_acks_and_stale_nonces() {
        let a = bundle(&td("a.test"), None);
        let catalog = Catalog::build(3, [&a], &naming());
        let mut sotw = Sotw::default();
        assert_eq!(sotw.respond(&catalog, false), None, "nothing asked yet");
        let received = sotw.receive(&request(&["ALL"], "", "")).unwrap();
        assert_eq!(received.step, Step::Respond);
        let first = sotw.respond(&catalog, true).unwrap().message();
        assert_eq!(first.version_info, "3");
        assert_eq!(first.type_url, SECRET_TYPE_URL);
        assert_eq!(names_of(&first), ["ALL"]);
        // ACK: same names, the nonce just sent.
        let ack = sotw.receive(&request(&["ALL"], "3", &first.nonce)).unwrap();
        assert_eq!(ack.step, Step::Nothing);
        assert!(ack.nack.is_none());
        // Stale: an older nonce is ignored even with new names.
        let stale = sotw
            .receive(&request(&["spiffe://a.test"], "3", "0"))
            .unwrap();
        assert!(stale.stale);
        assert_eq!(stale.step, Step::Nothing);
        // Same catalog, nothing changed for the subscription: no push.
        assert_eq!(sotw.respond(&catalog, false), None);
        let more = sotw
            .receive(&request(&["ALL", "spiffe://a.test"], "3", &first.nonce))
            .unwrap();
        assert_eq!(more.step, Step::Respond);
        let second = sotw.respond(&catalog, true).unwrap().message();
        assert_ne!(second.nonce, first.nonce);
        assert_eq!(names_of(&second), ["ALL", "spiffe://a.test"]);
    }

    #[test]
    fn dist_5_sotw_pushes_full_state_and_drops_removed_domains() {
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        let mut sotw = Sotw::default();
        sotw.receive(&request(
            &["ALL", "spiffe://a.test", "spiffe://b.test"],
            "",
            "",
        ))
        .unwrap();
        let both = Catalog::build(1, [&a, &b], &naming());
        let first = sotw.respond(&both, true).unwrap().message();
        assert_eq!(
            names_of(&first),
            ["ALL", "spiffe://a.test", "spiffe://b.test"]
        );
        let only_a = Catalog::build(2, [&a], &naming());
        let second = sotw.respond(&only_a, false).unwrap().message();
        assert_eq!(second.version_info, "2");
        assert_eq!(names_of(&second), ["ALL", "spiffe://a.test"]);
        // A change to a domain nobody subscribed to is not pushed.
        let c = bundle(&td("c.test"), None);
        let mut narrow = Sotw::default();
        narrow
            .receive(&request(&["spiffe://a.test"], "", ""))
            .unwrap();
        narrow.respond(&only_a, true).unwrap();
        assert_eq!(
            narrow.respond(&Catalog::build(3, [&a, &c], &naming()), false),
            None
        );
    }

    #[test]
    fn sotw_nack_is_reported_and_the_stream_goes_on() {
        let a = bundle(&td("a.test"), None);
        let catalog = Catalog::build(1, [&a], &naming());
        let mut sotw = Sotw::default();
        sotw.receive(&request(&["ALL"], "", "")).unwrap();
        let sent = sotw.respond(&catalog, true).unwrap().message();
        let mut nack = request(&["ALL"], "", &sent.nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad CA".into(),
            details: Vec::new(),
        });
        let received = sotw.receive(&nack).unwrap();
        assert_eq!(
            received.step,
            Step::Nothing,
            "the NACKed state is not resent"
        );
        assert_eq!(
            received.nack,
            Some(Nack {
                version_info: String::new(),
                nonce: sent.nonce.clone(),
                message: "bad CA".into()
            })
        );
        let b = bundle(&td("a.test"), None);
        assert!(
            sotw.respond(&Catalog::build(2, [&b], &naming()), false)
                .is_some()
        );
    }

    #[test]
    fn wrong_type_url_is_refused() {
        let mut sotw = Sotw::default();
        let mut wrong = request(&["ALL"], "", "");
        wrong.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
        assert!(matches!(
            sotw.receive(&wrong),
            Err(ProtocolError::WrongType { .. })
        ));
    }

    #[test]
    fn dist_5_delta_sends_changes_and_removed_resources() {
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        let mut delta = Delta::default();
        let subscribe = DeltaDiscoveryRequest {
            resource_names_subscribe: vec!["ALL".into(), "spiffe://b.test".into()],
            type_url: SECRET_TYPE_URL.into(),
            ..DeltaDiscoveryRequest::default()
        };
        assert_eq!(delta.receive(&subscribe).unwrap().step, Step::Respond);
        let both = Catalog::build(1, [&a, &b], &naming());
        let first = delta.respond(&both).unwrap().message();
        let names: Vec<_> = first.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ALL", "spiffe://b.test"]);
        assert!(first.removed_resources.is_empty());
        assert_eq!(delta.respond(&both), None, "nothing new");
        let only_a = Catalog::build(2, [&a], &naming());
        let second = delta.respond(&only_a).unwrap().message();
        let names: Vec<_> = second.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ALL"], "ALL changed");
        assert_eq!(second.removed_resources, ["spiffe://b.test"]);
        assert_eq!(second.system_version_info, "2");
    }

    #[test]
    fn delta_initial_versions_and_wildcard() {
        let a = bundle(&td("a.test"), None);
        let catalog = Catalog::build(1, [&a], &naming());
        let held = catalog.get("spiffe://a.test").unwrap().version.clone();
        let mut delta = Delta::default();
        let first = DeltaDiscoveryRequest {
            initial_resource_versions: [("spiffe://a.test".to_owned(), held)].into(),
            ..DeltaDiscoveryRequest::default()
        };
        delta.receive(&first).unwrap();
        assert_eq!(delta.respond(&catalog), None, "the client already holds it");
        let gone = Catalog::build(2, [], &naming());
        assert_eq!(
            delta.respond(&gone).unwrap().message().removed_resources,
            ["spiffe://a.test"]
        );
    }
}
