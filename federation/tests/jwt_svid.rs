//! Conformance: JWT-SVID validation (JWT-SVID §2-§4 and §6.2; TDB §3; DIST-3, DIST-6,
//! JWK-2). Tokens are signed by the `jsonwebtoken` encoder with RSA and EC keys made by
//! rcgen; bundles are real SPIFFE bundle documents parsed by the library.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;
#[path = "support/jwk.rs"]
mod jwk;

use std::cell::RefCell;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ca::{CertSpec, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, TestCa};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use spiffe_federation::jwt_svid::{self, Algorithm, JwtSvid, JwtSvidError, LEEWAY};
use spiffe_federation::{Bundle, TrustDomain};
use time::OffsetDateTime;

const AUDIENCE: &str = "reports";

/// A signing key and the JWK members of its public half.
struct Key {
    kid: String,
    encoding: EncodingKey,
    /// A self-signed CA carrying the key: its certificate gives the JWK members, and
    /// it can stand in a bundle as an X.509 authority.
    ca: TestCa,
}

impl Key {
    fn new(kid: &str, alg: &'static rcgen::SignatureAlgorithm) -> Self {
        let ca = TestCa::from_spec(&CertSpec::ca("keys.example").alg(alg));
        let pkcs8 = ca.key.serialize_der();
        let encoding = if alg == &PKCS_RSA_SHA256 {
            // jsonwebtoken's aws-lc-rs signer reads PKCS#1 RSAPrivateKey, the
            // privateKey OCTET STRING inside PKCS#8 (RFC 5208 §5).
            let (_, info) = x509_parser::der_parser::parse_der(&pkcs8).unwrap();
            let fields = info.as_sequence().unwrap();
            EncodingKey::from_rsa_der(fields[2].as_slice().unwrap())
        } else {
            EncodingKey::from_ec_der(&pkcs8)
        };
        Self {
            kid: kid.to_owned(),
            encoding,
            ca,
        }
    }

    fn rsa(kid: &str) -> Self {
        Self::new(kid, &PKCS_RSA_SHA256)
    }

    fn p256(kid: &str) -> Self {
        Self::new(kid, &PKCS_ECDSA_P256_SHA256)
    }

    fn p384(kid: &str) -> Self {
        Self::new(kid, &PKCS_ECDSA_P384_SHA384)
    }

    /// A bundle element for this key with `use_` and its kid.
    fn element(&self, use_: &str) -> Value {
        let mut element = jwk::key_members(&self.ca.der);
        element.insert("use".into(), use_.into());
        element.insert("kid".into(), self.kid.clone().into());
        Value::Object(element)
    }

    /// A token with `claims`, signed with `alg` under this key's kid.
    fn sign(&self, alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn sign_es256(&self, claims: &Value) -> String {
        self.sign(jsonwebtoken::Algorithm::ES256, claims)
    }
}

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

fn bundle(name: &str, elements: Vec<Value>) -> Arc<Bundle> {
    let parsed = Bundle::parse(&td(name), &jwk::document(elements)).unwrap();
    assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
    Arc::new(parsed.bundle)
}

/// `a.example` and `b.example`, each with one P-256 `jwt-svid` key under its kid.
fn two_domains(a_kid: &str, b_kid: &str) -> (Key, Key, Bundles) {
    let a_key = Key::p256(a_kid);
    let b_key = Key::p256(b_kid);
    let bundles = Bundles::new(vec![
        bundle("a.example", vec![a_key.element("jwt-svid")]),
        bundle("b.example", vec![b_key.element("jwt-svid")]),
    ]);
    (a_key, b_key, bundles)
}

/// `a.example` with one P-256 `jwt-svid` key, kid `k`.
fn one_domain() -> (Key, Bundles) {
    let key = Key::p256("k");
    let bundles = Bundles::new(vec![bundle("a.example", vec![key.element("jwt-svid")])]);
    (key, bundles)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Claims of a token for `sub`, for [`AUDIENCE`], valid from a minute ago for five.
fn claims(sub: &str, at: OffsetDateTime) -> Value {
    let t = at.unix_timestamp();
    json!({"sub": sub, "aud": AUDIENCE, "exp": t + 300, "iat": t - 60, "nbf": t - 60})
}

/// Validation against a fixed set of bundles, recording which trust domains the
/// validator asked for.
struct Bundles {
    bundles: Vec<Arc<Bundle>>,
    asked: RefCell<Vec<TrustDomain>>,
}

impl Bundles {
    fn new(bundles: Vec<Arc<Bundle>>) -> Self {
        Self {
            bundles,
            asked: RefCell::new(Vec::new()),
        }
    }

    fn validate_at(
        &self,
        token: &str,
        audience: &str,
        at: OffsetDateTime,
    ) -> Result<JwtSvid, JwtSvidError> {
        jwt_svid::validate(token, audience, at, |td| {
            self.asked.borrow_mut().push(td.clone());
            self.bundles
                .iter()
                .find(|b| b.trust_domain() == td)
                .cloned()
        })
    }

    fn validate(&self, token: &str) -> Result<JwtSvid, JwtSvidError> {
        self.validate_at(token, AUDIENCE, now())
    }

    fn refuse(&self, token: &str) -> JwtSvidError {
        match self.validate(token) {
            Ok(svid) => panic!("accepted: {svid:?}"),
            Err(err) => err,
        }
    }
}

/// A token whose header and claims are given as JSON text, with any signature.
fn handmade(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[test]
fn jwt_every_supported_algorithm_validates() {
    use jsonwebtoken::Algorithm as A;
    let rsa = Key::rsa("rsa");
    let p256 = Key::p256("p256");
    let p384 = Key::p384("p384");
    let bundles = Bundles::new(vec![bundle(
        "a.example",
        vec![
            rsa.element("jwt-svid"),
            p256.element("jwt-svid"),
            p384.element("jwt-svid"),
        ],
    )]);
    let at = now();
    let mut claims = claims("spiffe://a.example/reports/client", at);
    claims["team"] = json!("billing");
    for (key, alg, expected) in [
        (&rsa, A::RS256, Algorithm::RS256),
        (&rsa, A::RS384, Algorithm::RS384),
        (&rsa, A::RS512, Algorithm::RS512),
        (&rsa, A::PS256, Algorithm::PS256),
        (&rsa, A::PS384, Algorithm::PS384),
        (&rsa, A::PS512, Algorithm::PS512),
        (&p256, A::ES256, Algorithm::ES256),
        (&p384, A::ES384, Algorithm::ES384),
    ] {
        let svid = bundles
            .validate_at(&key.sign(alg, &claims), AUDIENCE, at)
            .unwrap_or_else(|err| panic!("{alg:?}: {err}"));
        assert_eq!(
            svid.spiffe_id().to_string(),
            "spiffe://a.example/reports/client"
        );
        assert_eq!(svid.trust_domain(), &td("a.example"));
        assert_eq!(svid.key_id(), key.kid);
        assert_eq!(svid.algorithm(), expected);
        assert_eq!(svid.audience(), [AUDIENCE]);
        assert_eq!(
            svid.expires_at().unix_timestamp(),
            at.unix_timestamp() + 300
        );
        assert_eq!(svid.claims()["team"], "billing");
    }
}

#[test]
fn dist_3_jwt_key_of_another_domain_never_validates_even_with_the_same_kid() {
    let (_, b_key, bundles) = two_domains("shared", "shared");
    let token = b_key.sign_es256(&claims("spiffe://a.example/x", now()));

    let err = bundles.refuse(&token);
    assert_eq!(
        err,
        JwtSvidError::BadSignature {
            trust_domain: td("a.example"),
            kid: "shared".into()
        }
    );
    assert_eq!(err.code(), "bad_signature");
    // Only a.example's bundle was asked for, never b.example's.
    assert_eq!(*bundles.asked.borrow(), [td("a.example")]);

    // The same key vouches for its own domain's IDs.
    let own = b_key.sign_es256(&claims("spiffe://b.example/x", now()));
    assert_eq!(bundles.validate(&own).unwrap().key_id(), "shared");
}

#[test]
fn dist_3_jwt_kid_known_only_to_another_domain_is_unknown() {
    let (_, b_key, bundles) = two_domains("a-1", "b-1");
    let token = b_key.sign_es256(&claims("spiffe://a.example/x", now()));
    let err = bundles.refuse(&token);
    assert_eq!(
        err,
        JwtSvidError::UnknownKeyId {
            trust_domain: td("a.example"),
            kid: "b-1".into()
        }
    );
    assert_eq!(err.code(), "unknown_key_id");
}

#[test]
fn jwk_2_wit_svid_key_never_validates_a_jwt_svid() {
    let wit = Key::p256("wit-1");
    let jwt = Key::p256("jwt-1");
    let bundles = Bundles::new(vec![bundle(
        "a.example",
        vec![wit.element("wit-svid"), jwt.element("jwt-svid")],
    )]);
    let token = wit.sign_es256(&claims("spiffe://a.example/x", now()));
    assert_eq!(bundles.refuse(&token).code(), "unknown_key_id");
    let token = jwt.sign_es256(&claims("spiffe://a.example/x", now()));
    assert!(bundles.validate(&token).is_ok());
}

#[test]
fn dist_6_x509_authority_key_never_validates_a_jwt_svid() {
    // The CA's element carries a kid (a lint, X5C-6); its key is an X.509 authority
    // only, so a token signed by the CA key under that kid finds no JWT key.
    let ca_key = Key::p256("ca");
    let mut element = jwk::x509_element(&ca_key.ca.der);
    element["kid"] = json!("ca");
    let parsed = Bundle::parse(&td("a.example"), &jwk::document(vec![element])).unwrap();
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    let bundles = Bundles::new(vec![Arc::new(parsed.bundle)]);
    let token = ca_key.sign_es256(&claims("spiffe://a.example/x", now()));
    assert_eq!(bundles.refuse(&token).code(), "unknown_key_id");
}

#[test]
fn jwt_alg_none_and_hmac_are_refused() {
    let key = Key::rsa("k");
    let bundles = Bundles::new(vec![bundle("a.example", vec![key.element("jwt-svid")])]);
    let claims = claims("spiffe://a.example/x", now());

    let unsigned = handmade(&json!({"alg": "none", "kid": "k"}), &claims, b"");
    let err = bundles.refuse(&unsigned);
    assert_eq!(
        err,
        JwtSvidError::UnsupportedAlgorithm { alg: "none".into() }
    );

    // The classic confusion: HMAC keyed with the public key's bytes.
    let public = jwk::key_members(&key.ca.der)["n"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k".into());
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_eq!(bundles.refuse(&hs256).code(), "unsupported_algorithm");
    assert!(bundles.asked.borrow().is_empty());
}

#[test]
fn jwt_es512_is_refused_as_not_implemented() {
    let token = handmade(
        &json!({"alg": "ES512", "kid": "k"}),
        &claims("spiffe://a.example/x", now()),
        &[1; 132],
    );
    let err = Bundles::new(vec![]).refuse(&token);
    assert_eq!(err.code(), "algorithm_not_implemented");
}

#[test]
fn jwt_key_must_fit_the_algorithm() {
    let p256 = Key::p256("p256");
    let rsa = Key::rsa("rsa");
    let bundles = Bundles::new(vec![bundle(
        "a.example",
        vec![p256.element("jwt-svid"), rsa.element("jwt-svid")],
    )]);
    let claims = claims("spiffe://a.example/x", now());
    // Header names P-256's kid with ES384.
    let es384 = handmade(&json!({"alg": "ES384", "kid": "p256"}), &claims, &[1; 96]);
    let err = bundles.refuse(&es384);
    assert_eq!(err.code(), "key_algorithm_mismatch");
    assert!(err.to_string().contains("EC P-256"), "{err}");
    // An EC key for an RSA algorithm and the reverse.
    let rs256 = handmade(&json!({"alg": "RS256", "kid": "p256"}), &claims, &[1; 256]);
    assert_eq!(bundles.refuse(&rs256).code(), "key_algorithm_mismatch");
    let es256 = handmade(&json!({"alg": "ES256", "kid": "rsa"}), &claims, &[1; 64]);
    assert_eq!(bundles.refuse(&es256).code(), "key_algorithm_mismatch");
}

#[test]
fn jwt_tampered_claims_fail_the_signature() {
    let (key, bundles) = one_domain();
    let token = key.sign_es256(&claims("spiffe://a.example/x", now()));
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims("spiffe://a.example/admin", now())).unwrap());
    parts[1] = &forged;
    assert_eq!(bundles.refuse(&parts.join(".")).code(), "bad_signature");
}

#[test]
fn jwt_unknown_trust_domain_has_no_bundle() {
    let (key, bundles) = one_domain();
    let token = key.sign_es256(&claims("spiffe://c.example/x", now()));
    assert_eq!(
        bundles.refuse(&token),
        JwtSvidError::NoBundle {
            trust_domain: td("c.example")
        }
    );
}

#[test]
fn jwt_expiry_is_checked_with_the_leeway() {
    let (key, bundles) = one_domain();
    let at = now();
    let leeway = i64::try_from(LEEWAY.as_secs()).unwrap();
    let sub = "spiffe://a.example/x";

    let within = key
        .sign_es256(&json!({"sub": sub, "aud": AUDIENCE, "exp": at.unix_timestamp() - leeway + 1}));
    assert!(bundles.validate_at(&within, AUDIENCE, at).is_ok());

    let exp = at.unix_timestamp() - leeway - 1;
    let expired = key.sign_es256(&json!({"sub": sub, "aud": AUDIENCE, "exp": exp}));
    let err = bundles.validate_at(&expired, AUDIENCE, at).unwrap_err();
    assert_eq!(
        err,
        JwtSvidError::Expired {
            expired_at: OffsetDateTime::from_unix_timestamp(exp).unwrap()
        }
    );
    assert_eq!(err.code(), "expired");
}

#[test]
fn jwt_nbf_is_checked_with_the_leeway_when_present() {
    let (key, bundles) = one_domain();
    let at = now();
    let t = at.unix_timestamp();
    let leeway = i64::try_from(LEEWAY.as_secs()).unwrap();
    let sub = "spiffe://a.example/x";
    let with_nbf = |nbf: i64| {
        key.sign_es256(&json!({"sub": sub, "aud": AUDIENCE, "exp": t + 600, "nbf": nbf}))
    };

    assert!(
        bundles
            .validate_at(&with_nbf(t + leeway - 1), AUDIENCE, at)
            .is_ok()
    );
    let err = bundles
        .validate_at(&with_nbf(t + leeway + 1), AUDIENCE, at)
        .unwrap_err();
    assert_eq!(err.code(), "not_yet_valid");
    assert!(
        matches!(err, JwtSvidError::NotYetValid { not_before } if not_before.unix_timestamp() == t + leeway + 1)
    );
}

#[test]
fn jwt_aud_may_be_an_array_and_must_hold_the_audience() {
    let (key, bundles) = one_domain();
    let exp = now().unix_timestamp() + 300;
    let sub = "spiffe://a.example/x";
    let token = key.sign_es256(&json!({"sub": sub, "aud": ["billing", AUDIENCE], "exp": exp}));

    let svid = bundles.validate(&token).unwrap();
    assert_eq!(svid.audience(), ["billing", AUDIENCE]);
    let err = bundles.validate_at(&token, "inventory", now()).unwrap_err();
    assert_eq!(
        err,
        JwtSvidError::AudienceMismatch {
            expected: "inventory".into(),
            found: vec!["billing".into(), AUDIENCE.into()]
        }
    );
    assert_eq!(err.code(), "audience_mismatch");
}

#[test]
fn jwt_exp_and_aud_are_required() {
    let (key, bundles) = one_domain();
    let exp = now().unix_timestamp() + 300;
    let sub = "spiffe://a.example/x";
    for (claims, code) in [
        (json!({"sub": sub, "aud": AUDIENCE}), "missing_expiration"),
        (json!({"sub": sub, "exp": exp}), "missing_audience"),
        (
            json!({"sub": sub, "aud": [], "exp": exp}),
            "missing_audience",
        ),
        (
            json!({"sub": sub, "aud": AUDIENCE, "exp": "tomorrow"}),
            "invalid_claim",
        ),
        (
            json!({"sub": sub, "aud": [AUDIENCE, 7], "exp": exp}),
            "invalid_claim",
        ),
        (
            json!({"sub": sub, "aud": {"a": 1}, "exp": exp}),
            "invalid_claim",
        ),
        (
            json!({"sub": sub, "aud": AUDIENCE, "exp": exp, "nbf": null}),
            "invalid_claim",
        ),
    ] {
        assert_eq!(
            bundles.refuse(&key.sign_es256(&claims)).code(),
            code,
            "{claims}"
        );
    }
}
