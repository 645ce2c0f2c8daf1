//! Scalar value types of the job file that are richer than a YAML scalar: human durations, decimal
//! money and references to environment variables (the only way a secret may enter a job file).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// A duration written for humans: `90s`, `5m`, `1h30m`, `250ms`, or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }

    /// A bare number is seconds; anything else is humantime's syntax (`90s`, `5m`, `1h30m`, `2 days`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("a duration cannot be empty".into());
        }
        if let Ok(secs) = t.parse::<f64>() {
            return Self::from_secs_f64(secs, t);
        }
        humantime::parse_duration(t).map(HumanDuration).map_err(|e| match e {
            humantime::DurationError::UnknownUnit { unit, .. } => format!("`{unit}` is not a duration unit"),
            humantime::DurationError::NumberExpected(_) | humantime::DurationError::InvalidCharacter(_) => {
                format!("`{t}` is not a duration")
            }
            other => format!("`{t}`: {other}"),
        })
    }

    fn from_secs_f64(secs: f64, text: &str) -> Result<Self, String> {
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("`{text}` is out of range"));
        }
        Ok(HumanDuration(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\", \"5m\" or \"1h30m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                HumanDuration::from_secs_f64(v as f64, &v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                HumanDuration::from_secs_f64(v as f64, &v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                HumanDuration::from_secs_f64(v, &v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: \"90s\", \"5m\", \"1h30m\", \"250ms\", or a number of seconds.",
            "anyOf": [
                {"type": "string", "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*(ms|s|sec|secs|m|min|mins|h|hr|hours|d|days)?\\s*)+$"},
                {"type": "number", "minimum": 0}
            ]
        })
    }
}

pub use crate::money::Usd;

/// A string that may refer to environment variables: `${NAME}`, `${NAME:-default}` (default when unset or
/// empty) and `${NAME:?message}` (an error naming the variable when unset). `$$` is a literal `$`.
/// References are resolved when a run starts, never at plan time, so secrets stay out of plans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct EnvString(pub String);

/// One piece of an [`EnvString`].
#[derive(Debug, PartialEq, Eq)]
pub enum EnvPart<'a> {
    Text(Cow<'a, str>),
    Var { name: &'a str, default: Option<&'a str>, required_message: Option<&'a str> },
}

impl EnvString {
    /// Splits into text and variable references, or explains the first malformed reference (byte offset, message).
    pub fn parts(&self) -> Result<Vec<EnvPart<'_>>, (usize, String)> {
        parse_env_parts(&self.0)
    }

    /// The variable names referenced.
    pub fn var_names(&self) -> Vec<&str> {
        self.parts()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| match p {
                EnvPart::Var { name, .. } => Some(name),
                EnvPart::Text(_) => None,
            })
            .collect()
    }

    /// True when the whole string is exactly one `${NAME…}` reference: the only form a key field accepts.
    pub fn is_single_reference(&self) -> bool {
        matches!(self.parts().as_deref(), Ok([EnvPart::Var { .. }]))
    }

    /// Expands every reference with `lookup`; `Err` names the first variable that is required but unset.
    pub fn expand(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<String, EnvError> {
        let parts = self.parts().map_err(|(_, message)| EnvError::Malformed(message))?;
        let mut out = String::new();
        for part in parts {
            match part {
                EnvPart::Text(t) => out.push_str(&t),
                EnvPart::Var { name, default, required_message } => {
                    match (lookup(name).filter(|v| !v.is_empty()), default) {
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => {
                            return Err(EnvError::Unset {
                                name: name.to_string(),
                                message: required_message.map(str::to_string),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum EnvError {
    Malformed(String),
    Unset { name: String, message: Option<String> },
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::Malformed(m) => f.write_str(m),
            EnvError::Unset { name, message: Some(m) } => write!(f, "environment variable {name} is not set: {m}"),
            EnvError::Unset { name, message: None } => write!(f, "environment variable {name} is not set"),
        }
    }
}

fn parse_env_parts(s: &str) -> Result<Vec<EnvPart<'_>>, (usize, String)> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < s.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') {
            text.push('$');
            i += 2;
        } else if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let close = s[i..].find('}').map(|c| i + c).ok_or((i, "`${` is never closed with `}`".to_string()))?;
            let inner = &s[i + 2..close];
            let (name, default, required_message) = if let Some((n, d)) = inner.split_once(":-") {
                (n, Some(d), None)
            } else if let Some((n, m)) = inner.split_once(":?") {
                (n, None, Some(m))
            } else {
                (inner, None, None)
            };
            if !is_env_name(name) {
                return Err((i, format!("`{name}` is not an environment variable name")));
            }
            if !text.is_empty() {
                parts.push(EnvPart::Text(Cow::Owned(std::mem::take(&mut text))));
            }
            parts.push(EnvPart::Var { name, default, required_message });
            i = close + 1;
        } else {
            // Up to the next `$` after this character, which may take several bytes (`${X}é`).
            let from = i + s[i..].chars().next().map_or(1, char::len_utf8);
            let next = s[from..].find('$').map_or(s.len(), |n| from + n);
            text.push_str(&s[i..next]);
            i = next;
        }
    }
    if !text.is_empty() {
        parts.push(EnvPart::Text(Cow::Owned(text)));
    }
    Ok(parts)
}

pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_next_to_multibyte_characters() {
        // Found by the fuzz driver: slicing after `}` or at the start cut a character in two.
        for s in ["${X}é", "\u{10ffff}${X}", "é$$ü${X:-ö}€"] {
            let parts = parse_env_parts(s).unwrap();
            assert!(parts.iter().any(|p| matches!(p, EnvPart::Var { name: "X", .. })), "{s}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(HumanDuration::parse("90s").unwrap(), HumanDuration::secs(90));
        assert_eq!(HumanDuration::parse("1h30m").unwrap(), HumanDuration::secs(5400));
        assert_eq!(HumanDuration::parse("250ms").unwrap().0.as_millis(), 250);
        assert_eq!(HumanDuration::parse("12").unwrap(), HumanDuration::secs(12));
        assert!(HumanDuration::parse("5 parsecs").is_err());
        assert!(HumanDuration::parse("m").is_err());
        assert!(HumanDuration::parse("5").is_ok());
        assert_eq!(HumanDuration::secs(5400).to_string(), "1h 30m");
        assert_eq!(HumanDuration::parse(&HumanDuration::secs(5400).to_string()).unwrap(), HumanDuration::secs(5400));
    }

    #[test]
    fn env_strings() {
        let s = EnvString("${A:-x}/$${B}/${C}".into());
        let out = s.expand(|n| (n == "C").then(|| "c".to_string())).unwrap();
        assert_eq!(out, "x/${B}/c");
        assert!(EnvString("${LLM_API_KEY}".into()).is_single_reference());
        assert!(!EnvString("sk-123".into()).is_single_reference());
        assert!(EnvString("${1X}".into()).parts().is_err());
        assert!(EnvString("${X".into()).parts().is_err());
        let err = EnvString("${K:?set it}".into()).expand(|_| None).unwrap_err();
        assert_eq!(err.to_string(), "environment variable K is not set: set it");
    }
}
/// A secret: only a reference to an environment variable, `${NAME}` (optionally `${NAME:-default}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = "^\\$\\{[A-Za-z_][A-Za-z0-9_]*((:-|:\\?)[^}]*)?\\}$"))]
pub struct SecretRef(pub EnvString);

/// The message is matched in `parse.rs` to redact the offending line.
pub const LITERAL_SECRET_MESSAGE: &str = "a secret must be a reference to an environment variable";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = EnvString(String::deserialize(d)?);
        if s.is_single_reference() {
            Ok(SecretRef(s))
        } else {
            // Never echo the value: it may be a real key.
            Err(de::Error::custom(LITERAL_SECRET_MESSAGE))
        }
    }
}

/// Five minutes, the default of several limits (serde's `default = "…"` needs a function).
pub(crate) fn d300() -> HumanDuration {
    HumanDuration::secs(300)
}

/// For `skip_serializing_if`: a flag left at its default is not written.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
