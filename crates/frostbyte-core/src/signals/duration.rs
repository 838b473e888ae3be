//! Durations as feature-set definitions write them: `500ms`, `30s`, `5m`, `1h30m`, `7d` (units `us`, `ms`, `s`,
//! `m`, `h`, `d`, summed), held as whole microseconds, the engine's unit of time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(i64);

const UNITS: &[(&str, i64)] =
    &[("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000), ("us", 1)];

impl Span {
    pub const ZERO: Span = Span(0);

    /// A constant span; negative values become zero.
    pub const fn from_micros_const(us: i64) -> Span {
        Span(if us < 0 { 0 } else { us })
    }

    pub const fn from_days(d: i64) -> Span {
        Span::from_micros_const(d.saturating_mul(86_400_000_000))
    }

    pub fn from_micros(us: i64) -> Span {
        Span(us.max(0))
    }

    pub fn from_secs(s: i64) -> Span {
        Span::from_micros(s.saturating_mul(1_000_000))
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses `1h30m`-style text. Errors say what is wrong without echoing more than the input.
    pub fn parse(s: &str) -> Result<Span, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a duration such as 30s, 5m or 1h30m".into());
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: i64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err("a duration such as 30s, 5m or 1h30m (a number before each unit)".into());
            }
            let n: i64 = s[start..i].parse().map_err(|_| "a duration that fits in 64 bits".to_string())?;
            let ustart = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[ustart..i];
            let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
                return Err("a duration with units us, ms, s, m, h or d".into());
            };
            total = n
                .checked_mul(scale)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| "a duration that fits in 64 bits".to_string())?;
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, scale) in UNITS {
            if rest >= *scale {
                write!(f, "{}{unit}", rest / scale)?;
                rest %= scale;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Span::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Span;

    #[test]
    fn parses_and_formats_round_trip() {
        assert_eq!(Span::parse("30s").unwrap().micros(), 30_000_000);
        assert_eq!(Span::parse("1h30m").unwrap().micros(), 5_400_000_000);
        assert_eq!(Span::parse("250ms").unwrap().micros(), 250_000);
        assert_eq!(Span::parse("1h30m").unwrap().to_string(), "1h30m");
        assert_eq!(Span::parse("90s").unwrap().to_string(), "1m30s");
        assert_eq!(Span::parse("0s").unwrap(), Span::ZERO);
        for bad in ["", "5", "m", "5 minutes", "5x", "-5s", "99999999999999999999d"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }
}
