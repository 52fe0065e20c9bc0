//! Phone-number allowlists: which destinations the gateway lets a call reach.
//!
//! An entry is an E.164 number (`+15550002222`) or a prefix of one ending in `*` (`+1555*`). A
//! bare `*` is not accepted: "anywhere" is exactly what a leaked token must not buy, so an
//! operator who means a whole country writes its code (`+1*`).

/// Longest E.164 number: `+` and 15 digits.
const MAX_DIGITS: usize = 15;

/// An entry that is neither an E.164 number nor such a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an E.164 number (+ and up to 15 digits) or a prefix of one ending in `*`")]
pub struct InvalidEntry(pub String);

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Exact(String),
    Prefix(String),
}

/// A list of allowed destinations; empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

impl Allowlist {
    /// Parses a comma-separated list (whitespace around entries is ignored; an empty string is
    /// the empty list).
    pub fn parse(list: &str) -> Result<Self, InvalidEntry> {
        let mut entries = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let entry = match raw.strip_suffix('*') {
                Some(prefix) if is_number_prefix(prefix) => Entry::Prefix(prefix.to_owned()),
                Some(_) => return Err(InvalidEntry(raw.to_owned())),
                None if is_e164(raw) => Entry::Exact(raw.to_owned()),
                None => return Err(InvalidEntry(raw.to_owned())),
            };
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// Whether `number` may be dialed. Only E.164 numbers ever are (a SIP address or a client
    /// name never matches a prefix by accident).
    pub fn allows(&self, number: &str) -> bool {
        let number = number.trim();
        is_e164(number)
            && self.entries.iter().any(|e| match e {
                Entry::Exact(n) => n == number,
                Entry::Prefix(p) => number.starts_with(p.as_str()),
            })
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `+` and 1..=15 digits, the first not 0.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (1..=MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// `+` and 1..=15 digits (the start of an E.164 number).
fn is_number_prefix(prefix: &str) -> bool {
    is_e164(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_numbers_and_prefixes() {
        let list = Allowlist::parse("+15550002222, +4420*").unwrap();
        assert!(list.allows("+15550002222"));
        assert!(list.allows(" +15550002222 "));
        assert!(!list.allows("+155500022223"));
        assert!(!list.allows("+15550002223"));
        assert!(list.allows("+442071838750"));
        assert!(!list.allows("+442171838750"));
        // Only numbers match, whatever the prefix.
        assert!(!list.allows("+4420abc"));
        assert!(!list.allows("sip:+4420@example.com"));
        assert!(!list.allows(""));
    }

    #[test]
    fn the_empty_list_allows_nothing() {
        for empty in ["", " ", ",", " , "] {
            let list = Allowlist::parse(empty).unwrap();
            assert!(list.is_empty());
            assert!(!list.allows("+15550002222"));
        }
    }

    #[test]
    fn anything_but_numbers_and_prefixes_is_refused() {
        for bad in [
            "*",
            "+*",
            "15550002222",
            "+1555-000",
            "+0123",
            "+1555*2",
            "+1234567890123456",
            "sip:*",
            "+1555**",
        ] {
            assert_eq!(
                Allowlist::parse(bad),
                Err(InvalidEntry(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
