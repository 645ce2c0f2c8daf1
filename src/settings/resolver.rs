//! Expanding a job's `${VAR}`s against the environment, collecting every problem instead of stopping at
//! the first, and registering with the redactor every value that is or may be a secret: keys, values a
//! URL carries in its user info, path or query, command arguments and `env:` values taken from the
//! environment.

use crate::job::values::{EnvError, EnvString};
use crate::net::check_transport;
use crate::report::redact;

/// Everything wrong with a run's settings, one line each, so the user fixes them in one go.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct Problems {
    pub problems: Vec<String>,
}

/// Query parameters whose values are credentials by their name.
const CREDENTIAL_PARAMS: [&str; 12] = [
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "auth",
    "secret",
    "password",
    "sig",
    "signature",
    "code",
    "session",
];

/// Registers the credentials a URL carries: its user name and password, and the values of query
/// parameters named like credentials (`?api_key=…`, `&token=…`, `X-Amz-Signature=…`).
pub(super) fn register_url_credentials(url: &str) {
    let Ok(parsed) = reqwest::Url::parse(url) else { return };
    let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    if let Some(password) = parsed.password() {
        redact::register(password);
        redact::register(&decoded(password));
        redact::register(&decoded(parsed.username()));
    }
    for (name, value) in parsed.query_pairs() {
        let name = name.to_ascii_lowercase();
        if CREDENTIAL_PARAMS
            .iter()
            .any(|c| name == *c || name.ends_with(&format!("-{c}")) || name.ends_with(&format!("_{c}")))
        {
            redact::register(&value);
        }
    }
}

pub(super) struct Resolver<'a> {
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) problems: Vec<String>,
    pub(super) secret_names: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Resolver<'a> {
        Resolver { env, problems: Vec::new(), secret_names: Vec::new() }
    }

    pub(super) fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.problems.is_empty() { Ok(value) } else { Err(Problems { problems: self.problems }) }
    }

    pub(super) fn text(&mut self, s: &EnvString, what: &str) -> String {
        match s.expand(|n| (self.env)(n)) {
            Ok(v) => v,
            Err(EnvError::Unset { name, message }) => {
                let extra = message.map(|m| format!(": {m}")).unwrap_or_default();
                self.problems.push(format!("environment variable {name} is not set (needed by `{what}`){extra}"));
                String::new()
            }
            Err(e) => {
                self.problems.push(format!("`{what}`: {e}"));
                String::new()
            }
        }
    }

    /// An optional value: unset or empty after expansion means absent.
    pub(super) fn optional(&mut self, s: Option<&EnvString>, what: &str) -> Option<String> {
        s.map(|s| self.text(s, what)).filter(|v| !v.is_empty())
    }

    /// A command line: values it takes from the environment are treated as secrets (a token passed as an
    /// argument), since a failed start prints the command.
    pub(super) fn list(&mut self, items: &[EnvString], what: &str) -> Vec<String> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.register_referenced(s);
                self.text(s, &format!("{what}[{i}]"))
            })
            .collect()
    }

    /// A `${VAR}` that makes up part of a URL's path, query or user info (`https://host/${TOKEN}/v1`) is
    /// treated as a secret: such a place is where keys go.
    pub(super) fn register_url_parts(&self, s: &EnvString, url: &str) {
        let Ok(parsed) = reqwest::Url::parse(url) else { return };
        let raw = format!(
            "{}:{}{}?{}",
            parsed.username(),
            parsed.password().unwrap_or(""),
            parsed.path(),
            parsed.query().unwrap_or("")
        );
        // The parser percent-encodes what it must: a value is looked for as written and decoded.
        let decoded = percent_encoding::percent_decode_str(&raw).decode_utf8_lossy().into_owned();
        let private = format!("{raw}\n{decoded}");
        for name in s.var_names() {
            if let Some(value) = (self.env)(name).filter(|v| v != url && private.contains(v.as_str())) {
                redact::register(&value);
            }
        }
    }

    pub(super) fn register_referenced(&self, s: &EnvString) {
        for name in s.var_names() {
            if let Some(value) = (self.env)(name) {
                redact::register(&value);
            }
        }
    }

    /// A URL ohrun sends requests to, refused when they `carry_keys` over plain http to a far host. The
    /// credentials a URL holds itself (user info, a token in the query) are secrets.
    pub(super) fn url(&mut self, s: &EnvString, what: &str, allow_insecure_http: bool, carry_keys: bool) -> String {
        let url = self.text(s, what);
        register_url_credentials(&url);
        self.register_url_parts(s, &url);
        if carry_keys
            && !url.is_empty()
            && let Err(e) = check_transport(&url, allow_insecure_http, what)
        {
            self.problems.push(e);
        }
        url
    }

    /// A required secret: its value is registered with the redactor and its variables kept from children.
    pub(super) fn secret(&mut self, s: &EnvString, what: &str) -> Option<String> {
        self.secret_names.extend(s.var_names().into_iter().map(str::to_string));
        let v = self.text(s, what);
        if v.is_empty() {
            if !self.problems.iter().any(|p| p.contains(what)) {
                self.problems.push(format!("`{what}` is empty"));
            }
            return None;
        }
        redact::register(&v);
        Some(v)
    }

    /// A secret nobody needs now (the LLM key during a rehearsal): still kept secret if it is set.
    pub(super) fn secret_if_set(&mut self, s: &EnvString) -> Option<String> {
        self.secret_names.extend(s.var_names().into_iter().map(str::to_string));
        let v = s.expand(|n| (self.env)(n)).ok().filter(|v| !v.is_empty())?;
        redact::register(&v);
        Some(v)
    }

    /// An `env:` map. Values that come from the environment (`${TOKEN}`) are treated as secrets: such a
    /// map is how a job hands a token to a command or a server.
    pub(super) fn env_map(&mut self, map: &indexmap::IndexMap<String, EnvString>, what: &str) -> Vec<(String, String)> {
        map.iter()
            .map(|(k, v)| {
                self.register_referenced(v);
                (k.clone(), self.text(v, &format!("{what}.{k}")))
            })
            .collect()
    }

    /// `forward_env`: host variables copied into the sandbox, all treated as secrets.
    pub(super) fn forwarded(&mut self, names: &[String]) -> Vec<(String, String)> {
        names
            .iter()
            .filter_map(|n| {
                let v = (self.env)(n).filter(|v| !v.is_empty())?;
                redact::register(&v);
                Some((n.clone(), v))
            })
            .collect()
    }
}
