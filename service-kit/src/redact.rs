//! Keeping caller data and credentials out of logs, spans and `Debug` output.
//!
//! Full phone numbers stay in the database (the call record needs them); everything that leaves a
//! process as text for operators (log lines, span fields, error messages) carries a
//! [`MaskedPhone`] instead. Configuration that holds a credential wraps it in [`Secret`], so a
//! `{:?}` of the config, a panic message or a `tracing::debug!(?config)` never prints it.

use std::fmt;

/// Digits of a phone number left visible at the end: enough to tell two calls apart in a log,
/// too few to call anyone back.
const VISIBLE_TAIL: usize = 2;

/// A phone number as it may appear in logs: the leading `+` and country digit, the last two
/// digits, and a `*` for every digit in between (`+15550001111` -> `+1********11`).
///
/// Anything that is not a phone number (a SIP URI, `client:alice`, an empty string) is masked
/// whole except its scheme-like prefix, since it may hold a name or an address.
#[derive(Clone, Copy)]
pub struct MaskedPhone<'a>(pub &'a str);

impl fmt::Display for MaskedPhone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = self.0.trim();
        let digits = number.strip_prefix('+').unwrap_or(number);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if number.starts_with('+') {
                f.write_str("+")?;
            }
            let n = digits.len();
            if n <= VISIBLE_TAIL + 1 {
                return (0..n).try_for_each(|_| f.write_str("*"));
            }
            f.write_str(&digits[..1])?;
            (0..n - 1 - VISIBLE_TAIL).try_for_each(|_| f.write_str("*"))?;
            return f.write_str(&digits[n - VISIBLE_TAIL..]);
        }
        match number.split_once(':') {
            Some((scheme, _)) if !scheme.is_empty() && scheme.len() <= 8 => {
                write!(f, "{scheme}:***")
            }
            _ if number.is_empty() => Ok(()),
            _ => f.write_str("***"),
        }
    }
}

impl fmt::Debug for MaskedPhone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A credential held in configuration (an auth token, a password, an API key). `Debug` and
/// `Display` print `***`; the value is only reachable through [`Secret::expose`], so every place
/// that uses it is easy to find.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that sends or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no credential was configured (an empty value counts as none).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    /// Lets `clap` parse a flag or environment variable straight into a `Secret`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_keep_country_digit_and_last_two() {
        assert_eq!(MaskedPhone("+15550001111").to_string(), "+1********11");
        assert_eq!(MaskedPhone("15550001111").to_string(), "1********11");
        assert_eq!(MaskedPhone(" +442071838750 ").to_string(), "+4*********50");
        assert_eq!(MaskedPhone("+123").to_string(), "+***");
        assert_eq!(
            format!("{:?}", MaskedPhone("+15550001111")),
            "\"+1********11\""
        );
    }

    #[test]
    fn other_addresses_are_masked_whole() {
        assert_eq!(MaskedPhone("client:alice").to_string(), "client:***");
        assert_eq!(MaskedPhone("sip:bob@example.com").to_string(), "sip:***");
        assert_eq!(MaskedPhone("Bob Smith").to_string(), "***");
        assert_eq!(MaskedPhone("").to_string(), "");
    }

    #[test]
    fn secrets_never_print() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            token: Secret,
        }
        let printed = format!("{:?}", Config { token: secret });
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
