//! The `laminate-proxy run` settings (APPLIANCE.md, "Command line"): validating what
//! the command line and environment gave, deriving the backend endpoints
//! (PROTOCOL.md §1 and §5), and keeping the proxy key out of every printed text.
//!
//! Parsing flags and environment variables is the binary's job (clap); it fills a
//! [`RawSettings`] and calls [`validate_settings`], which reports every problem at
//! once, each naming the flag and its environment variable and saying how to fix it.

use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use url::Url;

use crate::ae_title::check_ae_title;
use crate::error::ConfigError;

/// Default `--http-addr`: loopback only, so operator actions need no token out of the box.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default `--ae-title`.
pub const DEFAULT_AE_TITLE: &str = "LAMINATE_PROXY";
/// Default `--dicom-addr`: the ingest SCP on the standard non-privileged DICOM port.
pub const DEFAULT_DICOM_ADDR: &str = "0.0.0.0:11112";
/// Default `--log-format`.
pub const DEFAULT_LOG_FORMAT: &str = "text";
/// The `--dicom-addr` value that disables the ingest SCP.
pub const DICOM_ADDR_OFF: &str = "off";
/// Directory under `$HOME` used when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR_NAME: &str = ".laminate-proxy";

/// `--backend-url`
pub const SETTING_BACKEND_URL: &str = "--backend-url (LAMINATE_BACKEND_URL)";
/// `--api-url`
pub const SETTING_API_URL: &str = "--api-url (LAMINATE_API_URL)";
/// `--proxy-key`
pub const SETTING_PROXY_KEY: &str = "--proxy-key (LAMINATE_PROXY_KEY)";
/// `--data-dir`
pub const SETTING_DATA_DIR: &str = "--data-dir (LAMINATE_PROXY_DATA_DIR)";
/// `--http-addr`
pub const SETTING_HTTP_ADDR: &str = "--http-addr (LAMINATE_PROXY_HTTP_ADDR)";
/// `--status-token`
pub const SETTING_STATUS_TOKEN: &str = "--status-token (LAMINATE_PROXY_STATUS_TOKEN)";
/// `--ae-title`
pub const SETTING_AE_TITLE: &str = "--ae-title (LAMINATE_PROXY_AE_TITLE)";
/// `--dicom-addr`
pub const SETTING_DICOM_ADDR: &str = "--dicom-addr (LAMINATE_PROXY_DICOM_ADDR)";
/// `--ca-file`
pub const SETTING_CA_FILE: &str = "--ca-file (LAMINATE_PROXY_CA_FILE)";
/// `--log-format`
pub const SETTING_LOG_FORMAT: &str = "--log-format (LAMINATE_PROXY_LOG_FORMAT)";

/// Keys at least this long show their last 4 characters when redacted; shorter
/// ones show nothing, since 4 characters would be too large a share of the secret.
const MIN_KEY_LEN_TO_SHOW_TAIL: usize = 12;
/// Characters of the key shown at the end of the redacted form.
const SHOWN_KEY_TAIL: usize = 4;

/// The settings as given (flag or environment, with clap's defaults applied).
/// `Debug` redacts the proxy key.
#[derive(Clone, PartialEq, Eq)]
pub struct RawSettings {
    /// `--backend-url`.
    pub backend_url: Option<String>,
    /// `--api-url`.
    pub api_url: Option<String>,
    /// `--proxy-key` (secret).
    pub proxy_key: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--http-addr`.
    pub http_addr: String,
    /// `--status-token`.
    pub status_token: Option<String>,
    /// `--ae-title`.
    pub ae_title: String,
    /// `--dicom-addr`.
    pub dicom_addr: String,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: String,
}

impl Default for RawSettings {
    /// Nothing given: the documented defaults, no URL and no key.
    fn default() -> Self {
        Self {
            backend_url: None,
            api_url: None,
            proxy_key: None,
            data_dir: None,
            http_addr: DEFAULT_HTTP_ADDR.to_owned(),
            status_token: None,
            ae_title: DEFAULT_AE_TITLE.to_owned(),
            dicom_addr: DEFAULT_DICOM_ADDR.to_owned(),
            ca_file: None,
            log_format: DEFAULT_LOG_FORMAT.to_owned(),
        }
    }
}

impl fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSettings")
            .field("backend_url", &self.backend_url)
            .field("api_url", &self.api_url)
            .field("proxy_key", &self.proxy_key.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("http_addr", &self.http_addr)
            .field(
                "status_token",
                &self.status_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ae_title", &self.ae_title)
            .field("dicom_addr", &self.dicom_addr)
            .field("ca_file", &self.ca_file)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The proxy key. Never printed: `Debug` and `Display` show only `pk_…` and, for
/// keys of 12 characters or more, the last 4 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyKey(String);

/// Why a string cannot be a proxy key (the text never contains the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProxyKey {
    /// The key is empty.
    #[error("is empty")]
    Empty,
    /// The key holds whitespace or control characters (typically a pasted newline).
    #[error("contains whitespace or control characters")]
    Whitespace,
}

impl ProxyKey {
    /// A key: non-empty, without whitespace or control characters.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidProxyKey> {
        let key = key.into();
        if key.is_empty() {
            return Err(InvalidProxyKey::Empty);
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidProxyKey::Whitespace);
        }
        Ok(Self(key))
    }

    /// The key itself, for the one place that sends it (the WebSocket URL and the
    /// `X-Proxy-Key` header). Never log or display the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The printable form: `pk_…` plus the last 4 characters of keys of at least
    /// 12 characters.
    pub fn redacted(&self) -> String {
        let n = self.0.chars().count();
        if n < MIN_KEY_LEN_TO_SHOW_TAIL {
            return "pk_…".to_owned();
        }
        let tail: String = self.0.chars().skip(n - SHOWN_KEY_TAIL).collect();
        format!("pk_…{tail}")
    }
}

impl fmt::Debug for ProxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyKey({})", self.redacted())
    }
}

impl fmt::Display for ProxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Validated settings of `laminate-proxy run`. `Debug` redacts the key (also in
/// `ws_url`) and the status token.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// The backend base URL (`ws`/`wss`, no query), as given.
    pub backend_url: Url,
    /// `{backend_url}/proxy/ws?proxy_key=KEY`. Contains the key: never log it.
    pub ws_url: Url,
    /// Base of the download API (`http`/`https`, path without trailing slash);
    /// join with [`api_endpoint`] or [`api_endpoint_segments`].
    pub api_url: Url,
    /// The proxy key.
    pub proxy_key: ProxyKey,
    /// The data dir.
    pub data_dir: PathBuf,
    /// Status page / local API address.
    pub http_addr: SocketAddr,
    /// Bearer token for operator actions, if any (an empty value counts as none).
    pub status_token: Option<String>,
    /// This appliance's AE title.
    pub ae_title: String,
    /// The ingest SCP address; `None` when `off`.
    pub dicom_addr: Option<SocketAddr>,
    /// Extra PEM roots for wss/https.
    pub ca_file: Option<PathBuf>,
    /// Log output format.
    pub log_format: LogFormat,
}

impl Settings {
    /// The WebSocket URL safe to print: the key in the query replaced by its
    /// redacted form, e.g. `wss://h/proxy/ws?proxy_key=pk_…1234`.
    pub fn ws_url_redacted(&self) -> String {
        // `ws_endpoint` ends the URL with the (here empty) key value: append the
        // redacted form unencoded so that it reads as it does everywhere else.
        format!(
            "{}{}",
            ws_endpoint(&self.backend_url, ""),
            self.proxy_key.redacted()
        )
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("backend_url", &self.backend_url.as_str())
            .field("ws_url", &self.ws_url_redacted())
            .field("api_url", &self.api_url.as_str())
            .field("proxy_key", &self.proxy_key)
            .field("data_dir", &self.data_dir)
            .field("http_addr", &self.http_addr)
            .field(
                "status_token",
                &self.status_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ae_title", &self.ae_title)
            .field("dicom_addr", &self.dicom_addr)
            .field("ca_file", &self.ca_file)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// One bad setting. Displays as one line: `<setting>: <problem>; <fix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The flag and its environment variable, e.g. `--backend-url (LAMINATE_BACKEND_URL)`.
    pub setting: &'static str,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.setting, self.problem, self.fix)
    }
}

/// Collects problems while validating.
struct Problems(Vec<SettingProblem>);

impl Problems {
    fn push(&mut self, setting: &'static str, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(SettingProblem {
            setting,
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

/// Validates the settings, reporting every problem at once (the proxy key never
/// appears in a problem). `data_dir` defaults to `$HOME/.laminate-proxy`.
pub fn validate_settings(raw: RawSettings) -> Result<Settings, Vec<SettingProblem>> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    validate_with_home(raw, home.as_deref())
}

/// [`validate_settings`] with `$HOME` given, so tests need not touch the environment.
fn validate_with_home(
    raw: RawSettings,
    home: Option<&Path>,
) -> Result<Settings, Vec<SettingProblem>> {
    let mut p = Problems(Vec::new());

    let backend_url = check_backend_url(raw.backend_url.as_deref(), &mut p);
    let api_url = match (&raw.api_url, &backend_url) {
        (Some(given), _) => check_api_url(given, &mut p),
        (None, Some(b)) => Some(derive_api_url(b)),
        // No backend url: already reported; nothing to derive from.
        (None, None) => None,
    };
    let proxy_key = match raw.proxy_key {
        None => {
            p.push(
                SETTING_PROXY_KEY,
                "is required",
                "set --proxy-key or LAMINATE_PROXY_KEY to the key shown for this proxy in Laminate",
            );
            None
        }
        Some(k) => match ProxyKey::new(k) {
            Ok(k) => Some(k),
            Err(e) => {
                p.push(
                    SETTING_PROXY_KEY,
                    e.to_string(),
                    "copy the key again from Laminate, without spaces or line breaks",
                );
                None
            }
        },
    };
    let data_dir = match raw.data_dir {
        Some(d) if d.as_os_str().is_empty() => {
            p.push(
                SETTING_DATA_DIR,
                "is empty",
                "give a directory path, or leave it unset for ~/.laminate-proxy",
            );
            None
        }
        Some(d) => Some(d),
        None => match home.filter(|h| !h.as_os_str().is_empty()) {
            Some(h) => Some(h.join(DEFAULT_DATA_DIR_NAME)),
            None => {
                p.push(
                    SETTING_DATA_DIR,
                    "is not set and HOME is not set to derive ~/.laminate-proxy",
                    "set --data-dir or LAMINATE_PROXY_DATA_DIR",
                );
                None
            }
        },
    };
    let http_addr = match raw.http_addr.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(
                SETTING_HTTP_ADDR,
                format!("{:?} is not an IP address and port", raw.http_addr),
                format!("use e.g. {DEFAULT_HTTP_ADDR} or 0.0.0.0:8080"),
            );
            None
        }
    };
    let status_token = match raw.status_token {
        Some(t) if t.is_empty() => None,
        Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            p.push(
                SETTING_STATUS_TOKEN,
                "contains whitespace or control characters",
                "use a token of visible characters only (it is sent in an HTTP header)",
            );
            None
        }
        other => other,
    };
    if let Err(m) = check_ae_title(&raw.ae_title) {
        p.push(
            SETTING_AE_TITLE,
            format!("{:?} {m}", raw.ae_title),
            "use 1-16 printable ASCII characters without backslash, e.g. LAMINATE_PROXY",
        );
    }
    let dicom_addr = if raw.dicom_addr.trim().eq_ignore_ascii_case(DICOM_ADDR_OFF) {
        Some(None)
    } else {
        match raw.dicom_addr.trim().parse::<SocketAddr>() {
            Ok(a) => Some(Some(a)),
            Err(_) => {
                p.push(
                    SETTING_DICOM_ADDR,
                    format!("{:?} is not an IP address and port", raw.dicom_addr),
                    format!("use e.g. {DEFAULT_DICOM_ADDR}, or \"off\" to disable DICOM ingest"),
                );
                None
            }
        }
    };
    if let Some(ca) = &raw.ca_file {
        if let Err(problem) = check_readable_file(ca) {
            p.push(
                SETTING_CA_FILE,
                format!("{}: {problem}", ca.display()),
                "give a readable PEM file, or leave it unset to use the system roots only",
            );
        }
    }
    let log_format = match raw.log_format.trim().to_ascii_lowercase().as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => {
            p.push(
                SETTING_LOG_FORMAT,
                format!("{:?} is not a log format", raw.log_format),
                "use text or json",
            );
            None
        }
    };

    // Belt and braces: a key pasted into another setting (say, the backend URL's
    // query) must not be echoed back either.
    let mut problems = p.0;
    if let Some(k) = &proxy_key {
        for sp in &mut problems {
            sp.problem = sp.problem.replace(k.expose(), &k.redacted());
            sp.fix = sp.fix.replace(k.expose(), &k.redacted());
        }
    }

    match (
        backend_url,
        api_url,
        proxy_key,
        data_dir,
        http_addr,
        dicom_addr,
        log_format,
    ) {
        (
            Some(backend_url),
            Some(api_url),
            Some(proxy_key),
            Some(data_dir),
            Some(http_addr),
            Some(dicom_addr),
            Some(log_format),
        ) if problems.is_empty() => Ok(Settings {
            ws_url: ws_endpoint(&backend_url, proxy_key.expose()),
            backend_url,
            api_url,
            proxy_key,
            data_dir,
            http_addr,
            status_token,
            ae_title: raw.ae_title,
            dicom_addr,
            ca_file: raw.ca_file,
            log_format,
        }),
        _ => Err(problems),
    }
}

/// The backend URL: required, `ws`/`wss`, with a host, without query or fragment
/// (the key goes in `--proxy-key`, not in the URL).
fn check_backend_url(given: Option<&str>, p: &mut Problems) -> Option<Url> {
    const FIX: &str = "set it to the backend's WebSocket base URL, e.g. wss://laminate.example/";
    let Some(given) = given.map(str::trim) else {
        p.push(
            SETTING_BACKEND_URL,
            "is required",
            format!("set --backend-url or LAMINATE_BACKEND_URL; {FIX}"),
        );
        return None;
    };
    // The parse error text never includes the input, so a key pasted into the URL
    // is not echoed.
    let url = match Url::parse(given) {
        Ok(u) => u,
        Err(e) => {
            p.push(
                SETTING_BACKEND_URL,
                format!("is not a valid URL ({e})"),
                FIX,
            );
            return None;
        }
    };
    let mut ok = true;
    if !matches!(url.scheme(), "ws" | "wss") {
        p.push(
            SETTING_BACKEND_URL,
            format!("has scheme {:?}, expected ws or wss", url.scheme()),
            FIX,
        );
        ok = false;
    }
    if url.host_str().is_none_or(str::is_empty) {
        p.push(SETTING_BACKEND_URL, "has no host", FIX);
        ok = false;
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.push(
            SETTING_BACKEND_URL,
            "must not have a query (?…) or fragment (#…)",
            "remove it; the proxy key is given with --proxy-key (LAMINATE_PROXY_KEY)",
        );
        ok = false;
    }
    ok.then_some(url)
}

/// An explicit API URL: `http`/`https`, with a host, without query or fragment.
fn check_api_url(given: &str, p: &mut Problems) -> Option<Url> {
    const FIX: &str =
        "set it to the backend's HTTP base URL (e.g. https://laminate.example/), or leave it unset to derive it from --backend-url";
    let url = match Url::parse(given.trim()) {
        Ok(u) => u,
        Err(e) => {
            p.push(SETTING_API_URL, format!("is not a valid URL ({e})"), FIX);
            return None;
        }
    };
    let mut ok = true;
    if !matches!(url.scheme(), "http" | "https") {
        p.push(
            SETTING_API_URL,
            format!("has scheme {:?}, expected http or https", url.scheme()),
            FIX,
        );
        ok = false;
    }
    if url.host_str().is_none_or(str::is_empty) {
        p.push(SETTING_API_URL, "has no host", FIX);
        ok = false;
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.push(
            SETTING_API_URL,
            "must not have a query (?…) or fragment (#…)",
            FIX,
        );
        ok = false;
    }
    ok.then(|| without_trailing_slash(url))
}

/// Why `path` cannot be read as a file, if it cannot.
fn check_readable_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    File::open(path).map(drop).map_err(|e| e.to_string())
}

/// The URL with a trailing `/` removed from a non-root path (`/laminate/` →
/// `/laminate`; `/` stays, as an http URL always has a path).
fn without_trailing_slash(mut url: Url) -> Url {
    let path = url.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/').to_owned();
        let trimmed = if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed
        };
        url.set_path(&trimmed);
    }
    url
}

/// The default API URL from the backend URL (PROTOCOL.md §5): `ws`→`http`,
/// `wss`→`https`, host, port and path prefix kept, no trailing slash on the prefix,
/// no query or fragment: `wss://h/laminate/` → `https://h/laminate`.
/// Join endpoints with [`api_endpoint`]. A URL of another scheme keeps its scheme.
pub fn derive_api_url(backend: &Url) -> Url {
    let mut url = backend.clone();
    let scheme = match backend.scheme() {
        "ws" => Some("http"),
        "wss" => Some("https"),
        _ => None,
    };
    if let Some(s) = scheme {
        // ws/wss and http/https are all "special" schemes, between which the url
        // crate allows switching; a refusal would leave the scheme as it was.
        let _ = url.set_scheme(s);
    }
    url.set_query(None);
    url.set_fragment(None);
    without_trailing_slash(url)
}

/// `{backend}/proxy/ws?proxy_key={key}` (PROTOCOL.md §1): the path prefix is kept,
/// a trailing slash is not doubled, any query or fragment of `backend` is replaced.
/// The key is percent-encoded as a query value. The result holds the key: never log it.
pub fn ws_endpoint(backend: &Url, key: &str) -> Url {
    let mut url = backend.clone();
    url.set_fragment(None);
    // Only URLs without a host ("cannot-be-a-base", e.g. `mailto:`) refuse path
    // segments; validated ws/wss URLs always have one.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(["proxy", "ws"]);
    }
    url.query_pairs_mut().clear().append_pair("proxy_key", key);
    url
}

/// `{api}/{tail}` for a constant `tail` such as `"api/proxy/subjects"`: `tail` is
/// split at `/`, empty pieces are skipped, and the pieces are appended to `api`'s
/// path (whose trailing slash, if any, is not doubled). For ids coming from events
/// use [`api_endpoint_segments`], which escapes `/` inside a segment.
pub fn api_endpoint(api: &Url, tail: &str) -> Url {
    let mut url = api.clone();
    url.set_query(None);
    url.set_fragment(None);
    // See `ws_endpoint`: http/https URLs always accept path segments.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(tail.split('/').filter(|s| !s.is_empty()));
    }
    url
}

/// `{api}/{s1}/{s2}/…` with each segment percent-encoded on its own (a `/`, `?`, `#`
/// or `%` inside a segment is escaped), e.g.
/// `["api", "proxy", "sessions", id, "download"]`. A segment that is empty, `.` or
/// `..` would silently change the path, so it is refused with
/// [`ConfigError::BadPayload`] (the id came from an event).
pub fn api_endpoint_segments(api: &Url, segments: &[&str]) -> Result<Url, ConfigError> {
    if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
        return Err(ConfigError::BadPayload(format!(
            "{bad:?} cannot be a URL path segment"
        )));
    }
    let mut url = api.clone();
    url.set_query(None);
    url.set_fragment(None);
    match url.path_segments_mut() {
        Ok(mut s) => {
            s.pop_if_empty().extend(segments);
        }
        Err(()) => {
            return Err(ConfigError::BadPayload(format!(
                "{api} cannot have path segments"
            )))
        }
    }
    Ok(url)
}

/// True when `addr` is a loopback address (`127.0.0.0/8`, `::1`, or `::ffff:127.x`):
/// only the local machine can reach a server bound there.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "pk_live_secretsecret1234";

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn raw() -> RawSettings {
        RawSettings {
            backend_url: Some("wss://laminate.example/".into()),
            proxy_key: Some(KEY.into()),
            ..RawSettings::default()
        }
    }

    fn home() -> Option<&'static Path> {
        Some(Path::new("/home/op"))
    }

    fn problems(raw: RawSettings) -> Vec<SettingProblem> {
        validate_with_home(raw, home()).unwrap_err()
    }

    fn settings_named(ps: &[SettingProblem]) -> Vec<&'static str> {
        ps.iter().map(|p| p.setting).collect()
    }

    #[test]
    fn ws_endpoint_examples_from_the_spec() {
        for (backend, expected) in [
            ("wss://h/", "wss://h/proxy/ws?proxy_key=k"),
            ("wss://h", "wss://h/proxy/ws?proxy_key=k"),
            ("wss://h/laminate", "wss://h/laminate/proxy/ws?proxy_key=k"),
            ("wss://h/laminate/", "wss://h/laminate/proxy/ws?proxy_key=k"),
            (
                "ws://localhost:8000",
                "ws://localhost:8000/proxy/ws?proxy_key=k",
            ),
            ("ws://h/a/b/", "ws://h/a/b/proxy/ws?proxy_key=k"),
        ] {
            assert_eq!(
                ws_endpoint(&url(backend), "k").as_str(),
                expected,
                "{backend}"
            );
        }
    }

    #[test]
    fn ws_endpoint_encodes_the_key() {
        let u = ws_endpoint(&url("wss://h/"), "a&b=c+d");
        assert_eq!(u.as_str(), "wss://h/proxy/ws?proxy_key=a%26b%3Dc%2Bd");
        let (k, v) = u.query_pairs().next().unwrap();
        assert_eq!((k.as_ref(), v.as_ref()), ("proxy_key", "a&b=c+d"));
    }

    #[test]
    fn derive_api_url_examples() {
        for (backend, expected) in [
            ("wss://h/", "https://h/"),
            ("wss://h/laminate", "https://h/laminate"),
            ("wss://h/laminate/", "https://h/laminate"),
            ("ws://localhost:8000/", "http://localhost:8000/"),
            ("wss://h:8443/x/y/", "https://h:8443/x/y"),
            ("ws://h:80/", "http://h/"),
        ] {
            assert_eq!(
                derive_api_url(&url(backend)).as_str(),
                expected,
                "{backend}"
            );
        }
    }

    #[test]
    fn api_endpoint_joins_without_doubling() {
        let tail = "api/proxy/sessions/s1/download";
        for (api, expected) in [
            ("https://h/", "https://h/api/proxy/sessions/s1/download"),
            (
                "https://h/laminate",
                "https://h/laminate/api/proxy/sessions/s1/download",
            ),
            (
                "https://h/laminate/",
                "https://h/laminate/api/proxy/sessions/s1/download",
            ),
        ] {
            assert_eq!(api_endpoint(&url(api), tail).as_str(), expected, "{api}");
            assert_eq!(
                api_endpoint(&url(api), &format!("/{tail}")).as_str(),
                expected
            );
        }
        // The spec's example end to end: wss://h/laminate → https://h/laminate/api/proxy/…
        let api = derive_api_url(&url("wss://h/laminate"));
        assert_eq!(
            api_endpoint(&api, "api/proxy/scans/sc1/download").as_str(),
            "https://h/laminate/api/proxy/scans/sc1/download"
        );
    }

    #[test]
    fn api_endpoint_segments_escapes_each_segment() {
        let api = url("https://h/laminate");
        let u = api_endpoint_segments(
            &api,
            &["api", "proxy", "sessions", "a/b?c#d%e f", "download"],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://h/laminate/api/proxy/sessions/a%2Fb%3Fc%23d%25e%20f/download"
        );
        for bad in ["", ".", ".."] {
            let err = api_endpoint_segments(&api, &["api", bad]).unwrap_err();
            assert!(matches!(err, ConfigError::BadPayload(_)), "{bad:?}");
        }
    }

    #[test]
    fn valid_settings_with_defaults() {
        let s = validate_with_home(raw(), home()).unwrap();
        assert_eq!(s.backend_url.as_str(), "wss://laminate.example/");
        assert_eq!(
            s.ws_url.as_str(),
            format!("wss://laminate.example/proxy/ws?proxy_key={KEY}")
        );
        assert_eq!(s.api_url.as_str(), "https://laminate.example/");
        assert_eq!(s.proxy_key.expose(), KEY);
        assert_eq!(s.data_dir, PathBuf::from("/home/op/.laminate-proxy"));
        assert_eq!(s.http_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.status_token, None);
        assert_eq!(s.ae_title, "LAMINATE_PROXY");
        assert_eq!(s.dicom_addr, Some("0.0.0.0:11112".parse().unwrap()));
        assert_eq!(s.ca_file, None);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(
            s.ws_url_redacted(),
            "wss://laminate.example/proxy/ws?proxy_key=pk_…1234"
        );
        let debug = format!("{s:?}");
        assert!(!debug.contains("secretsecret"), "{debug}");
        assert!(debug.contains("pk_…1234"), "{debug}");
        let debug = format!("{:?}", raw());
        assert!(!debug.contains("secretsecret"), "{debug}");
    }

    #[test]
    fn explicit_values() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let s = validate_with_home(
            RawSettings {
                backend_url: Some("ws://localhost:8000/laminate/".into()),
                api_url: Some("http://api.local:9000/base/".into()),
                data_dir: Some("/data".into()),
                http_addr: "0.0.0.0:8080".into(),
                status_token: Some("tok".into()),
                ae_title: "EDGE".into(),
                dicom_addr: "OFF".into(),
                ca_file: Some(ca.path().to_path_buf()),
                log_format: "json".into(),
                ..raw()
            },
            None,
        )
        .unwrap();
        assert_eq!(s.api_url.as_str(), "http://api.local:9000/base");
        assert_eq!(
            s.ws_url.as_str(),
            format!("ws://localhost:8000/laminate/proxy/ws?proxy_key={KEY}")
        );
        assert_eq!(s.data_dir, PathBuf::from("/data"));
        assert_eq!(s.status_token.as_deref(), Some("tok"));
        assert_eq!(s.dicom_addr, None);
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(!is_loopback(&s.http_addr));
    }

    #[test]
    fn every_problem_at_once() {
        let ps = validate_with_home(
            RawSettings {
                backend_url: Some("https://h/".into()),
                api_url: Some("ftp://h/".into()),
                proxy_key: Some("has space".into()),
                data_dir: None,
                http_addr: "localhost".into(),
                status_token: Some("a b".into()),
                ae_title: "THIS_TITLE_IS_TOO_LONG".into(),
                dicom_addr: "11112".into(),
                ca_file: Some("/nonexistent/ca.pem".into()),
                log_format: "xml".into(),
            },
            None,
        )
        .unwrap_err();
        assert_eq!(
            settings_named(&ps),
            [
                SETTING_BACKEND_URL,
                SETTING_API_URL,
                SETTING_PROXY_KEY,
                SETTING_DATA_DIR,
                SETTING_HTTP_ADDR,
                SETTING_STATUS_TOKEN,
                SETTING_AE_TITLE,
                SETTING_DICOM_ADDR,
                SETTING_CA_FILE,
                SETTING_LOG_FORMAT,
            ]
        );
        for p in &ps {
            let line = p.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(line.starts_with(p.setting), "{line}");
            assert!(!line.contains("has space"), "key leaked: {line}");
        }
    }

    #[test]
    fn missing_required_settings() {
        let ps = problems(RawSettings::default());
        assert_eq!(
            settings_named(&ps),
            [SETTING_BACKEND_URL, SETTING_PROXY_KEY]
        );
        assert!(ps[0].problem.contains("required"));
        let ps = problems(RawSettings {
            proxy_key: Some(String::new()),
            ..raw()
        });
        assert_eq!(settings_named(&ps), [SETTING_PROXY_KEY]);
    }

    #[test]
    fn backend_url_rules() {
        for bad in [
            "laminate.example",
            "http://h/",
            "wss://",
            "wss://h/?x=1",
            "wss://h/#f",
            "not a url",
        ] {
            let ps = problems(RawSettings {
                backend_url: Some(bad.into()),
                ..raw()
            });
            assert!(
                !ps.is_empty() && ps.iter().all(|p| p.setting == SETTING_BACKEND_URL),
                "{bad}: {ps:?}"
            );
        }
    }

    #[test]
    fn api_url_rules() {
        for bad in ["wss://h/", "h", "https://h/?q", "file:///x"] {
            let ps = problems(RawSettings {
                api_url: Some(bad.into()),
                ..raw()
            });
            assert!(
                !ps.is_empty() && ps.iter().all(|p| p.setting == SETTING_API_URL),
                "{bad}: {ps:?}"
            );
        }
    }

    #[test]
    fn proxy_key_never_appears_in_problems() {
        let ps = problems(RawSettings {
            backend_url: Some(format!("wss://h/?proxy_key={KEY}")),
            api_url: Some(format!("ftp://{KEY}/")),
            ae_title: KEY.into(),
            http_addr: KEY.into(),
            ..raw()
        });
        assert_eq!(ps.len(), 4, "{ps:?}");
        for p in &ps {
            assert!(!p.to_string().contains(KEY), "key leaked: {p}");
            assert!(!p.to_string().contains("secretsecret"), "key leaked: {p}");
        }
        for key in ["bad key\n", "tab\tkey"] {
            let ps = problems(RawSettings {
                proxy_key: Some(key.into()),
                ..raw()
            });
            assert!(
                ps.iter().all(|p| !p.to_string().contains(key.trim())),
                "{ps:?}"
            );
        }
    }

    #[test]
    fn proxy_key_redaction() {
        let k = ProxyKey::new("pk_live_abcdefgh1234").unwrap();
        assert_eq!(k.to_string(), "pk_…1234");
        assert_eq!(format!("{k:?}"), "ProxyKey(pk_…1234)");
        assert_eq!(k.expose(), "pk_live_abcdefgh1234");
        let short = ProxyKey::new("pk_test123").unwrap();
        assert_eq!(short.to_string(), "pk_…");
        assert!(!format!("{short:?}").contains("test"));
        assert_eq!(ProxyKey::new(""), Err(InvalidProxyKey::Empty));
        assert_eq!(ProxyKey::new("a b"), Err(InvalidProxyKey::Whitespace));
        assert_eq!(ProxyKey::new("ab\u{7}"), Err(InvalidProxyKey::Whitespace));
    }

    #[test]
    fn data_dir_rules() {
        let ps = validate_with_home(raw(), None).unwrap_err();
        assert_eq!(settings_named(&ps), [SETTING_DATA_DIR]);
        let ps = validate_with_home(raw(), Some(Path::new(""))).unwrap_err();
        assert_eq!(settings_named(&ps), [SETTING_DATA_DIR]);
        let ps = problems(RawSettings {
            data_dir: Some(PathBuf::new()),
            ..raw()
        });
        assert_eq!(settings_named(&ps), [SETTING_DATA_DIR]);
        let s = validate_with_home(
            RawSettings {
                data_dir: Some("rel/dir".into()),
                ..raw()
            },
            None,
        )
        .unwrap();
        assert_eq!(s.data_dir, PathBuf::from("rel/dir"));
    }

    #[test]
    fn addresses_ae_title_log_format_status_token() {
        let ok = |r: RawSettings| validate_with_home(r, home()).is_ok();
        assert!(ok(RawSettings {
            http_addr: "[::1]:8080".into(),
            ..raw()
        }));
        assert!(!ok(RawSettings {
            http_addr: "127.0.0.1".into(),
            ..raw()
        }));
        assert!(!ok(RawSettings {
            http_addr: "127.0.0.1:99999".into(),
            ..raw()
        }));
        assert!(ok(RawSettings {
            dicom_addr: "off".into(),
            ..raw()
        }));
        assert!(ok(RawSettings {
            dicom_addr: "[::]:104".into(),
            ..raw()
        }));
        assert!(!ok(RawSettings {
            dicom_addr: "".into(),
            ..raw()
        }));
        assert!(!ok(RawSettings {
            ae_title: "".into(),
            ..raw()
        }));
        assert!(!ok(RawSettings {
            ae_title: "    ".into(),
            ..raw()
        }));
        assert!(!ok(RawSettings {
            ae_title: "A\\B".into(),
            ..raw()
        }));
        assert!(ok(RawSettings {
            ae_title: "0123456789ABCDEF".into(),
            ..raw()
        }));
        assert!(ok(RawSettings {
            log_format: "JSON".into(),
            ..raw()
        }));
        assert!(!ok(RawSettings {
            log_format: "pretty".into(),
            ..raw()
        }));
        let s = validate_with_home(
            RawSettings {
                status_token: Some(String::new()),
                ..raw()
            },
            home(),
        )
        .unwrap();
        assert_eq!(s.status_token, None);
    }

    #[test]
    fn ca_file_must_be_a_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let ps = problems(RawSettings {
            ca_file: Some(dir.path().to_path_buf()),
            ..raw()
        });
        assert_eq!(settings_named(&ps), [SETTING_CA_FILE]);
        assert!(ps[0].problem.contains("not a regular file"), "{ps:?}");
        let ps = problems(RawSettings {
            ca_file: Some(dir.path().join("missing.pem")),
            ..raw()
        });
        assert_eq!(settings_named(&ps), [SETTING_CA_FILE]);
        assert!(ps[0].problem.contains("missing.pem"));
    }

    #[test]
    fn display_is_one_line() {
        let p = SettingProblem {
            setting: SETTING_BACKEND_URL,
            problem: "is required".into(),
            fix: "set it".into(),
        };
        assert_eq!(
            p.to_string(),
            "--backend-url (LAMINATE_BACKEND_URL): is required; set it"
        );
    }

    #[test]
    fn loopback() {
        for (a, expected) in [
            ("127.0.0.1:8080", true),
            ("127.1.2.3:1", true),
            ("[::1]:8080", true),
            ("[::ffff:127.0.0.1]:8080", true),
            ("0.0.0.0:8080", false),
            ("[::]:8080", false),
            ("10.0.0.1:8080", false),
        ] {
            assert_eq!(is_loopback(&a.parse().unwrap()), expected, "{a}");
        }
    }
}
