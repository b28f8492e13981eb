//! Which variable names the proxy: `SOCKSIFY_PROXY`; when it is unset,
//! curl's `all_proxy`/`ALL_PROXY` if that holds a SOCKS URL (so a shell set
//! up for curl works as is); else the default.
//!
//! An `ALL_PROXY` of another kind (`http://`, or no scheme, which curl reads
//! as HTTP) is not ours to use: it is ignored, with a warning saying so.

use super::DEFAULT_PROXY;

/// Where the proxy chain came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    SocksifyProxy,
    /// curl's variable, by the name it was found under (`all_proxy` or `ALL_PROXY`).
    AllProxy(&'static str),
    Default,
}

impl ProxySource {
    /// The variable to name in an error about the proxy URL.
    pub fn var(self) -> &'static str {
        match self {
            ProxySource::AllProxy(var) => var,
            ProxySource::SocksifyProxy | ProxySource::Default => "SOCKSIFY_PROXY",
        }
    }
}

/// The proxy text to parse, where it came from, and a warning when an
/// `ALL_PROXY` was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyChoice {
    pub text: String,
    pub source: ProxySource,
    pub warning: Option<String>,
}

/// URL schemes of curl's SOCKS proxies.
const CURL_SOCKS_SCHEMES: [&str; 4] = ["socks5h", "socks5", "socks4a", "socks4"];

pub fn choose(get: &impl Fn(&str) -> Option<String>) -> ProxyChoice {
    let set = |name: &str| get(name).filter(|s| !s.trim().is_empty());
    if let Some(text) = set("SOCKSIFY_PROXY") {
        return ProxyChoice { text, source: ProxySource::SocksifyProxy, warning: None };
    }
    // curl reads the lower-case name first.
    for var in ["all_proxy", "ALL_PROXY"] {
        let Some(text) = set(var) else { continue };
        let scheme = text.trim().split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if scheme.as_deref().is_some_and(|s| CURL_SOCKS_SCHEMES.contains(&s)) {
            return ProxyChoice { text, source: ProxySource::AllProxy(var), warning: None };
        }
        // Only the scheme is shown: the rest may hold a password.
        let kind = match scheme {
            Some(s) => format!("a URL of scheme {s}://"),
            None => "a URL without a scheme (curl reads it as HTTP)".into(),
        };
        let warning = format!(
            "{var} holds {kind}, ignored: socksify speaks SOCKS only (socks5h://, socks5://, socks4a://, socks4://); \
             using {DEFAULT_PROXY} (set SOCKSIFY_PROXY to choose)"
        );
        return ProxyChoice { text: DEFAULT_PROXY.into(), source: ProxySource::Default, warning: Some(warning) };
    }
    ProxyChoice { text: DEFAULT_PROXY.into(), source: ProxySource::Default, warning: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn choose_from(vars: &[(&str, &str)]) -> ProxyChoice {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        choose(&|name| map.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn socksify_proxy_wins_over_all_proxy() {
        let c = choose_from(&[("SOCKSIFY_PROXY", "socks5://127.0.0.1:1"), ("ALL_PROXY", "socks5h://127.0.0.1:2")]);
        assert_eq!((c.text.as_str(), c.source, c.warning), ("socks5://127.0.0.1:1", ProxySource::SocksifyProxy, None));
    }

    #[test]
    fn each_socks_scheme_of_all_proxy_is_used_lower_case_name_first() {
        for scheme in ["socks5h", "socks5", "socks4a", "socks4", "SOCKS5H"] {
            let url = format!("{scheme}://127.0.0.1:9");
            let c = choose_from(&[("ALL_PROXY", &url)]);
            assert_eq!((c.text.as_str(), c.source, c.warning.as_deref()), (url.as_str(), ProxySource::AllProxy("ALL_PROXY"), None));
        }
        let c = choose_from(&[("SOCKSIFY_PROXY", " "), ("all_proxy", "socks5://a:1"), ("ALL_PROXY", "socks5://b:1")]);
        assert_eq!((c.text.as_str(), c.source), ("socks5://a:1", ProxySource::AllProxy("all_proxy")));
    }

    #[test]
    fn an_http_all_proxy_is_ignored_with_a_warning_that_shows_no_password() {
        for (value, kind) in [("http://bob:hunter2@gw:3128", "http://"), ("bob:hunter2@gw:3128", "without a scheme")] {
            let c = choose_from(&[("ALL_PROXY", value)]);
            assert_eq!((c.text.as_str(), c.source), (DEFAULT_PROXY, ProxySource::Default));
            let warning = c.warning.expect("a warning");
            assert!(warning.starts_with("ALL_PROXY holds") && warning.contains(kind), "{warning}");
            assert!(!warning.contains("hunter2") && !warning.contains('\n'), "{warning}");
        }
    }

    #[test]
    fn nothing_set_is_the_default_without_a_warning() {
        assert_eq!(choose_from(&[]), ProxyChoice { text: DEFAULT_PROXY.into(), source: ProxySource::Default, warning: None });
    }
}
