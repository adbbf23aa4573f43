//! Trust chains between federation relationships (SPF-9, SEC-5), as pure functions.
//!
//! An `https_spiffe` endpoint is authenticated with the bundle of its endpoint SPIFFE
//! ID's trust domain. When that domain is another foreign one, its bundle is fetched
//! by another relationship, whose endpoint may in turn depend on a third: a chain.
//! SPIFFE Federation §7.6 says every chain ends in a self-serving trust domain, a Web
//! PKI endpoint, a static bundle, or is out of scope, and that long chains are
//! "generally discouraged". This module follows the chain of one relationship, says
//! where it ends, finds cycles, and phrases the warnings. It owns no state: the
//! registry gives it the relationships and the local trust domains.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use spiffe_federation::TrustDomain;

use crate::config::ProfileName;
use crate::relationship::Relationship;

/// How one relationship's endpoint is authenticated, as far as chains go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// `https_web`: Web PKI; a chain ends here.
    Web,
    /// `https_spiffe`: by the bundle of `endpoint`, the trust domain of the endpoint
    /// SPIFFE ID; `bootstrap` says whether the relationship carries a bootstrap bundle
    /// for it.
    Spiffe {
        /// The endpoint SPIFFE ID's trust domain.
        endpoint: TrustDomain,
        /// A bootstrap bundle is configured.
        bootstrap: bool,
    },
}

impl Link {
    /// The link of a relationship.
    pub fn of(relationship: &Relationship) -> Self {
        let bootstrap = relationship.bootstrap.is_some();
        match (&relationship.profile, &relationship.endpoint_spiffe_id) {
            (ProfileName::HttpsSpiffe, Some(id)) => Self::Spiffe {
                endpoint: id.trust_domain().clone(),
                bootstrap,
            },
            // Validation refuses https_spiffe without an endpoint ID; such a
            // relationship never connects, so it depends on nothing.
            _ => Self::Web,
        }
    }
}

/// Where a chain ends (SPIFFE Federation §7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainEnd {
    /// An `https_web` endpoint, authenticated by Web PKI.
    WebPki,
    /// A self-serving `https_spiffe` endpoint: authenticated by its own trust
    /// domain's previous bundle.
    SelfServing,
    /// A trust domain this gateway serves.
    Local,
    /// A trust domain no relationship fetches, whose first bundle is the bootstrap
    /// bundle of the relationship that needs it.
    Bootstrap,
    /// A trust domain no relationship fetches and no bootstrap bundle gives: its
    /// bundle is set by an operator (`PUT /v1/bundles/{td}`), or missing.
    Static,
    /// The chain comes back to a trust domain already in it.
    Cycle,
}

/// One relationship's trust chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// The trust domains whose bundles authenticate this endpoint, nearest first,
    /// each once; the relationship's own domain is not listed.
    pub depends_on: Vec<TrustDomain>,
    /// How many links the chain has: the length of `depends_on`.
    pub chain_depth: usize,
    /// Where it ends.
    pub chain_end: ChainEnd,
    /// Whether it comes back to a trust domain already in it.
    pub cycle: bool,
}

/// Follow the chain of the relationship with `start` through `links` (every
/// relationship, by trust domain); `locals` are the domains this gateway serves.
pub fn chain(
    start: &TrustDomain,
    links: &BTreeMap<TrustDomain, Link>,
    locals: &BTreeSet<TrustDomain>,
) -> Chain {
    let mut depends_on: Vec<TrustDomain> = Vec::new();
    let mut current = start;
    let mut bootstrapped = false;
    let chain_end = loop {
        let Some(link) = links.get(current) else {
            break if locals.contains(current) {
                ChainEnd::Local
            } else if bootstrapped {
                ChainEnd::Bootstrap
            } else {
                ChainEnd::Static
            };
        };
        match link {
            Link::Web => break ChainEnd::WebPki,
            Link::Spiffe {
                endpoint,
                bootstrap,
            } => {
                if endpoint == current {
                    break ChainEnd::SelfServing;
                }
                if endpoint == start || depends_on.contains(endpoint) {
                    break ChainEnd::Cycle;
                }
                depends_on.push(endpoint.clone());
                bootstrapped = *bootstrap;
                current = endpoint;
            }
        }
    };
    Chain {
        chain_depth: depends_on.len(),
        cycle: chain_end == ChainEnd::Cycle,
        chain_end,
        depends_on,
    }
}

/// What is doubtful about `chain` (of the relationship with `start`): a cycle, and a
/// depth beyond `max_depth` (`policy.max_trust_chain_depth`).
pub fn warnings(start: &TrustDomain, chain: &Chain, max_depth: usize) -> Vec<String> {
    let path = std::iter::once(start)
        .chain(&chain.depends_on)
        .map(TrustDomain::as_str)
        .collect::<Vec<_>>()
        .join(" -> ");
    let mut warnings = Vec::new();
    if chain.cycle {
        warnings.push(format!(
            "trust chain {path} -> ... is a cycle: these endpoints authenticate one another, so a lost or compromised bundle in it cannot be recovered without an operator (SPIFFE Federation §7.6)"
        ));
    }
    if chain.chain_depth > max_depth {
        warnings.push(format!(
            "trust chain {path} has depth {}, more than policy.max_trust_chain_depth ({max_depth}): each link trusts the endpoint of the next, and long chains are discouraged (SPIFFE Federation §7.6)",
            chain.chain_depth
        ));
    }
    warnings
}

/// The relationships, other than `target`'s own, whose `https_spiffe` endpoint is
/// authenticated by `target`'s bundle: what deleting `target` would break.
pub fn dependents(target: &TrustDomain, links: &BTreeMap<TrustDomain, Link>) -> Vec<TrustDomain> {
    links
        .iter()
        .filter(|(td, link)| {
            *td != target && matches!(link, Link::Spiffe { endpoint, .. } if endpoint == target)
        })
        .map(|(td, _)| td.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(name: &str) -> TrustDomain {
        name.parse().unwrap()
    }

    fn spiffe(endpoint: &str) -> Link {
        Link::Spiffe {
            endpoint: td(endpoint),
            bootstrap: false,
        }
    }

    fn links(entries: &[(&str, Link)]) -> BTreeMap<TrustDomain, Link> {
        entries
            .iter()
            .map(|(name, link)| (td(name), link.clone()))
            .collect()
    }

    fn chain_of(start: &str, links: &BTreeMap<TrustDomain, Link>) -> Chain {
        chain(&td(start), links, &[td("home.example")].into())
    }

    fn names(chain: &Chain) -> Vec<&str> {
        chain.depends_on.iter().map(TrustDomain::as_str).collect()
    }

    #[test]
    fn spf_9_web_and_self_serving_endpoints_end_the_chain_at_once() {
        let l = links(&[("a.example", Link::Web), ("b.example", spiffe("b.example"))]);
        let web = chain_of("a.example", &l);
        assert_eq!((web.chain_depth, web.chain_end), (0, ChainEnd::WebPki));
        let own = chain_of("b.example", &l);
        assert_eq!((own.chain_depth, own.chain_end), (0, ChainEnd::SelfServing));
        assert!(names(&own).is_empty() && !own.cycle);
    }

    #[test]
    fn spf_9_chain_follows_endpoint_ids_to_its_end() {
        let l = links(&[
            ("a.example", spiffe("b.example")),
            ("b.example", spiffe("c.example")),
            ("c.example", spiffe("c.example")),
            ("d.example", spiffe("a.example")),
            ("e.example", spiffe("w.example")),
            ("w.example", Link::Web),
        ]);
        let a = chain_of("a.example", &l);
        assert_eq!(names(&a), ["b.example", "c.example"]);
        assert_eq!((a.chain_depth, a.chain_end), (2, ChainEnd::SelfServing));
        let d = chain_of("d.example", &l);
        assert_eq!(names(&d), ["a.example", "b.example", "c.example"]);
        assert_eq!(d.chain_depth, 3);
        let e = chain_of("e.example", &l);
        assert_eq!(
            (names(&e), e.chain_end),
            (vec!["w.example"], ChainEnd::WebPki)
        );
    }

    #[test]
    fn spf_9_domains_without_a_relationship_end_as_local_bootstrap_or_static() {
        let l = links(&[
            ("a.example", spiffe("home.example")),
            (
                "b.example",
                Link::Spiffe {
                    endpoint: td("anchor.example"),
                    bootstrap: true,
                },
            ),
            ("c.example", spiffe("anchor.example")),
        ]);
        assert_eq!(chain_of("a.example", &l).chain_end, ChainEnd::Local);
        let b = chain_of("b.example", &l);
        assert_eq!(
            (names(&b), b.chain_end),
            (vec!["anchor.example"], ChainEnd::Bootstrap)
        );
        assert_eq!(chain_of("c.example", &l).chain_end, ChainEnd::Static);
    }

    #[test]
    fn spf_9_cycles_are_found_and_end_the_walk() {
        let l = links(&[
            ("a.example", spiffe("b.example")),
            ("b.example", spiffe("a.example")),
            ("x.example", spiffe("y.example")),
            ("y.example", spiffe("z.example")),
            ("z.example", spiffe("y.example")),
        ]);
        let a = chain_of("a.example", &l);
        assert!(a.cycle);
        assert_eq!(
            (names(&a), a.chain_end),
            (vec!["b.example"], ChainEnd::Cycle)
        );
        // A chain that runs into a cycle it does not start is a cycle too.
        let x = chain_of("x.example", &l);
        assert!(x.cycle);
        assert_eq!(names(&x), ["y.example", "z.example"]);
    }

    #[test]
    fn sec_5_warnings_name_cycles_and_depth_beyond_the_limit() {
        let l = links(&[
            ("a.example", spiffe("b.example")),
            ("b.example", spiffe("c.example")),
            ("c.example", spiffe("c.example")),
        ]);
        let a = chain_of("a.example", &l);
        assert!(warnings(&td("a.example"), &a, 2).is_empty());
        let deep = warnings(&td("a.example"), &a, 1);
        assert_eq!(deep.len(), 1);
        assert!(
            deep[0].contains("a.example -> b.example -> c.example")
                && deep[0].contains("max_trust_chain_depth (1)"),
            "{}",
            deep[0]
        );
        let cyclic = links(&[
            ("a.example", spiffe("b.example")),
            ("b.example", spiffe("a.example")),
        ]);
        let looped = warnings(&td("a.example"), &chain_of("a.example", &cyclic), 2);
        assert_eq!(looped.len(), 1);
        assert!(looped[0].contains("cycle"), "{}", looped[0]);
    }

    #[test]
    fn dependents_are_the_other_relationships_authenticated_by_a_domain() {
        let l = links(&[
            ("a.example", spiffe("b.example")),
            ("b.example", spiffe("b.example")),
            ("c.example", spiffe("b.example")),
            ("d.example", Link::Web),
        ]);
        let found = dependents(&td("b.example"), &l);
        assert_eq!(found, [td("a.example"), td("c.example")]);
        assert!(dependents(&td("d.example"), &l).is_empty());
    }
}
