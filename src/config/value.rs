//! Configuration values that may be written as a number or as a text.
//!
//! Owns the one serde path for such values: a TOML integer (`300`, `0o644`) goes to
//! [`FromNumber::from_number`], a string (`"5m"`, `"0644"`) to the type's [`FromStr`],
//! and anything else is refused with what the value should look like. Each type states
//! only its own rules (units, range, octal); it implements `Deserialize` by calling
//! [`deserialize`].

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::Deserializer;
use serde::de::{self, Unexpected, Visitor};

/// A value written as a number or as a text; the text form is the type's [`FromStr`].
pub trait FromNumber: FromStr<Err = String> {
    /// What a value looks like, for the error when the configuration gives neither a
    /// number nor a text, e.g. `a duration like 300 or "5m"`.
    const EXPECTING: &'static str;

    /// The value a non-negative number stands for.
    ///
    /// # Errors
    /// Why the number is refused (out of range, forbidden bits), naming the number.
    fn from_number(number: u64) -> Result<Self, String>;
}

/// Deserialize a [`FromNumber`] value from a number or a text.
///
/// # Errors
/// The type's own message for a refused number or text; serde's "invalid type" or
/// "invalid value" naming [`FromNumber::EXPECTING`] for a negative number, a float,
/// a boolean, a table or an array.
pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
where
    T: FromNumber,
    D: Deserializer<'de>,
{
    deserializer.deserialize_any(NumberOrText(PhantomData))
}

/// The visitor behind [`deserialize`].
struct NumberOrText<T>(PhantomData<T>);

impl<T: FromNumber> Visitor<'_> for NumberOrText<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<T, E> {
        T::from_number(number).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<T, E> {
        match u64::try_from(number) {
            Ok(number) => self.visit_u64(number),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(number), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// A value with rules of its own: an even number, or a text of the form `"2x"`.
    #[derive(Debug, PartialEq)]
    struct Even(u64);

    impl FromStr for Even {
        type Err = String;

        fn from_str(text: &str) -> Result<Self, String> {
            let number = text
                .strip_suffix('x')
                .and_then(|digits| digits.parse().ok())
                .ok_or_else(|| format!("{text:?} is not like \"2x\""))?;
            Self::from_number(number)
        }
    }

    impl FromNumber for Even {
        const EXPECTING: &'static str = "an even number like 2 or \"2x\"";

        fn from_number(number: u64) -> Result<Self, String> {
            if number % 2 == 1 {
                return Err(format!("{number} is odd"));
            }
            Ok(Self(number))
        }
    }

    impl<'de> Deserialize<'de> for Even {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize(deserializer)
        }
    }

    #[derive(Debug, Deserialize)]
    struct Table {
        value: Even,
    }

    fn parse(value: &str) -> Result<Even, String> {
        toml::from_str::<Table>(&format!("value = {value}"))
            .map(|table| table.value)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn a_number_or_a_text_goes_to_the_types_rules_and_other_types_are_refused() {
        assert_eq!(parse("4"), Ok(Even(4)));
        assert_eq!(parse("0o10"), Ok(Even(8)));
        assert_eq!(parse("\"6x\""), Ok(Even(6)));
        // The type's own messages, for a number and for a text.
        let err = parse("3").unwrap_err();
        assert!(err.contains("3 is odd"), "{err}");
        let err = parse("\"5x\"").unwrap_err();
        assert!(err.contains("5 is odd"), "{err}");
        let err = parse("\"six\"").unwrap_err();
        assert!(err.contains("\"six\" is not like \"2x\""), "{err}");
        // Neither a number nor a text, or a negative number: what was given and what
        // the value should look like.
        for (value, given) in [
            ("true", "boolean `true`"),
            ("1.5", "floating point `1.5`"),
            ("[2]", "sequence"),
            ("-2", "integer `-2`"),
        ] {
            let err = parse(value).unwrap_err();
            assert!(err.contains(given), "{value}: {err}");
            assert!(err.contains(Even::EXPECTING), "{value}: {err}");
        }
    }
}
