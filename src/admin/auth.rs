//! Who is calling the admin API, and may they do this?
//!
//! Owns the access rules: a caller on the unix socket is trusted (the socket is
//! created 0600, so only the gateway's own user can connect); a caller over TCP must
//! present `Authorization: Bearer <token>` whose SHA-256 matches a configured token
//! hash, compared in constant time, or, over TLS, a client X509-SVID whose SPIFFE ID is
//! in `[[admin.clients]]`. On a connection with a verified client certificate, that ID
//! alone decides (an `Authorization` header is then ignored); without one, a token is
//! needed. Reads and writes are separate scopes. It does not own the listener or the
//! TLS handshake that verified the certificate ([`super::listen::tls`]).

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use spiffe_federation::SpiffeId;

use super::error::ApiError;
use crate::config::{AdminClientId, AdminConfig, AdminListen, AdminToken, Scope};
use crate::digest::sha256_hex;

/// Who made a request, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A local caller on the unix socket.
    LocalSocket,
    /// A named bearer token.
    Token {
        /// The token's configured name.
        name: String,
        /// What it may do.
        scope: Scope,
    },
    /// A client authenticated by its X509-SVID over mTLS.
    Spiffe {
        /// The SPIFFE ID of its verified SVID.
        id: SpiffeId,
        /// What it may do.
        scope: Scope,
    },
}

impl Principal {
    /// The name written to the audit log.
    pub fn audit_name(&self) -> String {
        match self {
            Self::LocalSocket => "unix-socket".to_owned(),
            Self::Token { name, .. } => format!("token:{name}"),
            Self::Spiffe { id, .. } => format!("spiffe:{id}"),
        }
    }

    fn allows(&self, needed: Scope) -> bool {
        match self {
            Self::LocalSocket => true,
            Self::Token { scope, .. } | Self::Spiffe { scope, .. } => {
                *scope == Scope::Write || needed == Scope::Read
            }
        }
    }
}

/// How requests reach the API.
#[derive(Debug, Clone)]
pub enum Access {
    /// Unix socket: callers are trusted.
    LocalSocket,
    /// TCP: callers must present a configured token.
    Tokens(Vec<AdminToken>),
    /// TCP over TLS: a listed client SVID, or a configured token.
    Tls(TlsAccess),
}

impl Access {
    /// The access rules of the admin listener on `listen` that `config` describes:
    /// trusted callers on the unix socket, configured tokens on TCP, tokens or listed
    /// client SVIDs on TLS.
    pub fn for_listener(listen: &AdminListen, config: &AdminConfig) -> Self {
        match (listen, &config.tls) {
            (AdminListen::Unix(_), _) => Self::LocalSocket,
            (AdminListen::Tcp(_), None) => Self::Tokens(config.tokens.clone()),
            (AdminListen::Tcp(_), Some(_)) => Self::Tls(TlsAccess::new(
                config.tokens.clone(),
                config.clients.clone(),
            )),
        }
    }
}

/// The credentials a TLS admin listener accepts, and the client ID its connection's
/// handshake verified, if any.
#[derive(Debug, Clone, Default)]
pub struct TlsAccess {
    tokens: Arc<[AdminToken]>,
    clients: Arc<[AdminClientId]>,
    peer: Option<SpiffeId>,
}

impl TlsAccess {
    /// Accept `tokens` and the SVIDs of `clients`; no connection yet.
    pub fn new(tokens: Vec<AdminToken>, clients: Vec<AdminClientId>) -> Self {
        Self {
            tokens: tokens.into(),
            clients: clients.into(),
            peer: None,
        }
    }

    /// The same rules for one connection whose handshake verified `peer`'s SVID (or
    /// saw no client certificate).
    #[must_use]
    pub fn for_peer(&self, peer: Option<SpiffeId>) -> Self {
        Self {
            tokens: Arc::clone(&self.tokens),
            clients: Arc::clone(&self.clients),
            peer,
        }
    }

    /// The configured tokens.
    pub fn tokens(&self) -> &[AdminToken] {
        &self.tokens
    }

    /// The allowed client IDs.
    pub fn clients(&self) -> &[AdminClientId] {
        &self.clients
    }

    fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(id) = &self.peer else {
            if self.tokens.is_empty() {
                return Err(ApiError::unauthenticated(
                    "present a client certificate (X509-SVID) listed in [[admin.clients]]",
                ));
            }
            return token_principal(&self.tokens, headers);
        };
        self.clients
            .iter()
            .find(|client| client.spiffe_id == *id)
            .map(|client| Principal::Spiffe {
                id: id.clone(),
                scope: client.scope,
            })
            .ok_or_else(|| {
                ApiError::forbidden(format!(
                    "{id} is not an allowed admin client (not in [[admin.clients]])"
                ))
            })
    }
}

impl Access {
    /// Authenticate the request and check it may act with `needed` scope.
    ///
    /// # Errors
    /// 401 when no valid token (or client certificate) is presented over TCP; 403 when
    /// a verified client ID is not allowed, or when the caller's scope is read-only and
    /// the route writes.
    pub fn authorize(&self, headers: &HeaderMap, needed: Scope) -> Result<Principal, ApiError> {
        let principal = match self {
            Self::LocalSocket => Principal::LocalSocket,
            Self::Tokens(tokens) => token_principal(tokens, headers)?,
            Self::Tls(tls) => tls.principal(headers)?,
        };
        if principal.allows(needed) {
            Ok(principal)
        } else {
            Err(ApiError::forbidden(format!(
                "{} may only read",
                principal.audit_name()
            )))
        }
    }
}

fn token_principal(tokens: &[AdminToken], headers: &HeaderMap) -> Result<Principal, ApiError> {
    let presented = bearer(headers)
        .ok_or_else(|| ApiError::unauthenticated("send Authorization: Bearer <token>"))?;
    let digest = sha256_hex(presented.as_bytes());
    let token = tokens
        .iter()
        .find(|t| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                t.sha256.as_bytes(),
                digest.as_bytes(),
            )
            .is_ok()
        })
        .ok_or_else(|| ApiError::unauthenticated("unknown token"))?;
    Ok(Principal::Token {
        name: token.name.clone(),
        scope: token.scope,
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use axum::http::StatusCode;

    use super::*;

    fn tokens() -> Access {
        Access::Tokens(vec![
            AdminToken {
                name: "ops".into(),
                sha256: sha256_hex(b"write-secret"),
                scope: Scope::Write,
            },
            AdminToken {
                name: "viewer".into(),
                sha256: sha256_hex(b"read-secret"),
                scope: Scope::Read,
            },
        ])
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn unix_socket_callers_may_write() {
        let principal = Access::LocalSocket
            .authorize(&HeaderMap::new(), Scope::Write)
            .unwrap();
        assert_eq!(principal.audit_name(), "unix-socket");
    }

    #[test]
    fn tcp_without_token_is_unauthenticated() {
        let err = tokens()
            .authorize(&HeaderMap::new(), Scope::Read)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        let err = tokens()
            .authorize(&with_auth("Bearer nope"), Scope::Read)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        let err = tokens()
            .authorize(&with_auth("Basic d3JpdGUtc2VjcmV0"), Scope::Read)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn read_tokens_cannot_write() {
        let headers = with_auth("Bearer read-secret");
        assert!(tokens().authorize(&headers, Scope::Read).is_ok());
        let err = tokens().authorize(&headers, Scope::Write).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
    }

    fn tls(peer: Option<&str>, with_tokens: bool) -> Access {
        let Access::Tokens(tokens) = tokens() else {
            unreachable!()
        };
        let clients = vec![
            AdminClientId {
                spiffe_id: "spiffe://td.example/ops".parse().unwrap(),
                scope: Scope::Write,
            },
            AdminClientId {
                spiffe_id: "spiffe://other.example/viewer".parse().unwrap(),
                scope: Scope::Read,
            },
        ];
        let access = TlsAccess::new(if with_tokens { tokens } else { Vec::new() }, clients);
        Access::Tls(access.for_peer(peer.map(|p| p.parse().unwrap())))
    }

    #[test]
    fn sec_3_listed_client_ids_act_with_their_scope() {
        let principal = tls(Some("spiffe://td.example/ops"), false)
            .authorize(&HeaderMap::new(), Scope::Write)
            .unwrap();
        assert_eq!(principal.audit_name(), "spiffe:spiffe://td.example/ops");
        let viewer = tls(Some("spiffe://other.example/viewer"), true);
        assert!(viewer.authorize(&HeaderMap::new(), Scope::Read).is_ok());
        let err = viewer
            .authorize(&with_auth("Bearer write-secret"), Scope::Write)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN, "the certificate decides");
    }

    #[test]
    fn sec_3_unlisted_client_id_is_forbidden_by_name() {
        let err = tls(Some("spiffe://td.example/intruder"), true)
            .authorize(&with_auth("Bearer write-secret"), Scope::Read)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(
            err.message.contains("spiffe://td.example/intruder"),
            "{}",
            err.message
        );
    }

    #[test]
    fn sec_3_without_a_certificate_tokens_still_work() {
        let access = tls(None, true);
        let principal = access
            .authorize(&with_auth("Bearer write-secret"), Scope::Write)
            .unwrap();
        assert_eq!(principal.audit_name(), "token:ops");
        let err = access
            .authorize(&HeaderMap::new(), Scope::Read)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        let err = tls(None, false)
            .authorize(&with_auth("Bearer write-secret"), Scope::Read)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED, "mTLS only: no tokens");
    }

    #[test]
    fn write_tokens_are_named_in_the_audit_log() {
        let principal = tokens()
            .authorize(&with_auth("bearer write-secret"), Scope::Write)
            .unwrap();
        assert_eq!(principal.audit_name(), "token:ops");
    }
}
