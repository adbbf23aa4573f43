//! The operands of verbs that take them either as arguments or as flags.
//!
//! Every verb that acts on one trust domain takes it as the argument `TD` or as
//! `--trust-domain TD` (`-t TD`), whichever the operator types; `bundle set` takes its
//! document as the argument after `TD` or as `--file FILE`. clap parses each form;
//! this module decides what the combination means and refuses an ambiguous one, as a
//! usage error (exit 2). It does not own the flags' definitions (`main.rs`).

use std::path::PathBuf;

use spiffe_federation::TrustDomain;

use super::exit::UsageError;

/// The trust domain of a verb given `TD` as an argument or with `--trust-domain`
/// (clap refuses both, and neither).
///
/// # Errors
/// [`UsageError`] when neither is given (clap's group normally says so first).
pub fn trust_domain(
    argument: Option<TrustDomain>,
    flag: Option<TrustDomain>,
) -> Result<TrustDomain, UsageError> {
    match (argument, flag) {
        (Some(td), None) | (None, Some(td)) => Ok(td),
        (Some(_), Some(_)) => Err(UsageError::new(
            "give the trust domain once: as the argument TD or with --trust-domain",
        )),
        (None, None) => Err(UsageError::new(
            "a trust domain is required: the argument TD or --trust-domain TD",
        )),
    }
}

/// `bundle set`'s trust domain and document from its arguments (`TD FILE`, `FILE`
/// with `--trust-domain`, `TD` with `--file`, or none with both flags).
///
/// # Errors
/// [`UsageError`] naming what is missing, doubled or not a trust domain.
pub fn bundle_set(
    arguments: &[String],
    trust_domain: Option<TrustDomain>,
    file: Option<PathBuf>,
) -> Result<(TrustDomain, PathBuf), UsageError> {
    let parse = |text: &str| {
        text.parse::<TrustDomain>()
            .map_err(|err| UsageError::new(format!("invalid trust domain {text:?}: {err}")))
    };
    match (arguments, trust_domain, file) {
        ([td, path], None, None) => Ok((parse(td)?, PathBuf::from(path))),
        ([path], Some(td), None) => Ok((td, PathBuf::from(path))),
        ([td], None, Some(path)) => Ok((parse(td)?, path)),
        ([], Some(td), Some(path)) => Ok((td, path)),
        ([], None, _) | ([_], None, None) => Err(UsageError::new(
            "bundle set needs a trust domain and a document: TD FILE, or --trust-domain TD --file FILE (FILE - reads standard input)",
        )),
        _ => Err(UsageError::new(
            "bundle set takes the trust domain once and the document once: TD FILE, or --trust-domain TD and/or --file FILE in their place",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(name: &str) -> TrustDomain {
        name.parse().unwrap()
    }

    #[test]
    fn a_trust_domain_as_argument_or_flag() {
        assert_eq!(
            trust_domain(Some(td("a.example")), None).unwrap(),
            td("a.example")
        );
        assert_eq!(
            trust_domain(None, Some(td("b.example"))).unwrap(),
            td("b.example")
        );
        assert!(trust_domain(None, None).is_err());
        assert!(trust_domain(Some(td("a.example")), Some(td("a.example"))).is_err());
    }

    #[test]
    fn bundle_set_takes_each_operand_once_in_either_form() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let expected = (td("w.example"), PathBuf::from("ca.pem"));
        assert_eq!(
            bundle_set(&args(&["w.example", "ca.pem"]), None, None).unwrap(),
            expected
        );
        assert_eq!(
            bundle_set(&args(&["ca.pem"]), Some(td("w.example")), None).unwrap(),
            expected
        );
        assert_eq!(
            bundle_set(&args(&["w.example"]), None, Some("ca.pem".into())).unwrap(),
            expected
        );
        assert_eq!(
            bundle_set(&[], Some(td("w.example")), Some("ca.pem".into())).unwrap(),
            expected
        );
        for (arguments, flag, file) in [
            (args(&[]), None, None),
            (args(&["w.example"]), None, None),
            (args(&[]), None, Some(PathBuf::from("ca.pem"))),
            (args(&["w.example", "ca.pem"]), Some(td("w.example")), None),
            (
                args(&["x.example", "ca.pem"]),
                None,
                Some(PathBuf::from("ca.pem")),
            ),
            (
                args(&["ca.pem"]),
                Some(td("w.example")),
                Some(PathBuf::from("ca.pem")),
            ),
        ] {
            assert!(
                bundle_set(&arguments, flag.clone(), file.clone()).is_err(),
                "{arguments:?} {flag:?} {file:?}"
            );
        }
        let err = bundle_set(&args(&["W.example", "ca.pem"]), None, None).unwrap_err();
        assert!(err.message.contains("W.example"), "{err}");
    }
}
