//! Reading a bundle document: document-level rules first, then each JWK element.
//!
//! Document faults (TDB §4.1, EXT-4) are errors; element faults (TDB §4.1.3, §4.2,
//! X509-SVID §6.2, JWT-SVID §6.2, WIT-SVID §6.2, RFC 7517 §4-5) leave the element out.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::authority::{EcCurve, JwtAuthority, PublicKey, X509Authority, trim_leading_zeros};
use super::json::{Json, Members, pointer};
use super::{Bundle, BundleError, IgnoreReason, Ignored, Lint, LintKind, Parsed};
use crate::trust_domain::TrustDomain;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Check size and encoding, then read the JSON tree, refusing trailing data.
pub(crate) fn read_document(document: &[u8], limit: usize) -> Result<Json, BundleError> {
    if document.len() > limit {
        return Err(BundleError::TooLarge {
            limit,
            actual: document.len(),
        });
    }
    if document.starts_with(UTF8_BOM) {
        return Err(BundleError::ByteOrderMark);
    }
    let text = std::str::from_utf8(document).map_err(|err| BundleError::NotUtf8 {
        offset: err.valid_up_to(),
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let json: Json = serde::Deserialize::deserialize(&mut deserializer).map_err(syntax_error)?;
    deserializer
        .end()
        .map_err(|err| BundleError::TrailingData {
            line: err.line(),
            column: err.column(),
        })?;
    Ok(json)
}

fn syntax_error(err: serde_json::Error) -> BundleError {
    let message = err.to_string();
    // serde_json appends " at line L column C"; the variant carries those separately.
    let message = match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message,
    };
    BundleError::Syntax {
        line: err.line(),
        column: err.column(),
        message,
    }
}

/// Build a bundle from a parsed document located at `location` (a JSON Pointer).
pub(crate) fn bundle_from_json(
    trust_domain: &TrustDomain,
    json: &Json,
    location: &str,
) -> Result<Parsed, BundleError> {
    let Json::Object(members) = json else {
        return Err(BundleError::WrongType {
            location: location.to_owned(),
            expected: "a JSON object (a JWK Set)",
            found: json.type_name(),
        });
    };
    let members = Members(members);
    if let Some(name) = members.first_duplicate() {
        return Err(BundleError::DuplicateMember {
            location: location.to_owned(),
            name: name.to_owned(),
        });
    }
    let mut lints = Vec::new();
    let keys = match members.get("keys") {
        Some(Json::Array(keys)) => keys,
        Some(other) => {
            return Err(BundleError::WrongType {
                location: pointer(location, "keys"),
                expected: "an array of JWKs",
                found: other.type_name(),
            });
        }
        None => {
            return Err(BundleError::MissingMember {
                location: location.to_owned(),
                member: "keys",
                found_instead: members.case_variant("keys").map(str::to_owned),
            });
        }
    };
    let sequence = match members.get("spiffe_sequence") {
        None => None,
        Some(Json::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            return Err(BundleError::InvalidSequence {
                location: pointer(location, "spiffe_sequence"),
                found: json_text(other),
            });
        }
    };
    let refresh_hint = match members.get("spiffe_refresh_hint") {
        None => None,
        Some(Json::Number(n)) if n.as_u64().is_some_and(|v| v > 0) => n.as_u64(),
        Some(Json::Number(n)) if n.as_i64().is_some() => {
            lints.push(Lint {
                location: pointer(location, "spiffe_refresh_hint"),
                kind: LintKind::RefreshHintNotPositive {
                    value: n.as_i64().unwrap_or_default(),
                },
            });
            None
        }
        Some(other) => {
            return Err(BundleError::InvalidRefreshHint {
                location: pointer(location, "spiffe_refresh_hint"),
                found: json_text(other),
            });
        }
    };
    for name in members.names() {
        let suggestion = match name {
            "refresh_hint" => "spiffe_refresh_hint",
            "sequence" => "spiffe_sequence",
            _ if name != "spiffe_sequence" && name.eq_ignore_ascii_case("spiffe_sequence") => {
                "spiffe_sequence"
            }
            _ if name != "spiffe_refresh_hint"
                && name.eq_ignore_ascii_case("spiffe_refresh_hint") =>
            {
                "spiffe_refresh_hint"
            }
            _ => continue,
        };
        lints.push(Lint {
            location: pointer(location, name),
            kind: LintKind::SuspiciousMember {
                name: name.to_owned(),
                suggestion,
            },
        });
    }

    let mut collector = Collector {
        trust_domain,
        ignored: Vec::new(),
        lints,
        x509: Vec::new(),
        jwt: BTreeMap::new(),
        wit: BTreeMap::new(),
    };
    let keys_location = pointer(location, "keys");
    for (index, element) in keys.iter().enumerate() {
        let element_location = pointer(&keys_location, &index.to_string());
        if let Err(reason) = collector.element(element, &element_location) {
            collector.ignored.push(Ignored {
                location: element_location,
                reason,
            });
        }
    }
    Ok(collector.finish(sequence, refresh_hint, keys.len()))
}

/// A JSON value as compact text, for error messages.
fn json_text(json: &Json) -> String {
    match json {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => format!("{s:?}"),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

/// Accumulates accepted authorities and reports while walking `keys`.
struct Collector<'a> {
    trust_domain: &'a TrustDomain,
    ignored: Vec<Ignored>,
    lints: Vec<Lint>,
    x509: Vec<X509Authority>,
    /// kid → (first location, key, every location that used it, conflicting)
    jwt: BTreeMap<String, KidEntry>,
    wit: BTreeMap<String, KidEntry>,
}

struct KidEntry {
    key: PublicKey,
    locations: Vec<String>,
    conflict: bool,
}

enum Use {
    X509,
    Jwt,
    Wit,
}

impl Collector<'_> {
    fn element(&mut self, element: &Json, location: &str) -> Result<(), IgnoreReason> {
        let Json::Object(members) = element else {
            return Err(IgnoreReason::NotAnObject {
                found: element.type_name(),
            });
        };
        let members = Members(members);
        if let Some(name) = members.first_duplicate() {
            return Err(IgnoreReason::DuplicateMember {
                name: name.to_owned(),
            });
        }
        let use_ = match members.get("use") {
            None => return Err(IgnoreReason::MissingUse),
            Some(Json::String(s)) if s == "x509-svid" => Use::X509,
            Some(Json::String(s)) if s == "jwt-svid" => Use::Jwt,
            Some(Json::String(s)) if s == "wit-svid" => Use::Wit,
            Some(other) => {
                return Err(IgnoreReason::UnknownUse {
                    value: string_or_text(other),
                });
            }
        };
        let kty = match members.get("kty") {
            None => return Err(IgnoreReason::MissingKty),
            Some(Json::String(s)) if matches!(s.as_str(), "EC" | "RSA" | "OKP") => s.as_str(),
            Some(other) => {
                return Err(IgnoreReason::UnknownKty {
                    value: string_or_text(other),
                });
            }
        };
        match use_ {
            Use::X509 => self.x509_element(&members, kty, location),
            Use::Jwt => self.kid_element(&members, kty, location, "jwt-svid"),
            Use::Wit => self.kid_element(&members, kty, location, "wit-svid"),
        }
    }

    fn x509_element(
        &mut self,
        members: &Members<'_>,
        kty: &str,
        location: &str,
    ) -> Result<(), IgnoreReason> {
        let certs = match members.get("x5c") {
            Some(Json::Array(certs)) if !certs.is_empty() => certs,
            _ => return Err(IgnoreReason::MissingX5c),
        };
        let Json::String(first) = &certs[0] else {
            return Err(IgnoreReason::X5cNotBase64 {
                reason: format!("a JSON {}, not a string", certs[0].type_name()),
            });
        };
        let der = STANDARD
            .decode(first)
            .map_err(|err| IgnoreReason::X5cNotBase64 {
                reason: err.to_string(),
            })?;
        let authority = X509Authority::from_der(der).map_err(IgnoreReason::Certificate)?;
        let declared = key_from_members(members, kty)?;
        if declared != authority.info().key {
            return Err(IgnoreReason::KeyMismatch);
        }
        if members.get("kid").is_some() {
            self.lint(location, LintKind::KidOnX509);
        }
        if certs.len() > 1 {
            self.lint(location, LintKind::ExtraX5c { count: certs.len() });
        }
        let info = authority.info();
        if !info.self_signed {
            self.lint(location, LintKind::NotSelfSigned);
        }
        let td_id = self.trust_domain.id();
        if !info.spiffe_ids.contains(&td_id) {
            self.lint(
                location,
                LintKind::CaIdMismatch {
                    trust_domain: self.trust_domain.clone(),
                },
            );
        }
        if self.x509.contains(&authority) {
            self.lint(location, LintKind::DuplicateElement);
        } else {
            self.x509.push(authority);
        }
        Ok(())
    }

    fn kid_element(
        &mut self,
        members: &Members<'_>,
        kty: &str,
        location: &str,
        use_: &'static str,
    ) -> Result<(), IgnoreReason> {
        let kid = match members.get("kid") {
            Some(Json::String(kid)) if !kid.is_empty() => kid.clone(),
            _ => return Err(IgnoreReason::MissingKid { use_ }),
        };
        let key = key_from_members(members, kty)?;
        let table = if use_ == "jwt-svid" {
            &mut self.jwt
        } else {
            &mut self.wit
        };
        match table.get_mut(&kid) {
            Some(entry) => {
                if entry.key == key {
                    self.lint(location, LintKind::DuplicateElement);
                } else {
                    entry.conflict = true;
                    entry.locations.push(location.to_owned());
                }
            }
            None => {
                table.insert(
                    kid,
                    KidEntry {
                        key,
                        locations: vec![location.to_owned()],
                        conflict: false,
                    },
                );
            }
        }
        Ok(())
    }

    fn lint(&mut self, location: &str, kind: LintKind) {
        self.lints.push(Lint {
            location: location.to_owned(),
            kind,
        });
    }

    fn finish(
        mut self,
        sequence: Option<u64>,
        refresh_hint: Option<u64>,
        elements: usize,
    ) -> Parsed {
        let mut bundle = Bundle::new(self.trust_domain.clone());
        for authority in std::mem::take(&mut self.x509) {
            bundle.add_x509_authority(authority);
        }
        let jwt = std::mem::take(&mut self.jwt);
        let wit = std::mem::take(&mut self.wit);
        for (kid, entry) in jwt.iter() {
            if entry.conflict {
                self.ignore_all(
                    kid,
                    entry,
                    IgnoreReason::DuplicateKid {
                        kid: kid.clone(),
                        use_: "jwt-svid",
                    },
                );
            } else if let Ok(authority) = JwtAuthority::new(kid.clone(), entry.key.clone()) {
                bundle.insert_jwt_authority(authority);
            }
        }
        for (kid, entry) in wit {
            if jwt.contains_key(&kid) {
                // WIT-SVID §6.1: a kid is unique across the whole bundle. The JWT key
                // keeps its meaning; the colliding WIT keys are left out.
                let reason = IgnoreReason::KidCollision { kid: kid.clone() };
                self.ignore_all(&kid, &entry, reason);
            } else if entry.conflict {
                let reason = IgnoreReason::DuplicateKid {
                    kid: kid.clone(),
                    use_: "wit-svid",
                };
                self.ignore_all(&kid, &entry, reason);
            } else if let Ok(authority) = JwtAuthority::new(kid, entry.key) {
                bundle.insert_wit_authority(authority);
            }
        }
        bundle.sequence = sequence;
        bundle.refresh_hint = refresh_hint;
        self.ignored
            .sort_by(|a, b| location_key(&a.location).cmp(&location_key(&b.location)));
        Parsed {
            bundle,
            ignored: self.ignored,
            lints: self.lints,
            elements,
        }
    }

    fn ignore_all(&mut self, _kid: &str, entry: &KidEntry, reason: IgnoreReason) {
        for location in &entry.locations {
            self.ignored.push(Ignored {
                location: location.clone(),
                reason: reason.clone(),
            });
        }
    }
}

/// Order JSON Pointers so that `/keys/10` sorts after `/keys/9`.
fn location_key(location: &str) -> Vec<Result<u64, &str>> {
    location
        .split('/')
        .map(|token| token.parse::<u64>().map_err(|_| token))
        .collect()
}

fn string_or_text(json: &Json) -> String {
    match json {
        Json::String(s) => s.clone(),
        other => json_text(other),
    }
}

/// Read the key members for `kty` (RFC 7518 §6.2.1, §6.3.1; RFC 8037 §2).
fn key_from_members(members: &Members<'_>, kty: &str) -> Result<PublicKey, IgnoreReason> {
    match kty {
        "EC" => {
            let crv = string_member(members, "crv")?;
            let Some(curve) = EcCurve::from_name(crv) else {
                return Err(IgnoreReason::UnsupportedCurve {
                    kty: "EC",
                    crv: crv.to_owned(),
                });
            };
            let x = fixed_member(members, "x", curve.coordinate_len())?;
            let y = fixed_member(members, "y", curve.coordinate_len())?;
            Ok(PublicKey::Ec { curve, x, y })
        }
        "RSA" => {
            let n = uint_member(members, "n")?;
            let e = uint_member(members, "e")?;
            Ok(PublicKey::Rsa { n, e })
        }
        _ => {
            let crv = string_member(members, "crv")?;
            if crv != "Ed25519" {
                return Err(IgnoreReason::UnsupportedCurve {
                    kty: "OKP",
                    crv: crv.to_owned(),
                });
            }
            let x = fixed_member(members, "x", 32)?;
            Ok(PublicKey::Ed25519 { x })
        }
    }
}

fn string_member<'a>(members: &Members<'a>, member: &'static str) -> Result<&'a str, IgnoreReason> {
    match members.get(member) {
        Some(Json::String(s)) => Ok(s),
        Some(other) => Err(IgnoreReason::BadKeyMember {
            member,
            problem: format!("a JSON {}, not a string", other.type_name()),
        }),
        None => Err(IgnoreReason::BadKeyMember {
            member,
            problem: "missing".to_owned(),
        }),
    }
}

fn base64url_member(members: &Members<'_>, member: &'static str) -> Result<Vec<u8>, IgnoreReason> {
    let text = string_member(members, member)?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|err| IgnoreReason::BadKeyMember {
            member,
            problem: format!("not unpadded base64url: {err}"),
        })
}

fn fixed_member(
    members: &Members<'_>,
    member: &'static str,
    len: usize,
) -> Result<Vec<u8>, IgnoreReason> {
    let bytes = base64url_member(members, member)?;
    if bytes.len() != len {
        return Err(IgnoreReason::BadKeyMember {
            member,
            problem: format!("{} bytes, expected {len}", bytes.len()),
        });
    }
    Ok(bytes)
}

fn uint_member(members: &Members<'_>, member: &'static str) -> Result<Vec<u8>, IgnoreReason> {
    let bytes = trim_leading_zeros(&base64url_member(members, member)?);
    if bytes.is_empty() {
        return Err(IgnoreReason::BadKeyMember {
            member,
            problem: "zero or empty".to_owned(),
        });
    }
    Ok(bytes)
}
