//! SPIRE's spelling of the `federation` flags, accepted as SPIRE operators type them.
//!
//! `spire-server federation create|update` take Go-style flags: one dash (or two),
//! camelCase, the value after a space or `=` (`-trustDomain west.example`,
//! `-bundleEndpointURL=https://…`). clap would read `-trustDomain` as `-t` with the
//! value `rustDomain`, so [`rewrite`] turns exactly those flag names into fedgw's
//! long forms before clap parses, for the verbs whose SPIRE counterpart has them:
//! `federation create` and `federation update` (every flag below) and
//! `federation show` (`-trustDomain`). Nothing else is touched: not other verbs,
//! nothing after `--`, no other word (a value spelled exactly like one of these flag
//! names would be rewritten too).
//!
//! It owns only the spelling; what each flag means is `main.rs`'s.

use std::ffi::OsString;

/// SPIRE's flag names (`cmd/spire-server/cli/federation`) and fedgw's long forms.
const RELATIONSHIP_FLAGS: &[(&str, &str)] = &[
    ("trustDomain", "--trust-domain"),
    ("bundleEndpointURL", "--bundle-endpoint-url"),
    ("bundleEndpointProfile", "--bundle-endpoint-profile"),
    ("endpointSpiffeID", "--endpoint-spiffe-id"),
    ("trustDomainBundlePath", "--trust-domain-bundle-path"),
    ("trustDomainBundleFormat", "--trust-domain-bundle-format"),
    ("data", "--data"),
];

/// `spire-server federation show` has only `-trustDomain`.
const SHOW_FLAGS: &[(&str, &str)] = &[("trustDomain", "--trust-domain")];

/// The command line with SPIRE's spellings of the verb's flags replaced by fedgw's:
/// `fedgw federation create -trustDomain w.example -bundleEndpointURL=https://w/`
/// becomes `… --trust-domain w.example --bundle-endpoint-url=https://w/`.
pub fn rewrite(args: Vec<OsString>) -> Vec<OsString> {
    let verb = (args.get(1), args.get(2));
    let flags = match verb {
        (Some(group), Some(verb)) if group == "federation" => {
            if verb == "create" || verb == "update" {
                RELATIONSHIP_FLAGS
            } else if verb == "show" {
                SHOW_FLAGS
            } else {
                return args;
            }
        }
        _ => return args,
    };
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.into_iter();
    out.extend(rest.by_ref().take(3));
    for arg in rest.by_ref() {
        if arg == "--" {
            out.push(arg);
            break;
        }
        out.push(respell(arg, flags));
    }
    out.extend(rest);
    out
}

fn respell(arg: OsString, flags: &[(&str, &str)]) -> OsString {
    let Some(text) = arg.to_str() else {
        return arg;
    };
    let Some(flag) = text.strip_prefix("--").or_else(|| text.strip_prefix('-')) else {
        return arg;
    };
    let (name, value) = match flag.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (flag, None),
    };
    match flags.iter().find(|(spire, _)| *spire == name) {
        Some((_, long)) => match value {
            Some(value) => OsString::from(format!("{long}={value}")),
            None => OsString::from(*long),
        },
        None => arg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        rewrite(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn spire_create_flags_become_long_forms() {
        assert_eq!(
            run(&[
                "fedgw",
                "federation",
                "create",
                "-trustDomain",
                "w.example",
                "-bundleEndpointURL=https://w.example/",
                "--bundleEndpointProfile",
                "https_spiffe",
                "-endpointSpiffeID",
                "spiffe://w.example/ep",
                "-trustDomainBundlePath",
                "w.pem",
                "-trustDomainBundleFormat",
                "pem",
            ]),
            [
                "fedgw",
                "federation",
                "create",
                "--trust-domain",
                "w.example",
                "--bundle-endpoint-url=https://w.example/",
                "--bundle-endpoint-profile",
                "https_spiffe",
                "--endpoint-spiffe-id",
                "spiffe://w.example/ep",
                "--trust-domain-bundle-path",
                "w.pem",
                "--trust-domain-bundle-format",
                "pem",
            ]
        );
        assert_eq!(
            run(&["fedgw", "federation", "update", "-data", "-"]),
            ["fedgw", "federation", "update", "--data", "-"]
        );
    }

    #[test]
    fn only_the_promised_verbs_and_flags_change() {
        for args in [
            // Another verb: SPIRE's delete takes -id, which fedgw does not promise.
            &["fedgw", "federation", "delete", "-trustDomain", "w.example"][..],
            &["fedgw", "bundle", "show", "-trustDomain", "w.example"],
            // show has only -trustDomain.
            &["fedgw", "federation", "show", "-bundleEndpointURL", "x"],
            // Values and fedgw's own flags are left alone.
            &[
                "fedgw",
                "federation",
                "create",
                "-t",
                "w.example",
                "--proxy",
                "off",
            ],
        ] {
            assert_eq!(run(args), args, "{args:?}");
        }
        assert_eq!(
            run(&["fedgw", "federation", "show", "-trustDomain=w.example"]),
            ["fedgw", "federation", "show", "--trust-domain=w.example"]
        );
        // Nothing after `--`.
        assert_eq!(
            run(&["fedgw", "federation", "create", "--", "-trustDomain"]),
            ["fedgw", "federation", "create", "--", "-trustDomain"]
        );
        // A name that only starts like a known one is not one.
        assert_eq!(
            run(&["fedgw", "federation", "create", "-trustDomainX", "v"]),
            ["fedgw", "federation", "create", "-trustDomainX", "v"]
        );
    }
}
