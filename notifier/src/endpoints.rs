//! The `WEBHOOKS_FILE`: which URLs get which event kinds, signed with which secret.
//!
//! ```toml
//! [[endpoint]]
//! url = "https://crm.example.com/hooks/switchboard"
//! secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
//! events = ["call.ended", "call.outcome"]
//! # allow_private_network = false
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::signature::{InvalidSecret, SigningKey};

/// The event kinds an endpoint may ask for: `call.<kind>` for each kind of `CallEvent` body.
pub const EVENT_TYPES: [&str; 14] = [
    "call.started",
    "call.transcript",
    "call.tool",
    "call.outcome",
    "call.turn",
    "call.ended",
    "call.rejected",
    "call.status",
    "call.owner",
    "call.dispatched",
    "call.usage",
    "call.recording",
    "call.amd",
    "call.transfer",
];

/// The webhook `type` of an event of `kind` (the subject's kind token).
pub fn event_type(kind: &str) -> Option<&'static str> {
    EVENT_TYPES
        .iter()
        .copied()
        .find(|t| t.strip_prefix("call.") == Some(kind))
}

/// The type whose `data` is the end-of-call report rather than the event itself.
pub const CALL_ENDED: &str = "call.ended";

/// One configured endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub url: reqwest::Url,
    pub key: SigningKey,
    pub events: Vec<&'static str>,
    pub allow_private_network: bool,
}

impl std::fmt::Debug for Endpoint {
    /// Leaves the secret out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("allow_private_network", &self.allow_private_network)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Whether the endpoint asked for events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.contains(&event_type)
    }
}

/// Why the webhooks file was refused.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("endpoint {index}: url {url:?} is not an absolute http(s) URL")]
    Url { index: usize, url: String },
    #[error("endpoint {index} ({url}): {source}")]
    Secret {
        index: usize,
        url: String,
        source: InvalidSecret,
    },
    #[error("endpoint {index} ({url}): unknown event {event:?}; known: {known}", known = EVENT_TYPES.join(", "))]
    Event {
        index: usize,
        url: String,
        event: String,
    },
    #[error("endpoint {url} is listed twice")]
    Duplicate { url: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    url: String,
    secret: String,
    events: Vec<String>,
    #[serde(default)]
    allow_private_network: bool,
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Vec<Endpoint>, EndpointsError> {
    let text = std::fs::read_to_string(path).map_err(|source| EndpointsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ParseError::Toml(source) => EndpointsError::Parse {
            path: path.display().to_string(),
            source,
        },
        ParseError::Invalid(e) => e,
    })
}

enum ParseError {
    Toml(toml::de::Error),
    Invalid(EndpointsError),
}

fn parse(text: &str) -> Result<Vec<Endpoint>, ParseError> {
    let file: File = toml::from_str(text).map_err(ParseError::Toml)?;
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for (index, raw) in file.endpoint.into_iter().enumerate() {
        let url = reqwest::Url::parse(&raw.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ParseError::Invalid(EndpointsError::Url {
                    index,
                    url: raw.url.clone(),
                })
            })?;
        let key = SigningKey::from_secret(&raw.secret).map_err(|source| {
            ParseError::Invalid(EndpointsError::Secret {
                index,
                url: raw.url.clone(),
                source,
            })
        })?;
        let mut events = Vec::new();
        for event in raw.events {
            let known = EVENT_TYPES
                .iter()
                .copied()
                .find(|t| *t == event)
                .ok_or_else(|| {
                    ParseError::Invalid(EndpointsError::Event {
                        index,
                        url: raw.url.clone(),
                        event: event.clone(),
                    })
                })?;
            events.push(known);
        }
        if endpoints.iter().any(|e| e.url == url) {
            return Err(ParseError::Invalid(EndpointsError::Duplicate {
                url: url.to_string(),
            }));
        }
        endpoints.push(Endpoint {
            url,
            key,
            events,
            allow_private_network: raw.allow_private_network,
        });
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Vec<Endpoint> {
        match parse(text) {
            Ok(e) => e,
            Err(ParseError::Toml(e)) => panic!("{e}"),
            Err(ParseError::Invalid(e)) => panic!("{e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted {text}"),
            Err(ParseError::Toml(e)) => e.to_string(),
            Err(ParseError::Invalid(e)) => e.to_string(),
        }
    }

    #[test]
    fn reads_endpoints_with_their_filters() {
        let endpoints = parse_ok(
            r#"
            [[endpoint]]
            url = "https://crm.example.com/hooks"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = ["call.ended", "call.outcome"]

            [[endpoint]]
            url = "http://127.0.0.1:9000/"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = ["call.transcript"]
            allow_private_network = true
            "#,
        );
        assert_eq!(endpoints.len(), 2);
        assert!(endpoints[0].wants("call.ended"));
        assert!(!endpoints[0].wants("call.transcript"));
        assert!(!endpoints[0].allow_private_network);
        assert!(endpoints[1].allow_private_network);
    }

    #[test]
    fn refuses_unknown_events_bad_urls_and_secrets() {
        let bad_event = parse_err(
            r#"[[endpoint]]
            url = "https://a.example/"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = ["call.finished"]"#,
        );
        assert!(bad_event.contains("call.finished"), "{bad_event}");
        let bad_url = parse_err(
            r#"[[endpoint]]
            url = "ftp://a.example/"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = []"#,
        );
        assert!(bad_url.contains("ftp://"), "{bad_url}");
        let bad_secret = parse_err(
            r#"[[endpoint]]
            url = "https://a.example/"
            secret = "hunter2"
            events = []"#,
        );
        assert!(bad_secret.contains("whsec_"), "{bad_secret}");
        let typo = parse_err(
            r#"[[endpoint]]
            url = "https://a.example/"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            event = ["call.ended"]"#,
        );
        assert!(typo.contains("event"), "{typo}");
    }

    #[test]
    fn every_event_kind_has_a_type() {
        for kind in switchboard_proto::event::KINDS {
            assert_eq!(event_type(kind).map(|t| &t[5..]), Some(kind));
        }
        assert_eq!(EVENT_TYPES.len(), switchboard_proto::event::KINDS.len());
        assert_eq!(event_type("started"), Some("call.started"));
        assert_eq!(event_type("ended"), Some(CALL_ENDED));
        assert_eq!(event_type("status"), Some("call.status"));
        assert_eq!(event_type("unknown"), None);
    }
}
