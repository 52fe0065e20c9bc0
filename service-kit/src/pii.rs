//! Personal data in call records: finding phone numbers, email addresses, payment card numbers
//! and US social security numbers in transcript text and tool JSON, and replacing them with a
//! marker of their kind (`[phone]`, `[email]`, `[card]`, `[ssn]`).
//!
//! An agent lists the kinds it redacts (`redact = ["phone", "card"]` in the agents file); the
//! call-worker applies its [`Redactor`] to what it records, before an event leaves the process.
//! The model and the tools still see the caller's words in full (a booking tool needs the number),
//! and audio is not redacted.
//!
//! The rules are deliberately narrow, so that what a business needs in its records survives:
//! - `card`: 13 to 19 digits (spaces or dashes allowed between groups) that pass the Luhn check,
//!   so an order number of the same length stays;
//! - `ssn`: nine digits written `3-2-4` (dashes or spaces);
//! - `phone`: a `+` and 8 to 15 digits, or 10 to 11 digits, or `3-4` / `3-3-4` groups (with
//!   optional parentheses around the area code); a run that is a card or an SSN counts as that;
//! - `email`: `local@domain.tld`.
//!
//! Digits spelled out as words ("five five five...") are not recognised.

use std::collections::BTreeSet;

pub use switchboard_proto::event::PiiKind;

/// Text after redaction, and the kinds that were found in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Redacted {
    /// The text with every value of a redacted kind replaced by its marker.
    pub text: String,
    /// The kinds that were replaced (empty: the text is unchanged).
    pub kinds: BTreeSet<PiiKind>,
}

/// Removes the configured kinds of personal data from text and JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    kinds: BTreeSet<PiiKind>,
}

impl Redactor {
    /// A redactor for `kinds` (none: it changes nothing).
    pub fn new(kinds: impl IntoIterator<Item = PiiKind>) -> Self {
        Self {
            kinds: kinds.into_iter().collect(),
        }
    }

    /// This redactor's kinds and `kinds`.
    pub fn with(&self, kinds: impl IntoIterator<Item = PiiKind>) -> Self {
        let mut all = self.kinds.clone();
        all.extend(kinds);
        Self { kinds: all }
    }

    /// Whether it redacts anything at all.
    pub fn is_active(&self) -> bool {
        !self.kinds.is_empty()
    }

    /// `text` with the configured kinds replaced by their markers.
    pub fn text(&self, text: &str) -> Redacted {
        let mut found = BTreeSet::new();
        if !self.is_active() {
            return Redacted {
                text: text.to_owned(),
                kinds: found,
            };
        }
        let mut spans = Vec::new();
        if self.kinds.contains(&PiiKind::Email) {
            spans.extend(emails(text).map(|r| (r, PiiKind::Email)));
        }
        spans.extend(
            digit_runs(text)
                .filter_map(|run| Some((classify(&run)?, run.range)))
                .map(|(kind, range)| (range, kind))
                .filter(|(_, kind)| self.kinds.contains(kind)),
        );
        spans.sort_by_key(|(r, _)| r.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, kind) in spans {
            if range.start < at {
                // Overlaps a span already replaced (digits inside an email address).
                continue;
            }
            out.push_str(&text[at..range.start]);
            out.push_str(kind.marker());
            found.insert(kind);
            at = range.end;
        }
        out.push_str(&text[at..]);
        Redacted {
            text: out,
            kinds: found,
        }
    }

    /// JSON text with every string value (and every long number) redacted; object keys are kept.
    /// Text that is not JSON is redacted as text.
    pub fn json(&self, json: &str) -> Redacted {
        if !self.is_active() {
            return self.text(json);
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(json) else {
            return self.text(json);
        };
        let mut kinds = BTreeSet::new();
        self.value(&mut value, &mut kinds);
        if kinds.is_empty() {
            return Redacted {
                text: json.to_owned(),
                kinds,
            };
        }
        Redacted {
            text: value.to_string(),
            kinds,
        }
    }

    fn value(&self, value: &mut serde_json::Value, kinds: &mut BTreeSet<PiiKind>) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                let r = self.text(s);
                if !r.kinds.is_empty() {
                    *s = r.text;
                    kinds.extend(r.kinds);
                }
            }
            Value::Number(n) => {
                let r = self.text(&n.to_string());
                if !r.kinds.is_empty() {
                    kinds.extend(r.kinds);
                    *value = Value::String(r.text);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v, kinds)),
            Value::Object(fields) => fields.values_mut().for_each(|v| self.value(v, kinds)),
            Value::Bool(_) | Value::Null => {}
        }
    }
}

/// A run of digits in text, with the separators between its groups.
struct DigitRun {
    /// Byte range in the text, from the first character of the number (`+` or `(` included) to
    /// its last digit.
    range: std::ops::Range<usize>,
    /// The digits alone.
    digits: String,
    /// Digits per group, in order.
    groups: Vec<usize>,
    /// The number starts with `+`.
    plus: bool,
}

/// Runs of digit groups joined by single separators (space, `-`, `.`, or parentheses around
/// the first group). A run is not part of a longer word (`A123` is no number).
fn digit_runs(text: &str) -> impl Iterator<Item = DigitRun> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let start = i;
            let word_before = start > 0 && bytes[start - 1].is_ascii_alphanumeric();
            let plus = bytes[i] == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            let paren = bytes[i] == b'(' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(bytes[i].is_ascii_digit() || plus || paren) || word_before {
                i += 1;
                continue;
            }
            let mut j = if plus || paren { i + 1 } else { i };
            let mut digits = String::new();
            let mut groups = Vec::new();
            let mut end = j;
            loop {
                let group_start = j;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                if j == group_start {
                    break;
                }
                digits.push_str(&text[group_start..j]);
                groups.push(j - group_start);
                end = j;
                // One separator, then another group must follow.
                let mut k = j;
                if paren && groups.len() == 1 && bytes.get(k) == Some(&b')') {
                    k += 1;
                    if bytes.get(k) == Some(&b' ') {
                        k += 1;
                    }
                } else if matches!(bytes.get(k), Some(b' ' | b'-' | b'.')) {
                    k += 1;
                } else {
                    break;
                }
                if bytes.get(k).is_some_and(u8::is_ascii_digit) {
                    j = k;
                } else {
                    break;
                }
            }
            i = end.max(start + 1);
            let word_after = bytes.get(end).is_some_and(u8::is_ascii_alphanumeric);
            if digits.is_empty() || word_after {
                continue;
            }
            return Some(DigitRun {
                range: start..end,
                digits,
                groups,
                plus,
            });
        }
        None
    })
}

/// What a run of digits is, if it is personal data of some kind.
fn classify(run: &DigitRun) -> Option<PiiKind> {
    let n = run.digits.len();
    if (13..=19).contains(&n) && luhn(&run.digits) {
        return Some(PiiKind::Card);
    }
    if run.groups == [3, 2, 4] {
        return Some(PiiKind::Ssn);
    }
    let phone = if run.plus {
        (8..=15).contains(&n)
    } else {
        (10..=11).contains(&n) || run.groups == [3, 4] || run.groups == [3, 3, 4]
    };
    phone.then_some(PiiKind::Phone)
}

/// The Luhn checksum of a payment card number.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Byte ranges of `local@domain.tld` addresses.
fn emails(text: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let bytes = text.as_bytes();
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    text.match_indices('@').filter_map(move |(at, _)| {
        let mut start = at;
        while start > 0 && local(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && domain(bytes[end]) {
            end += 1;
        }
        // A sentence's full stop is not part of the domain.
        while end > at + 1 && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let host = &text[at + 1..end];
        let tld_ok = host
            .rsplit_once('.')
            .is_some_and(|(name, tld)| !name.is_empty() && tld.len() >= 2);
        (start < at && tld_ok).then_some(start..end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(PiiKind::ALL.iter().copied())
    }

    #[test]
    fn kinds_round_trip() {
        for &k in PiiKind::ALL {
            assert_eq!(PiiKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(PiiKind::parse("address"), None);
    }

    #[test]
    fn phone_numbers_in_the_ways_callers_say_them() {
        for said in [
            "call me at +15550001234 please",
            "call me at 555-000-1234 please",
            "call me at (555) 000-1234 please",
            "call me at 555 000 1234 please",
            "call me at 555.000.1234 please",
            "call me at 5550001234 please",
            "call me at 000-1234 please",
        ] {
            let r = all().text(said);
            assert_eq!(r.text, "call me at [phone] please", "{said}");
            assert_eq!(r.kinds, BTreeSet::from([PiiKind::Phone]));
        }
    }

    #[test]
    fn cards_are_checked_by_luhn_so_order_numbers_survive() {
        let r = all().text("my card is 4111 1111 1111 1111, expiry soon");
        assert_eq!(r.text, "my card is [card], expiry soon");
        assert_eq!(r.kinds, BTreeSet::from([PiiKind::Card]));
        let dashed = all().text("5500-0000-0000-0004");
        assert_eq!(dashed.text, "[card]");
        // Sixteen digits that fail Luhn: an order number, kept.
        let order = all().text("order 4111 1111 1111 1112 shipped");
        assert_eq!(order.text, "order 4111 1111 1111 1112 shipped");
        assert!(order.kinds.is_empty());
        // Short numbers are not personal data.
        let short = all().text("order 12345678, 3 items, room 101");
        assert_eq!(short.text, "order 12345678, 3 items, room 101");
    }

    #[test]
    fn ssns_and_emails() {
        let r = all().text("SSN 123-45-6789 and mail jane.doe+x@mail.example.com.");
        assert_eq!(r.text, "SSN [ssn] and mail [email].");
        assert_eq!(r.kinds, BTreeSet::from([PiiKind::Email, PiiKind::Ssn]));
        assert_eq!(all().text("at @ noon, a@b").text, "at @ noon, a@b");
    }

    #[test]
    fn only_the_configured_kinds_are_redacted() {
        let phone_only = Redactor::new([PiiKind::Phone]);
        let r = phone_only.text("4111111111111111 or 555-000-1234 or a@b.co");
        assert_eq!(r.text, "4111111111111111 or [phone] or a@b.co");
        let none = Redactor::default();
        assert!(!none.is_active());
        assert_eq!(none.text("555-000-1234").text, "555-000-1234");
    }

    #[test]
    fn numbers_inside_words_are_not_numbers() {
        let r = all().text("ticket AB5550001234 and ref 5550001234X");
        assert_eq!(r.text, "ticket AB5550001234 and ref 5550001234X");
    }

    #[test]
    fn json_strings_and_long_numbers_are_redacted_keys_kept() {
        let r = all().json(
            r#"{"phone":"+15550001234","card":4111111111111111,"note":"ok","n":[7,"a@b.co"]}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
        assert_eq!(v["phone"], "[phone]");
        assert_eq!(v["card"], "[card]");
        assert_eq!(v["note"], "ok");
        assert_eq!(v["n"], serde_json::json!([7, "[email]"]));
        assert_eq!(
            r.kinds,
            BTreeSet::from([PiiKind::Phone, PiiKind::Email, PiiKind::Card])
        );
        // Untouched JSON keeps its exact text.
        let same = all().json(r#"{ "day": "monday" }"#);
        assert_eq!(same.text, r#"{ "day": "monday" }"#);
        // Not JSON: redacted as text.
        assert_eq!(all().json("call 555-000-1234").text, "call [phone]");
    }

    #[test]
    fn never_panics_on_odd_text() {
        for s in [
            "",
            "+",
            "(",
            "(1",
            "1-",
            "@",
            "é 555-000-1234 ü",
            "((((",
            "+-+-",
            "1 2 3 4 5",
        ] {
            let _ = all().text(s);
            let _ = all().json(s);
        }
        assert_eq!(all().text("é 555-000-1234 ü").text, "é [phone] ü");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_redacted_without_panics_and_markers_only_replace(s in "\\PC{0,80}") {
            let r = all().text(&s);
            if r.kinds.is_empty() {
                proptest::prop_assert_eq!(&r.text, &s);
            }
            let _ = all().json(&s);
        }

        #[test]
        fn every_luhn_valid_card_is_found(digits in proptest::collection::vec(0u8..10, 15)) {
            // Complete 15 digits to a Luhn-valid 16-digit number.
            let body: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            let check = (0..10u8)
                .map(|c| format!("{body}{c}"))
                .find(|n| luhn(n))
                .expect("one check digit fits");
            let r = Redactor::new([PiiKind::Card]).text(&format!("card {check} thanks"));
            proptest::prop_assert_eq!(r.text, "card [card] thanks");
        }
    }
}
