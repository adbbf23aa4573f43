//! How the `fedgw` command ends: the exit statuses it documents and the one-line
//! error message it prints.
//!
//! Owns the exit status table (README and `docs/operations.md` print the same one)
//! and the rendering of an error with its causes, each said once. It does not decide
//! which error a verb returns (the verbs do) or print anything (`main.rs` does).

use std::error::Error as StdError;
use std::process::ExitCode;

/// What a `fedgw` command's exit status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// 0: done.
    Success,
    /// 1: it did not work: a document refused, a file unreadable, the gateway
    /// unreachable or refusing the call, a gateway that could not start.
    Failure,
    /// 2: the command line is wrong (an unknown flag, a missing or bad argument,
    /// flags that do not go together); nothing was done.
    Usage,
    /// 3: `fedgw serve --config FILE`: the file cannot be read or is refused;
    /// restarting will not help until it is fixed.
    Config,
    /// 4: `fedgw federation refresh`: the fetch ran and failed, or its bundle was
    /// refused; the gateway keeps serving its last good bundle.
    RefreshFailed,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::Config => 3,
            Self::RefreshFailed => 4,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(value: Exit) -> Self {
        Self::from(value.code())
    }
}

/// A mistake on the command line found after parsing (exit 2), e.g. a PEM document
/// given without `--format pem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    /// What is wrong and what to pass instead.
    pub message: String,
}

impl UsageError {
    /// A usage error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// An error and its causes on one line, each cause said once: a cause whose text the
/// line already holds is left out. Error types that print their source in their own
/// message (`cannot listen on ADDR: {source}`) and return it as `source()` too would
/// otherwise repeat it (`Address in use (os error 98): Address in use (os error 98)`).
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// The document looks like PEM (its first non-blank bytes are a PEM armour line).
pub fn looks_like_pem(document: &[u8]) -> bool {
    document.trim_ascii_start().starts_with(b"-----BEGIN ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:8443: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("admin API")]
    struct Outer {
        #[source]
        source: Bind,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let shown = io.to_string();
        let err = Outer {
            source: Bind { source: io },
        };
        let line = describe(&err);
        assert_eq!(
            line,
            format!("admin API: cannot listen on 127.0.0.1:8443: {shown}")
        );
        assert_eq!(line.matches(&shown).count(), 1, "{line}");
    }

    #[test]
    fn causes_not_in_the_message_are_added() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read fedgw.toml")]
        struct Read {
            #[source]
            source: std::io::Error,
        }
        let err = Read {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(describe(&err), "cannot read fedgw.toml: no such file");
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let codes = [
            Exit::Success,
            Exit::Failure,
            Exit::Usage,
            Exit::Config,
            Exit::RefreshFailed,
        ]
        .map(Exit::code);
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn pem_is_recognised_by_its_armour() {
        assert!(looks_like_pem(b"\n  -----BEGIN CERTIFICATE-----\nMII"));
        assert!(!looks_like_pem(b"{\"keys\": []}"));
        assert!(!looks_like_pem(b"BEGIN CERTIFICATE"));
    }
}
