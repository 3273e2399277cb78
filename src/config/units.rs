//! Sizes and durations in configuration files: a plain integer (bytes; milliseconds for a
//! `*_ms` key, seconds for a `*_s` key), or a string with its unit as the documentation writes
//! them: `"4 MiB"`, `"64 KiB"`, `"1 MB"`; `"500 ms"`, `"2 s"`, `"5 min"`, `"24 h"`, `"7 d"`.
//! Anything else is refused with what was expected (and, through `read_toml`, the key).

use serde::de::{self, Deserializer, Visitor};

enum Kind {
    Bytes,
    /// A duration, counted in this many milliseconds per unit of the result.
    Duration(u64),
}

fn unit_factor(kind: &Kind, unit: &str) -> Option<u64> {
    match kind {
        Kind::Bytes => Some(match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        }),
        Kind::Duration(per) => {
            let ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "min" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            };
            ms.is_multiple_of(*per).then_some(ms / per)
        }
    }
}

fn parse(kind: &Kind, text: &str) -> Result<u64, String> {
    let expected = match kind {
        Kind::Bytes => "a size: bytes, or a number with B, KiB, MiB, GiB, KB, MB or GB (\"4 MiB\")",
        Kind::Duration(1) => "a duration: milliseconds, or a number with ms, s, min, h or d (\"2 s\")",
        Kind::Duration(_) => "a duration: seconds, or a number with s, min, h or d (\"24 h\")",
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not {expected}"))?;
    let f = unit_factor(kind, unit).ok_or_else(|| format!("{text:?} is not {expected}"))?;
    n.checked_mul(f).ok_or_else(|| format!("{text:?} is too large"))
}

struct Units(Kind);

impl Visitor<'_> for Units {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Bytes => "a size (bytes, or a string such as \"4 MiB\")",
            Kind::Duration(_) => "a duration (an integer, or a string such as \"2 s\")",
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse(&self.0, v).map_err(E::custom)
    }
}

/// A size in bytes (`u64` or `usize`).
///
/// # Errors
/// Neither an integer nor a number with a size unit.
pub fn bytes<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    let v = d.deserialize_any(Units(Kind::Bytes))?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("{v} bytes is too large")))
}

/// A duration in milliseconds (a `*_ms` key).
///
/// # Errors
/// Neither an integer nor a number with a time unit.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Units(Kind::Duration(1)))
}

/// A duration in seconds (a `*_s` key).
///
/// # Errors
/// Neither an integer nor a number with a time unit of whole seconds.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Units(Kind::Duration(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_take_their_units_and_refuse_others() {
        assert_eq!(parse(&Kind::Bytes, "4 MiB"), Ok(4 << 20));
        assert_eq!(parse(&Kind::Bytes, "64KiB"), Ok(64 << 10));
        assert_eq!(parse(&Kind::Bytes, "1 MB"), Ok(1_000_000));
        assert_eq!(parse(&Kind::Bytes, "1000"), Ok(1000));
        assert!(parse(&Kind::Bytes, "4 MiBs").is_err() && parse(&Kind::Bytes, "lots").is_err());
        assert_eq!(parse(&Kind::Duration(1), "2 s"), Ok(2000));
        assert_eq!(parse(&Kind::Duration(1), "500ms"), Ok(500));
        assert_eq!(parse(&Kind::Duration(1000), "24 h"), Ok(86_400));
        assert!(parse(&Kind::Duration(1000), "500 ms").is_err(), "not whole seconds");
        assert!(parse(&Kind::Duration(1), "2 fortnights").unwrap_err().contains("ms, s, min, h or d"));
        assert!(parse(&Kind::Bytes, "99999999999999999999 GiB").is_err());
    }
}
