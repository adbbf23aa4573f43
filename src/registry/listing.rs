//! A listing of every federation relationship at one moment, as the admin API shows
//! them: the relationships in order, each with its origin, trust chain and chain
//! warnings. Built by the registry on every change and published through
//! [`RelationshipsView`]; immutable once built.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use spiffe_federation::TrustDomain;

use super::Origin;
use super::chain::{self, Chain, Link};
use crate::config;
use crate::relationship::Relationship;

/// Every relationship at one moment, as the admin API shows them: in configuration
/// order, then the API's by trust domain, each with its origin and trust chain.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    relationships: Arc<Vec<Relationship>>,
    details: BTreeMap<TrustDomain, Details>,
}

/// One relationship of a [`Listing`], before its chain is known.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The relationship.
    pub relationship: Relationship,
    /// Where it comes from.
    pub origin: Origin,
}

/// What a [`Listing`] knows of one relationship besides its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// Where it comes from.
    pub origin: Origin,
    /// Its trust chain (SPF-9).
    pub chain: Chain,
    /// What is doubtful about the chain (SEC-5).
    pub warnings: Vec<String>,
}

impl Listing {
    /// The listing of `listed`, in that order; chains are followed through all of
    /// them, `locals` ending a chain as local, and warned about beyond `max_depth`.
    pub fn new(listed: Vec<Listed>, locals: &BTreeSet<TrustDomain>, max_depth: usize) -> Self {
        let links: BTreeMap<TrustDomain, Link> = listed
            .iter()
            .map(|l| {
                let link = Link::of(&l.relationship);
                (l.relationship.trust_domain.clone(), link)
            })
            .collect();
        let details = listed
            .iter()
            .map(|l| {
                let td = &l.relationship.trust_domain;
                let chain = chain::chain(td, &links, locals);
                let warnings = chain::warnings(td, &chain, max_depth);
                let details = Details {
                    origin: l.origin,
                    chain,
                    warnings,
                };
                (td.clone(), details)
            })
            .collect();
        Self {
            relationships: Arc::new(listed.into_iter().map(|l| l.relationship).collect()),
            details,
        }
    }

    /// The relationships, in listing order.
    pub fn relationships(&self) -> &Arc<Vec<Relationship>> {
        &self.relationships
    }

    /// Origin and chain of the relationship with `trust_domain`.
    pub fn details(&self, trust_domain: &TrustDomain) -> Option<&Details> {
        self.details.get(trust_domain)
    }

    /// Each relationship with its details, in listing order.
    pub fn entries(&self) -> impl Iterator<Item = (&Relationship, &Details)> {
        self.relationships
            .iter()
            .filter_map(|rel| Some((rel, self.details.get(&rel.trust_domain)?)))
    }
}

/// The federation relationships, readable without locks; the relationship registry
/// publishes a new [`Listing`] on every change.
#[derive(Debug, Clone, Default)]
pub struct RelationshipsView {
    inner: Arc<ArcSwap<Listing>>,
}

impl RelationshipsView {
    /// A view holding `relationships`, all from the configuration file (no local
    /// trust domain known, chains warned about beyond the default depth).
    pub fn new(relationships: Vec<Relationship>) -> Self {
        let listed = relationships
            .into_iter()
            .map(|relationship| Listed {
                relationship,
                origin: Origin::Configuration,
            })
            .collect();
        let listing = Listing::new(
            listed,
            &std::collections::BTreeSet::new(),
            config::DEFAULT_MAX_TRUST_CHAIN_DEPTH,
        );
        Self {
            inner: Arc::new(ArcSwap::from_pointee(listing)),
        }
    }

    /// The current list; lock-free.
    pub fn load(&self) -> Arc<Vec<Relationship>> {
        Arc::clone(self.inner.load().relationships())
    }

    /// The current listing (with origins and trust chains); lock-free.
    pub fn listing(&self) -> Arc<Listing> {
        self.inner.load_full()
    }

    /// Replace the listing; every clone of this view sees the new one.
    pub fn publish(&self, listing: Listing) {
        self.inner.store(Arc::new(listing));
    }

    /// The relationship with `trust_domain`, if there is one.
    pub fn find(&self, trust_domain: &TrustDomain) -> Option<Relationship> {
        self.load()
            .iter()
            .find(|r| &r.trust_domain == trust_domain)
            .cloned()
    }
}
