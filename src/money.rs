//! US dollars, exact: job budgets and per-token prices as written, and every cost in a report. Kept as
//! nano-dollars so that sums and differences never drift (`0.1 + 0.2` is `0.3`, and a report never says
//! `0.05351399999999999`). Serialized as a JSON number with at most 9 decimals, read from a number or a
//! string.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::borrow::Cow;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Usd {
    pub nanos: u64,
}

impl Usd {
    const SCALE: u64 = 1_000_000_000;
    pub const ZERO: Usd = Usd { nanos: 0 };

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

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

    /// A figure the agent-server computed in floating point (`accumulated_cost`), rounded to the nearest
    /// nano-dollar; nothing negative or non-finite survives.
    pub fn from_f64(dollars: f64) -> Usd {
        if !dollars.is_finite() || dollars <= 0.0 {
            return Usd::ZERO;
        }
        Usd { nanos: (dollars * Self::SCALE as f64).round().min(u64::MAX as f64) as u64 }
    }

    /// For APIs that want a float (an LLM's per-token price); exact for every amount with ≤ 9 decimals
    /// below a million dollars.
    pub fn as_f64(self) -> f64 {
        self.nanos as f64 / Self::SCALE as f64
    }

    /// An nth of it, rounded down to the nano-dollar (a mean cost per run); n = 0 gives zero.
    pub fn split(self, n: u64) -> Usd {
        Usd { nanos: self.nanos.checked_div(n).unwrap_or(0) }
    }

    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd { nanos: self.nanos.saturating_sub(other.nanos) }
    }
}

impl std::ops::Add for Usd {
    type Output = Usd;
    fn add(self, other: Usd) -> Usd {
        Usd { nanos: self.nanos.saturating_add(other.nanos) }
    }
}

impl std::ops::AddAssign for Usd {
    fn add_assign(&mut self, other: Usd) {
        *self = *self + other;
    }
}

impl std::iter::Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, |a, b| a + b)
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
    /// A JSON number: the nearest double to a decimal with ≤ 9 places (below a million dollars) prints
    /// back as that decimal.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
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

#[cfg(test)]
mod tests {
    use super::Usd;

    #[test]
    fn parse_and_display() {
        assert_eq!(Usd::parse("0.000003").unwrap().nanos, 3000);
        assert_eq!(Usd::parse("$2.5").unwrap().to_string(), "2.5");
        assert!(Usd::parse("-1").is_err());
        assert!(Usd::parse("1.0000000001").is_err());
        assert!(Usd::parse("99999999999999999").is_err());
    }

    #[test]
    fn server_floats_become_exact_sums() {
        // What the agent-server reported for five scripted calls, and what ohrun used to print.
        let total = Usd::from_f64(0.05351399999999999);
        assert_eq!(total.to_string(), "0.053514");
        assert_eq!(serde_json::to_string(&total).unwrap(), "0.053514");
        let a = Usd::from_f64(0.1);
        let b = Usd::from_f64(0.2);
        assert_eq!(serde_json::to_string(&(a + b)).unwrap(), "0.3");
        assert_eq!(Usd::from_f64(f64::NAN), Usd::ZERO);
        assert_eq!(Usd::from_f64(-1.0), Usd::ZERO);
    }

    /// The exact value of a JSON number's text (`0.0036`, `3e-6`, `2.0`) in nano-dollars.
    fn exact_nanos(text: &str) -> u128 {
        let (mantissa, exp) = text.split_once('e').map(|(m, e)| (m, e.parse::<i32>().unwrap())).unwrap_or((text, 0));
        let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits: u128 = format!("{whole}{frac}").parse().unwrap();
        let scale = 9 + exp - frac.len() as i32;
        assert!(scale >= 0, "{text} has more than 9 decimals");
        digits * 10u128.pow(scale as u32)
    }

    #[test]
    fn every_nine_decimal_amount_serializes_to_exactly_itself() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Small amounts (a cheap call) as well as large ones.
            // Exact up to 15 significant digits: every amount below a million dollars.
            let usd = Usd { nanos: if i % 2 == 0 { x % 1_000_000_000_000_000 } else { x % 10_000 } };
            let json = serde_json::to_string(&usd).unwrap();
            assert_eq!(exact_nanos(&json), usd.nanos as u128, "{json} for {} nanos", usd.nanos);
        }
    }
}
