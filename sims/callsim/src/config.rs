//! Who calls whom, and which gateway answers.

use std::fmt;

/// One simulated call's settings.
#[derive(Clone)]
pub struct CallConfig {
    /// Base URL callsim actually connects to, e.g. `http://127.0.0.1:8080`.
    pub gateway: String,
    /// The `PUBLIC_URL` the gateway validates signatures against (default: `gateway`). Stream
    /// URLs in the TwiML that start with it (`wss`/`https` form) are mapped onto `gateway`.
    pub public_url: Option<String>,
    /// `TWILIO_AUTH_TOKEN`: the key of every signature.
    pub auth_token: String,
    pub account_sid: String,
    pub from: String,
    pub to: String,
    /// Default: `CA` + 32 random hex digits, new for every call.
    pub call_sid: Option<String>,
    /// `inbound` (or `outbound-api` for calls the gateway placed).
    pub direction: String,
    /// The voice webhook's path (and query) under the public URL: `/twilio-voice`, or what an
    /// outbound call's `Url` named (e.g. `/twilio-voice?agent=sales`).
    pub webhook_path: String,
    /// More gateways behind the same `PUBLIC_URL` (base URLs like `gateway`): a request that
    /// `gateway` refuses at the TCP level goes to the next, as a load balancer would send it.
    pub failover: Vec<String>,
    /// Twilio's documentation says `clear` sends pending marks back; some Twilio look-alikes drop
    /// them instead. `false` simulates those.
    pub echo_marks_on_clear: bool,
    /// How the numbers a `<Dial>` of this call rings behave.
    pub callees: crate::dial::Callees,
    /// The conferences of the account the call is on (shared with the other calls of a fake
    /// Twilio).
    pub conferences: crate::dial::Conferences,
}

impl CallConfig {
    /// A call from +15550001234 to +15550001111 on a random account.
    pub fn new(gateway: &str, auth_token: &str) -> Self {
        Self {
            gateway: gateway.trim_end_matches('/').to_owned(),
            public_url: None,
            auth_token: auth_token.to_owned(),
            account_sid: format!("AC{}", random_hex()),
            from: "+15550001234".to_owned(),
            to: "+15550001111".to_owned(),
            call_sid: None,
            direction: "inbound".to_owned(),
            webhook_path: crate::call::WEBHOOK_PATH.to_owned(),
            failover: Vec::new(),
            echo_marks_on_clear: true,
            callees: crate::dial::Callees::default(),
            conferences: crate::dial::Conferences::default(),
        }
    }

    /// The base URL the gateway validates against.
    pub fn public_base(&self) -> &str {
        self.public_url
            .as_deref()
            .unwrap_or(&self.gateway)
            .trim_end_matches('/')
    }

    /// The base URL callsim connects to.
    pub fn gateway_base(&self) -> &str {
        self.gateway.trim_end_matches('/')
    }

    /// The gateway, then the failover gateways: where a request to the public URL may go.
    pub fn gateway_bases(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.gateway_base())
            .chain(self.failover.iter().map(|b| b.trim_end_matches('/')))
    }
}

impl fmt::Debug for CallConfig {
    /// Leaves the auth token out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallConfig")
            .field("gateway", &self.gateway)
            .field("public_url", &self.public_url)
            .field("account_sid", &self.account_sid)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("call_sid", &self.call_sid)
            .field("direction", &self.direction)
            .field("webhook_path", &self.webhook_path)
            .field("failover", &self.failover)
            .field("echo_marks_on_clear", &self.echo_marks_on_clear)
            .finish_non_exhaustive()
    }
}

/// 32 random lowercase hex digits: the body of a Twilio SID.
pub fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Maps a `<Stream url>` onto the gateway: returns the URL to connect to and the path to sign
/// (relative to the public URL), or `None` if the URL is elsewhere.
///
/// Accepted: URLs on the public URL's host and path prefix in any of the `wss`/`ws`/`https`/
/// `http` forms (a gateway behind TLS termination may say `wss` while its public URL is written
/// `http`), URLs already on the gateway, and relative paths. Anything else is refused, so a load
/// run can only ever reach the gateway it was pointed at.
pub fn map_stream_url(url: &str, public: &str, gateway: &str) -> Option<(String, String)> {
    let gateway_ws = ws_form(gateway.trim_end_matches('/'));
    if url.starts_with('/') {
        return Some((format!("{gateway_ws}{url}"), url.to_owned()));
    }
    let target = strip_scheme(url)?;
    for base in [public, gateway] {
        let Some(base) = strip_scheme(base.trim_end_matches('/')) else {
            continue;
        };
        if let Some(rest) = target.strip_prefix(base)
            && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
        {
            let path = if rest.is_empty() { "/" } else { rest };
            return Some((format!("{gateway_ws}{path}"), path.to_owned()));
        }
    }
    None
}

/// The URL without its (web) scheme; `None` for other schemes.
fn strip_scheme(url: &str) -> Option<&str> {
    ["wss://", "ws://", "https://", "http://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
}

/// `https://` -> `wss://`, `http://` -> `ws://`.
fn ws_form(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_urls_map_onto_the_gateway() {
        let gw = "http://127.0.0.1:8080";
        let public = "https://agent.example.com";
        assert_eq!(
            map_stream_url("wss://agent.example.com/media", public, gw),
            Some(("ws://127.0.0.1:8080/media".into(), "/media".into()))
        );
        assert_eq!(
            map_stream_url("https://agent.example.com/media", public, gw),
            Some(("ws://127.0.0.1:8080/media".into(), "/media".into()))
        );
        assert_eq!(
            map_stream_url("/media", public, gw),
            Some(("ws://127.0.0.1:8080/media".into(), "/media".into()))
        );
        assert_eq!(
            map_stream_url("ws://127.0.0.1:8080/media", gw, gw),
            Some(("ws://127.0.0.1:8080/media".into(), "/media".into()))
        );
        assert_eq!(
            map_stream_url("wss://127.0.0.1:8080/media", gw, gw),
            Some(("ws://127.0.0.1:8080/media".into(), "/media".into()))
        );
        let prefixed = "https://agent.example.com/voice";
        assert_eq!(
            map_stream_url("wss://agent.example.com/voice/media", prefixed, gw),
            Some(("ws://127.0.0.1:8080/media".into(), "/media".into()))
        );
        assert_eq!(
            map_stream_url("wss://agent.example.com/media", prefixed, gw),
            None
        );
        assert_eq!(
            map_stream_url("wss://agent.example.com.evil.net/media", public, gw),
            None
        );
        assert_eq!(
            map_stream_url("ftp://agent.example.com/media", public, gw),
            None
        );
        assert_eq!(map_stream_url("wss://other.net/media", public, gw), None);
    }

    #[test]
    fn sids_look_like_twilios() {
        let cfg = CallConfig::new("http://gw/", "t");
        assert_eq!(cfg.gateway, "http://gw");
        assert_eq!(cfg.account_sid.len(), 34);
        assert!(cfg.account_sid[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!format!("{cfg:?}").contains("auth_token"));
    }
}
