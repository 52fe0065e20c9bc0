//! The SSRF guard: webhooks go to the public internet only, unless an endpoint is explicitly
//! allowed the private network (`allow_private_network = true`).
//!
//! A URL naming an address is checked before sending; a host name is resolved by
//! [`PublicResolver`], which fails the request when *any* of the host's addresses is loopback,
//! private, link-local, shared, unspecified, multicast or otherwise not globally routable. The
//! connection then goes to exactly the addresses checked (no second lookup that a DNS
//! rebinding could answer differently). Redirects are never followed, so a public endpoint
//! cannot bounce a delivery inward either.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Whether a delivery may go to `ip` without `allow_private_network`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // IPv4-compatible ::/96, NAT64 64:ff9b::/96 and 6to4 2002::/16 embed IPv4
                // addresses that may be private; documentation 2001:db8::/32.
                || (s[0..6] == [0, 0, 0, 0, 0, 0])
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        // Shared address space 100.64.0.0/10 (carrier-grade NAT, often cluster networks).
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // IETF protocol assignments 192.0.0.0/24, benchmarking 198.18.0.0/15, reserved 240/4.
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

/// Why a destination was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves to {addr}, which is not a public address (set allow_private_network = true \
     on the endpoint to allow it)"
)]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
}

/// Checks a URL whose host is an address literal (which no resolver sees).
pub fn check_literal(url: &reqwest::Url) -> Result<(), Refused> {
    let host = url.host_str().unwrap_or_default();
    let Ok(addr) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if is_public(addr) {
        Ok(())
    } else {
        Err(Refused {
            host: addr.to_string(),
            addr,
        })
    }
}

/// A resolver that refuses hosts with any non-public address.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(Refused {
                    host,
                    addr: bad.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_addresses_are_checked() {
        let url = reqwest::Url::parse("http://[::1]:8080/hook").unwrap();
        assert!(check_literal(&url).is_err());
        let url = reqwest::Url::parse("http://169.254.169.254/latest").unwrap();
        assert!(check_literal(&url).is_err());
        let url = reqwest::Url::parse("https://example.com/hook").unwrap();
        assert!(check_literal(&url).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let refused = PublicResolver.resolve(name).await.err().expect("refused");
        assert!(
            refused.to_string().contains("not a public address"),
            "{refused}"
        );
    }
}
