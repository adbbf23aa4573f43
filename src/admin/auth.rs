//! Who is calling the admin API, and may they do this?
//!
//! Owns the access rules: a caller on the unix socket is trusted (the socket is
//! created 0600, so only the gateway's own user can connect); a caller over TCP must
//! present `Authorization: Bearer <token>` whose SHA-256 matches a configured token
//! hash, compared in constant time. Reads and writes are separate scopes. It does not
//! own the listener.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::error::ApiError;
use crate::config::{AdminToken, Scope};

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
}

impl Principal {
    /// The name written to the audit log.
    pub fn audit_name(&self) -> String {
        match self {
            Self::LocalSocket => "unix-socket".to_owned(),
            Self::Token { name, .. } => format!("token:{name}"),
        }
    }

    fn allows(&self, needed: Scope) -> bool {
        match self {
            Self::LocalSocket => true,
            Self::Token { scope, .. } => *scope == Scope::Write || needed == Scope::Read,
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
}

impl Access {
    /// Authenticate the request and check it may act with `needed` scope.
    ///
    /// # Errors
    /// 401 when no valid token is presented over TCP; 403 when the token's scope is
    /// read-only and the route writes.
    pub fn authorize(&self, headers: &HeaderMap, needed: Scope) -> Result<Principal, ApiError> {
        let principal = match self {
            Self::LocalSocket => Principal::LocalSocket,
            Self::Tokens(tokens) => {
                let presented = bearer(headers).ok_or_else(|| {
                    ApiError::unauthenticated("send Authorization: Bearer <token>")
                })?;
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
                Principal::Token {
                    name: token.name.clone(),
                    scope: token.scope,
                }
            }
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Lower-case hex SHA-256, the form tokens are configured in (`fedgw admin hash-token`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
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
    fn sha256_hex_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
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

    #[test]
    fn write_tokens_are_named_in_the_audit_log() {
        let principal = tokens()
            .authorize(&with_auth("bearer write-secret"), Scope::Write)
            .unwrap();
        assert_eq!(principal.audit_name(), "token:ops");
    }
}
