//! `X-Twilio-Signature`: HMAC-SHA1 keyed with the auth token over the URL Twilio requested, with
//! the sorted form parameters appended as `name` + `value`, base64-encoded.
//!
//! The URL is always rebuilt from the configured public base URL (`PUBLIC_URL`), never from the
//! Host header, because proxies and tunnels rewrite it. Twilio is inconsistent about default
//! ports, so validation accepts the URL with and without `:443`/`:80`. For the Media Streams
//! WebSocket upgrade Twilio signs the `wss://` URL with no parameters; the `https://` form is
//! accepted as well.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Computes the signature of `url` with form `params`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(signed_string(url, params).as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// The string Twilio signs: the URL, then each parameter name and value, sorted by name and then
/// value, without separators.
fn signed_string(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut s = String::with_capacity(url.len() + params.len() * 24);
    s.push_str(url);
    for (k, v) in sorted {
        s.push_str(k);
        s.push_str(v);
    }
    s
}

/// Checks signatures against one public base URL.
#[derive(Clone)]
pub struct Validator {
    auth_token: String,
    /// `https://host[:port]` without a trailing slash.
    public_url: String,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator for requests Twilio sends to `public_url` (e.g. `https://agent.example.com`).
    pub fn new(auth_token: impl Into<String>, public_url: &str) -> Self {
        Self {
            auth_token: auth_token.into(),
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The public URL of `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.public_url, path_and_query)
    }

    /// The `wss://` URL of a WebSocket path.
    pub fn ws_url(&self, path: &str) -> String {
        let url = self.url(path);
        if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            url
        }
    }

    /// Validates a form POST (or a GET with an empty `params`) to `path_and_query`.
    pub fn validate(
        &self,
        path_and_query: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> bool {
        let Ok(expected) = B64.decode(signature.trim()) else {
            return false;
        };
        let url = self.url(path_and_query);
        port_variants(&url)
            .iter()
            .any(|u| self.verify(u, params, &expected))
    }

    /// Validates a WebSocket upgrade to `path`: the `wss://` URL with no parameters, or the
    /// `https://` form, each with and without the default port.
    pub fn validate_ws(&self, path: &str, signature: &str) -> bool {
        let Ok(expected) = B64.decode(signature.trim()) else {
            return false;
        };
        let mut urls = port_variants(&self.ws_url(path));
        urls.extend(port_variants(&self.url(path)));
        urls.iter().any(|u| self.verify(u, &[], &expected))
    }

    /// Signs a request to `path_and_query` (used by simulators playing Twilio).
    pub fn sign(&self, path_and_query: &str, params: &[(String, String)]) -> String {
        sign(&self.auth_token, &self.url(path_and_query), params)
    }

    /// Signs a WebSocket upgrade to `path` (used by simulators playing Twilio).
    pub fn sign_ws(&self, path: &str) -> String {
        sign(&self.auth_token, &self.ws_url(path), &[])
    }

    /// Constant-time comparison through `Mac::verify_slice`.
    fn verify(&self, url: &str, params: &[(String, String)], expected: &[u8]) -> bool {
        let mut mac =
            HmacSha1::new_from_slice(self.auth_token.as_bytes()).expect("HMAC takes any key");
        mac.update(signed_string(url, params).as_bytes());
        mac.verify_slice(expected).is_ok()
    }
}

/// The URL as given, plus the form with the scheme's default port added or removed.
fn port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return out,
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let suffix = format!(":{default_port}");
    if let Some(host) = authority.strip_suffix(&suffix) {
        out.push(format!("{scheme}://{host}{tail}"));
    } else if !authority.contains(':') || authority.ends_with(']') {
        out.push(format!("{scheme}://{authority}{suffix}{tail}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_twilios_documented_vector() {
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            sign(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        let v = Validator::new("12345", "https://mycompany.com");
        assert!(v.validate(
            "/myapp.php?foo=1&bar=2",
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!v.validate(
            "/myapp.php?foo=1&bar=3",
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!v.validate(
            "/myapp.php?foo=1&bar=2",
            &params[1..],
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn websocket_upgrade_signs_the_wss_url() {
        assert_eq!(
            sign("12345", "wss://gw.example.com/media", &[]),
            "EaUrJnXeOdQbckRcqHzor+8Gtsk="
        );
        let v = Validator::new("12345", "https://gw.example.com/");
        assert!(v.validate_ws("/media", "EaUrJnXeOdQbckRcqHzor+8Gtsk="));
        assert_eq!(v.sign_ws("/media"), "EaUrJnXeOdQbckRcqHzor+8Gtsk=");
        assert!(!v.validate_ws("/other", "EaUrJnXeOdQbckRcqHzor+8Gtsk="));
        assert!(
            !Validator::new("54321", "https://gw.example.com")
                .validate_ws("/media", "EaUrJnXeOdQbckRcqHzor+8Gtsk=")
        );
    }

    #[test]
    fn accepts_default_port_variants() {
        let with_port = sign("t", "https://gw.example.com:443/twilio-voice", &[]);
        let v = Validator::new("t", "https://gw.example.com");
        assert!(v.validate("/twilio-voice", &[], &with_port));
        let v2 = Validator::new("t", "https://gw.example.com:443");
        let without = sign("t", "https://gw.example.com/twilio-voice", &[]);
        assert!(v2.validate("/twilio-voice", &[], &without));
    }

    #[test]
    fn garbage_signatures_are_rejected() {
        let v = Validator::new("t", "https://gw.example.com");
        for sig in ["", "not base64!", "AAAA", "\u{0}"] {
            assert!(!v.validate("/twilio-voice", &[], sig));
            assert!(!v.validate_ws("/media", sig));
        }
    }
}
