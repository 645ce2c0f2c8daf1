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

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("a duration cannot be empty".into());
        }
        if let Ok(secs) = t.parse::<f64>() {
            return Self::from_secs_f64(secs, t);
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("`{t}` is not a duration"));
            }
            let number: f64 = rest[..digits].parse().map_err(|_| format!("`{t}` is not a duration"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let unit = rest[..unit_len].trim();
            rest = &rest[unit_len..];
            let factor = match unit {
                "ms" => 0.001,
                "s" | "sec" | "secs" => 1.0,
                "m" | "min" | "mins" => 60.0,
                "h" | "hr" | "hours" => 3600.0,
                "d" | "days" => 86400.0,
                "" => return Err(format!("`{t}` needs a unit after {number}")),
                other => return Err(format!("`{other}` is not a duration unit")),
            };
            total += Self::from_secs_f64(number * factor, t)?.0;
        }
        Ok(HumanDuration(total))
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
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = self.0.as_secs();
        match s {
            0 => write!(f, "0s"),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
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

/// An amount of US dollars, kept exactly as nano-dollars so that `0.1 + 0.2` is `0.3` and a per-token price
/// of `0.000003` loses nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Usd {
    pub nanos: u64,
}

impl Usd {
    const SCALE: u64 = 1_000_000_000;

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().trim_start_matches('$').trim();
        let bad = || format!("`{text}` is not an amount of dollars (write it like 2.50)");
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        if frac.len() > 9 {
            return Err(format!("`{text}` has more than 9 decimal places"));
        }
        let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let frac_nanos: u64 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(Self::SCALE)
            .and_then(|w| w.checked_add(frac_nanos))
            .map(|nanos| Usd { nanos })
            .ok_or_else(|| format!("`{text}` is too large"))
    }

    pub fn as_f64(self) -> f64 {
        self.nanos as f64 / Self::SCALE as f64
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.nanos / Self::SCALE;
        let frac = format!("{:09}", self.nanos % Self::SCALE);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() { write!(f, "{whole}") } else { write!(f, "{whole}.{frac}") }
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an amount of dollars such as 2.50")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Usd::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Usd::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // Shortest round-trip form, so 0.000003 stays 0.000003.
                Usd::parse(&format!("{v}")).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Usd::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Usd {
    fn schema_name() -> Cow<'static, str> {
        "Usd".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "US dollars, exact to 9 decimal places: 2.5, \"0.000003\", \"$10\".",
            "anyOf": [
                {"type": "string", "pattern": "^\\s*\\$?\\s*([0-9]+(\\.[0-9]{0,9})?|\\.[0-9]{1,9})\\s*$"},
                {"type": "number", "minimum": 0}
            ]
        })
    }
}

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
            let next = s[i + 1..].find('$').map(|n| i + 1 + n).unwrap_or(s.len());
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
    fn durations() {
        assert_eq!(HumanDuration::parse("90s").unwrap(), HumanDuration::secs(90));
        assert_eq!(HumanDuration::parse("1h30m").unwrap(), HumanDuration::secs(5400));
        assert_eq!(HumanDuration::parse("250ms").unwrap().0.as_millis(), 250);
        assert_eq!(HumanDuration::parse("12").unwrap(), HumanDuration::secs(12));
        assert!(HumanDuration::parse("5 parsecs").is_err());
        assert!(HumanDuration::parse("m").is_err());
        assert!(HumanDuration::parse("5").is_ok());
        assert_eq!(HumanDuration::secs(5400).to_string(), "90m");
    }

    #[test]
    fn money() {
        assert_eq!(Usd::parse("0.000003").unwrap().nanos, 3000);
        assert_eq!(Usd::parse("$2.5").unwrap().to_string(), "2.5");
        assert!(Usd::parse("-1").is_err());
        assert!(Usd::parse("1.0000000001").is_err());
        assert!(Usd::parse("99999999999999999").is_err());
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
