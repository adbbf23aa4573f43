//! `[[sinks.files]]`: the files sink's tables and their checks.
//!
//! Owns the schema and the rules that need no file system (a directory per sink, a
//! program for the hook, no trust domain twice). It does not own writing
//! ([`crate::outputs::files`]).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spiffe_federation::TrustDomain;

use crate::config::ConfigError;
use crate::config::value::{self, FromNumber};

/// One `[[sinks.files]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSinkConfig {
    /// The directory; created (0755) if missing. Files fedgw did not write are left
    /// alone.
    pub dir: PathBuf,
    /// Only these trust domains are written (MAP-8); every stored one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domains: Option<Vec<TrustDomain>>,
    /// A program and its arguments (no shell), run after each change set is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<Vec<String>>,
    /// Permission bits of the files written; `0o644` (TOML octal) or `"0644"`.
    #[serde(default)]
    pub mode: FileMode,
}

impl FilesSinkConfig {
    /// A sink writing every trust domain to `dir` with the default mode and no hook.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            trust_domains: None,
            on_change: None,
            mode: FileMode::default(),
        }
    }
}

/// Unix permission bits (at most `0o777`) of the files a sink writes.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u32")]
pub struct FileMode(u32);

impl FileMode {
    /// The default, `0644`: readable by every local user, like CA certificates.
    pub const DEFAULT: Self = Self(0o644);

    /// The bits, e.g. `0o644`.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl Default for FileMode {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Debug for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl std::str::FromStr for FileMode {
    type Err = String;

    /// Octal digits, e.g. `0644`, `644` or `0o644`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let bits = u32::from_str_radix(digits, 8)
            .map_err(|_| format!("{text:?} is not an octal file mode like \"0644\""))?;
        Self::try_from(bits)
    }
}

impl TryFrom<u32> for FileMode {
    type Error = String;

    fn try_from(bits: u32) -> Result<Self, Self::Error> {
        Self::from_number(bits.into())
    }
}

impl FromNumber for FileMode {
    const EXPECTING: &'static str = "an octal file mode like 0o644 or \"0644\"";

    fn from_number(number: u64) -> Result<Self, String> {
        let Some(bits) = u32::try_from(number).ok().filter(|bits| *bits <= 0o777) else {
            return Err(format!(
                "{number:o} (octal) has bits beyond 0777 (setuid, setgid or sticky are not for bundle files)"
            ));
        };
        if bits & 0o400 == 0 {
            return Err(format!("{bits:04o} does not let the owner read the files"));
        }
        Ok(Self(bits))
    }
}

impl From<FileMode> for u32 {
    fn from(mode: FileMode) -> Self {
        mode.0
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        value::deserialize(deserializer)
    }
}

/// Check every `[[sinks.files]]`: a directory, not shared with another sink; an
/// `on_change` with a program; no trust domain listed twice.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key, e.g. `sinks.files[1].dir`.
pub fn validate(sinks: &[FilesSinkConfig]) -> Result<(), ConfigError> {
    let invalid = |key: String, reason: String| ConfigError::Invalid { key, reason };
    let mut dirs = BTreeSet::new();
    for (i, sink) in sinks.iter().enumerate() {
        if sink.dir.as_os_str().is_empty() {
            return Err(invalid(
                format!("sinks.files[{i}].dir"),
                "must not be empty".into(),
            ));
        }
        if !dirs.insert(&sink.dir) {
            return Err(invalid(
                format!("sinks.files[{i}].dir"),
                format!(
                    "{} is the directory of another files sink; each sink needs its own",
                    sink.dir.display()
                ),
            ));
        }
        if let Some(argv) = &sink.on_change
            && argv.first().is_none_or(String::is_empty)
        {
            return Err(invalid(
                format!("sinks.files[{i}].on_change"),
                "must start with the program to run, e.g. [\"systemctl\", \"reload\", \"envoy\"]"
                    .into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for td in sink.trust_domains.iter().flatten() {
            if !seen.insert(td) {
                return Err(invalid(
                    format!("sinks.files[{i}].trust_domains"),
                    format!("{td} is listed twice"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<FilesSinkConfig, String> {
        toml::from_str(toml_text).map_err(|err| err.to_string())
    }

    #[test]
    fn mode_reads_toml_octal_or_text_and_refuses_special_bits() {
        assert_eq!(parse("dir = \"/x\"").unwrap().mode.bits(), 0o644);
        assert_eq!(
            parse("dir = \"/x\"\nmode = 0o640").unwrap().mode.bits(),
            0o640
        );
        assert_eq!(
            parse("dir = \"/x\"\nmode = \"0600\"").unwrap().mode.bits(),
            0o600
        );
        for bad in ["mode = 0o4755", "mode = \"rw\"", "mode = 0o044"] {
            assert!(parse(&format!("dir = \"/x\"\n{bad}")).is_err(), "{bad}");
        }
        assert_eq!(FileMode::DEFAULT.to_string(), "0644");
    }

    #[test]
    fn map_8_unknown_keys_and_bad_trust_domains_are_refused() {
        assert!(parse("dir = \"/x\"\ntrust_domain = [\"a.example\"]").is_err());
        assert!(parse("dir = \"/x\"\ntrust_domains = [\"Bad Domain\"]").is_err());
        let sink = parse("dir = \"/x\"\ntrust_domains = [\"a.example\"]").unwrap();
        assert_eq!(sink.trust_domains.unwrap()[0].as_str(), "a.example");
    }

    #[test]
    fn validate_names_the_key_of_each_fault() {
        let key_of = |sinks: &[FilesSinkConfig]| match validate(sinks) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let a = FilesSinkConfig::new("/a");
        assert!(validate(std::slice::from_ref(&a)).is_ok());
        assert_eq!(key_of(&[a.clone(), a.clone()]), "sinks.files[1].dir");
        let mut hook = a.clone();
        hook.on_change = Some(Vec::new());
        assert_eq!(key_of(&[hook]), "sinks.files[0].on_change");
        let mut twice = a;
        let td: TrustDomain = "a.example".parse().unwrap();
        twice.trust_domains = Some(vec![td.clone(), td]);
        assert_eq!(key_of(&[twice]), "sinks.files[0].trust_domains");
    }
}
