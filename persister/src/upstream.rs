//! The admin APIs of other services the console reads through (the notifier's delivery log,
//! the dialer's campaigns): their base URLs, checked at start, and the HTTP client that asks
//! them.

use std::time::Duration;

/// `url` as the base URL of a service's API: http or https, with a host, without a query or
/// a fragment; `None` otherwise.
pub fn base_url(url: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.has_host()
            && u.query().is_none()
            && u.fragment().is_none()
    })
}

/// The client of a service's API: answers within `timeout`, and no redirect is followed (the
/// admin token goes to the configured host only).
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
