//! The HTTP client of a provider's endpoints: one [`HttpClient`] per provider, built once on
//! reqwest (HTTP/1.1, our own rustls `ClientConfig`, no redirects, no connection pool: token
//! requests are rare), with the egress proxy the config or the environment names
//! ([`ProxySetting`]). A request runs under one deadline whose phase (connect — TCP, proxy tunnel
//! and TLS, at most half the budget —, request, response_body) is named when it passes; the
//! response body is streamed into a capped buffer.
//!
//! Both bodies hold secrets (the request a client secret, an assertion or a refresh token, the
//! response the new tokens): the request body is handed over as [`wiping_bytes`], and the response
//! is gathered into one buffer that is zeroed on drop and grows without leaving copies. What
//! reqwest, hyper and rustls buffer internally on the way is out of our reach. Proxy credentials
//! are never part of a URL we keep or print: they travel as a `Proxy-Authorization` header only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use url::{Host, Url};
use zeroize::Zeroizing;

use crate::secret::{Secret, SecretString, wiping_bytes};

const USER_AGENT: &str = concat!("authbridge/", env!("CARGO_PKG_VERSION"));

/// Which egress proxy a provider's requests go through.
#[derive(Clone, Debug, Default)]
pub enum ProxySetting {
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (or their lower-case forms), read when the
    /// client is built. The default.
    #[default]
    Environment,
    /// `proxy: none`: always connect directly, whatever the environment says.
    Direct,
    /// `proxy: { url, username, password }`: every request of the provider, `NO_PROXY` ignored.
    Configured(ProxyConfig),
}

/// An explicitly configured proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// `http://host:port` (no user info: that goes into `username`/`password`).
    pub url: Url,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

/// A proxy as it is named in messages: its URL without credentials, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProxyLabel {
    url: String,
    source: &'static str,
}

/// One provider's HTTP client. Cheap to clone (the reqwest client is shared).
#[derive(Clone, Debug)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    proxy: ProxySetting,
    /// Built on first use, with the request timeout then known (it is fixed for a process).
    built: Arc<OnceLock<Result<Built, String>>>,
}

#[derive(Clone, Debug)]
struct Built {
    client: reqwest::Client,
    /// The proxy for `https://` and for `http://` URLs, for messages.
    https_proxy: Option<ProxyLabel>,
    http_proxy: Option<ProxyLabel>,
    /// `NO_PROXY` was set (a proxy named in a message may not have been used).
    no_proxy: bool,
}

/// What came back.
pub(crate) struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Secret<Vec<u8>>,
}

/// Why no answer came back. Never holds request or response content.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// The URL or the proxy settings cannot be used (a configuration error).
    BadUrl(String),
    /// The deadline passed in this phase.
    Timeout(&'static str),
    /// This phase failed.
    Failed(&'static str, String),
    /// The body is larger than allowed.
    TooLarge(usize),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BadUrl(why) => write!(f, "unusable URL: {why}"),
            HttpError::Timeout(phase) => write!(f, "timed out ({phase})"),
            HttpError::Failed(phase, why) => write!(f, "{phase} failed: {why}"),
            HttpError::TooLarge(limit) => write!(f, "response larger than {limit} bytes"),
        }
    }
}

/// `https://host[:port]/path?query` (no user info), or `http://` to a loopback host only: a
/// token request carries the client secret and a refresh token, so plain HTTP is for tests and
/// local stand-ins, never for a host across a network.
pub(crate) fn parse_url(url: &str) -> Result<Url, HttpError> {
    let bad = |why: &str| HttpError::BadUrl(why.to_owned());
    let parsed = Url::parse(url).map_err(|e| bad(&format!("not a URL ({e})")))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("the scheme must be https://")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("user info in the URL is not supported"));
    }
    let loopback = match parsed.host() {
        None => return Err(bad("no host")),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
    };
    if !https && !loopback {
        return Err(bad(
            "plain http:// is only allowed to a loopback host (127.0.0.1, [::1], localhost), \
             for tests: use https://",
        ));
    }
    Ok(parsed)
}

/// Whether `url` can serve as a provider endpoint (`token_url`, `authorize_url`,
/// `device_code_url`): what the token client accepts. The error says why, for the config loader.
pub fn check_endpoint_url(url: &str) -> Result<(), String> {
    match parse_url(url) {
        Ok(_) => Ok(()),
        Err(HttpError::BadUrl(why)) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

/// The host of a URL as it is named in messages.
pub(crate) fn host_of(url: &Url) -> String {
    url.host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// A proxy URL as the config or the environment gives it: `http://host:port` (or `https://`);
/// user info is split off into the returned credentials so the URL we keep holds none.
pub fn parse_proxy_url(text: &str) -> Result<(Url, Option<(String, SecretString)>), String> {
    // `HTTPS_PROXY=proxy:3128` (no scheme) is common and means http://.
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| format!("not a proxy URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported proxy scheme {}:// (expected http:// or https://)",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("the proxy URL has no host".to_owned());
    }
    let credentials = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let user = percent_decode(url.username());
        let password = SecretString::new(percent_decode(url.password().unwrap_or("")));
        // Cannot fail for http(s) URLs with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some((user, password))
    };
    Ok((url, credentials))
}

fn percent_decode(s: &str) -> String {
    // User info in a URL is percent-encoded; form_urlencoded's decoder would also turn `+` into a
    // space, which is wrong here, so protect `+` first.
    let protected = s.replace('+', "%2B");
    form_urlencoded::parse(format!("x={protected}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The first set, non-empty variable of `names`, with its name.
fn env_var(names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*name, v.trim().to_owned()))
    })
}

impl HttpClient {
    /// A client for endpoints served with `tls` (webpki roots plus a provider's `ca_file`),
    /// through `proxy`. Checks a configured proxy now; the environment is read on first use.
    pub fn new(tls: Arc<rustls::ClientConfig>, proxy: ProxySetting) -> HttpClient {
        HttpClient {
            tls,
            proxy,
            built: Arc::new(OnceLock::new()),
        }
    }

    /// A client with the same proxy setting and other TLS roots (the Microsoft Graph endpoint
    /// of a listener, whose `ca_file` may differ from the provider's). Built on first use.
    pub fn with_tls(&self, tls: Arc<rustls::ClientConfig>) -> HttpClient {
        HttpClient::new(tls, self.proxy.clone())
    }

    /// The underlying reqwest client (HTTP/1.1, no redirects, the proxy applied) and, for
    /// messages, the proxy a request to `url` goes through. For callers that send other
    /// requests than token requests (Microsoft Graph `sendMail`).
    pub(crate) fn reqwest_for(
        &self,
        url: &Url,
        timeout: Duration,
    ) -> Result<(reqwest::Client, Option<String>), String> {
        let built = self.build(timeout)?;
        Ok((built.client.clone(), self.proxy_for(built, url)))
    }

    /// The proxy setting in words, for `check` and `status` (never with credentials).
    pub fn describe_proxy(&self) -> String {
        match &self.proxy {
            ProxySetting::Direct => "none (proxy: none)".to_owned(),
            ProxySetting::Configured(p) => format!(
                "{}{}",
                p.url,
                if p.username.is_some() {
                    " (with credentials)"
                } else {
                    ""
                }
            ),
            ProxySetting::Environment => match self.build(Duration::from_secs(5)) {
                Ok(b) => match (&b.https_proxy, &b.http_proxy) {
                    (None, None) => "none (no HTTPS_PROXY/HTTP_PROXY set)".to_owned(),
                    (Some(p), _) | (None, Some(p)) => format!(
                        "{} (from {}{})",
                        p.url,
                        p.source,
                        if b.no_proxy { ", NO_PROXY applies" } else { "" }
                    ),
                },
                Err(e) => format!("unusable: {e}"),
            },
        }
    }

    fn build(&self, timeout: Duration) -> Result<&Built, String> {
        self.built
            .get_or_init(|| build(&self.tls, &self.proxy, timeout))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The proxy a request to `url` goes through, for messages.
    fn proxy_for(&self, built: &Built, url: &Url) -> Option<String> {
        let p = if url.scheme() == "https" {
            built.https_proxy.as_ref()
        } else {
            built.http_proxy.as_ref()
        }?;
        Some(format!(
            "proxy {} (from {}{})",
            p.url,
            p.source,
            if built.no_proxy {
                ", unless NO_PROXY exempts the host"
            } else {
                ""
            }
        ))
    }

    /// POSTs `form` (already `application/x-www-form-urlencoded`) to `url`. The error names the
    /// proxy when one was in the way.
    pub(crate) async fn post_form(
        &self,
        url: &Url,
        form: &SecretString,
        timeout: Duration,
        max_body: usize,
    ) -> Result<HttpResponse, (HttpError, Option<String>)> {
        let built = self
            .build(timeout)
            .map_err(|e| (HttpError::BadUrl(e), None))?;
        let via = self.proxy_for(built, url);
        let deadline = Instant::now() + timeout;
        let response = send(built, url, form, deadline, max_body)
            .await
            .map_err(|e| (e, via.clone()))?;
        if response.status == 407 {
            let why = match &via {
                Some(p) => format!("the {p} requires authentication (HTTP 407)"),
                None => "a proxy on the way requires authentication (HTTP 407)".to_owned(),
            };
            return Err((HttpError::Failed("proxy", why), via));
        }
        Ok(response)
    }
}

fn build(
    tls: &Arc<rustls::ClientConfig>,
    setting: &ProxySetting,
    timeout: Duration,
) -> Result<Built, String> {
    // We speak HTTP/1.1 only, whatever ALPN the shared config offers.
    let mut tls = (**tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(USER_AGENT)
        .connect_timeout(timeout / 2)
        // We read the environment ourselves (below) so that we can name the proxy in messages
        // and keep credentials out of URLs.
        .no_proxy();
    let (mut https_proxy, mut http_proxy, mut no_proxy_set) = (None, None, false);
    match setting {
        ProxySetting::Direct => {}
        ProxySetting::Configured(p) => {
            let mut proxy =
                reqwest::Proxy::all(p.url.as_str()).map_err(|e| format!("proxy {}: {e}", p.url))?;
            if let Some(user) = &p.username {
                let password = p.password.as_ref().map_or("", |s| s.expose().as_str());
                proxy = proxy.basic_auth(user, password);
            }
            builder = builder.proxy(proxy);
            let label = ProxyLabel {
                url: p.url.to_string(),
                source: "config",
            };
            https_proxy = Some(label.clone());
            http_proxy = Some(label);
        }
        ProxySetting::Environment => {
            let no_proxy = reqwest::NoProxy::from_env();
            no_proxy_set = no_proxy.is_some();
            for (https, names) in [
                (
                    true,
                    &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"][..],
                ),
                // `HTTP_PROXY` upper-case is honoured like curl and reqwest do; a CGI context,
                // where a client could set it through a `Proxy:` header, does not apply here.
                (
                    false,
                    &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"][..],
                ),
            ] {
                let Some((source, value)) = env_var(names) else {
                    continue;
                };
                let (url, credentials) =
                    parse_proxy_url(&value).map_err(|e| format!("{source}: {e}"))?;
                let mut proxy = if https {
                    reqwest::Proxy::https(url.as_str())
                } else {
                    reqwest::Proxy::http(url.as_str())
                }
                .map_err(|e| format!("{source}: {e}"))?
                .no_proxy(no_proxy.clone());
                if let Some((user, password)) = &credentials {
                    proxy = proxy.basic_auth(user, password.expose());
                }
                builder = builder.proxy(proxy);
                let label = Some(ProxyLabel {
                    url: url.to_string(),
                    source,
                });
                if https {
                    https_proxy = label;
                } else {
                    http_proxy = label;
                }
            }
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))?;
    Ok(Built {
        client,
        https_proxy,
        http_proxy,
        no_proxy: no_proxy_set,
    })
}

/// An error and its sources, `: `-separated (reqwest's own text is only the outermost layer).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn classify_send_error(e: reqwest::Error) -> HttpError {
    let phase = if e.is_connect() { "connect" } else { "request" };
    if e.is_timeout() {
        return HttpError::Timeout(phase);
    }
    let text = chain(&e.without_url());
    // hyper-util's tunnel errors: the proxy answered the CONNECT with something else than 200.
    if text.contains("proxy authorization required") {
        return HttpError::Failed(
            "proxy",
            "the proxy requires authentication (HTTP 407 Proxy Authentication Required): set \
             `proxy.username` and `proxy.password`, or user:password in HTTPS_PROXY"
                .to_owned(),
        );
    }
    if text.contains("tunnel error") {
        return HttpError::Failed("proxy", format!("the proxy refused the CONNECT: {text}"));
    }
    HttpError::Failed(phase, text)
}

async fn send(
    built: &Built,
    url: &Url,
    form: &SecretString,
    deadline: Instant,
    max_body: usize,
) -> Result<HttpResponse, HttpError> {
    let request = built
        .client
        .post(url.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(wiping_bytes(form.expose().as_bytes().to_vec()));
    let mut response = timeout_at(deadline, request.send())
        .await
        .map_err(|_| HttpError::Timeout("request"))?
        .map_err(classify_send_error)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let declared = response.content_length();
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(HttpError::TooLarge(max_body));
    }
    // Sized for the announced length (bounded above), so it usually never grows.
    let mut body = Zeroizing::new(Vec::with_capacity(
        declared
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(INITIAL_BODY)
            .min(max_body),
    ));
    loop {
        let chunk = match timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(HttpError::Timeout("response_body")),
            Ok(Err(e)) if e.is_timeout() => return Err(HttpError::Timeout("response_body")),
            Ok(Err(e)) => {
                return Err(HttpError::Failed("response_body", chain(&e.without_url())));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if body.len().saturating_add(chunk.len()) > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        append_zeroizing(&mut body, &chunk);
    }
    Ok(HttpResponse {
        status,
        retry_after,
        // Moved, not copied.
        body: Secret::new(std::mem::take(&mut *body)),
    })
}

/// Response buffer size when no `Content-Length` is announced (token answers are a few KiB).
const INITIAL_BODY: usize = 8 * 1024;

/// Appends `data` to `buf`; when it must grow, into a new zeroizing buffer (the old one is zeroed
/// as it is dropped), so a reallocation never leaves a copy of a secret in freed memory.
fn append_zeroizing(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let needed = buf.len().saturating_add(data.len());
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            needed.max(buf.capacity().saturating_mul(2)),
        ));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("https://login.microsoftonline.com/contoso/oauth2/v2.0/token").unwrap();
        assert_eq!(host_of(&t), "login.microsoftonline.com");
        assert_eq!(t.port_or_known_default(), Some(443));
        assert_eq!(t.path(), "/contoso/oauth2/v2.0/token");
        let t = parse_url("http://127.0.0.1:8080/token?x=1").unwrap();
        assert_eq!(t.port(), Some(8080));
        assert_eq!(t.query(), Some("x=1"));
        let t = parse_url("https://[::1]:8443").unwrap();
        assert_eq!((host_of(&t).as_str(), t.port()), ("::1", Some(8443)));
        for bad in [
            "ftp://x/token",
            "/token",
            "https://user:pw@host/token",
            "https://user@host/token",
            "not a url",
            "",
        ] {
            assert!(matches!(parse_url(bad), Err(HttpError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn response_buffer_grows_without_reallocating_in_place() {
        let mut buf = Zeroizing::new(Vec::with_capacity(4));
        append_zeroizing(&mut buf, b"abc");
        let before = buf.as_ptr();
        append_zeroizing(&mut buf, b"d");
        assert_eq!(buf.as_ptr(), before, "fits: appended in place");
        append_zeroizing(&mut buf, b"efgh");
        assert_eq!(&buf[..], b"abcdefgh");
        assert!(buf.capacity() >= 8);
        let body: Secret<Vec<u8>> = Secret::new(std::mem::take(&mut *buf));
        assert_eq!(body.expose(), b"abcdefgh");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://[::1]:8080/token",
            "http://localhost/token",
            "http://LocalHost:1/token",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ] {
            assert!(check_endpoint_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://login.microsoftonline.com/t/oauth2/v2.0/token",
            "http://10.1.2.3/token",
            "http://[::ffff:127.0.0.1]/token",
            "http://localhost.example.com/token",
        ] {
            let e = check_endpoint_url(refused).unwrap_err();
            assert!(e.contains("https://"), "{refused}: {e}");
        }
    }

    #[test]
    fn proxy_urls_lose_their_credentials() {
        let (url, creds) = parse_proxy_url("http://proxy.corp:3128").unwrap();
        assert_eq!(url.as_str(), "http://proxy.corp:3128/");
        assert!(creds.is_none());
        let (url, creds) = parse_proxy_url("proxy.corp:8080").unwrap();
        assert_eq!(url.as_str(), "http://proxy.corp:8080/");
        assert!(creds.is_none());
        let (url, creds) = parse_proxy_url("http://al%40ice:p%3Aw+d@proxy:3128").unwrap();
        assert_eq!(url.as_str(), "http://proxy:3128/");
        let (user, password) = creds.unwrap();
        assert_eq!(user, "al@ice");
        assert_eq!(password.expose(), "p:w+d");
        for bad in ["socks5://proxy:1080", "http://", "ftp://proxy"] {
            assert!(parse_proxy_url(bad).is_err(), "{bad}");
        }
    }
}
