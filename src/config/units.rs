//! Sizes and durations in configuration files: a plain integer (bytes; milliseconds for a
//! `*_ms` key, seconds for a `*_s` key), or a string with its unit as the documentation writes
//! them: `"4 MiB"`, `"64 KiB"`, `"1 MB"`; `"500 ms"`, `"2 s"`, `"5 min"`, `"24 h"`, `"7 d"`.
//! Anything else is refused with what was expected (and, through `read_toml`, the key).
//!
//! Every duration is bounded: [`millis`] and [`seconds`] refuse what would overflow the date
//! and deadline arithmetic it feeds (more than [`MAX_DURATION_S`]); [`millis_within`] and
//! [`seconds_within`] give a key its own range, [`seconds_off_or_within`] a range or 0 for
//! "off". The bounds are the key's declaration, so `gateway.toml(5)` and the check agree.

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

/// The longest duration any key takes: 100 years (no deadline or date computed from a
/// configured duration can overflow below it).
pub const MAX_DURATION_S: u64 = 100 * 365 * 86_400;
/// The shortest audit retention: one year, the shortest period EU law sets for keeping access
/// logs (SIS, Regulation (EU) 2018/1862, Art. 12(4)). Shorter would let a configuration delete
/// evidence an officer or a court may still need.
pub const MIN_RETENTION_S: u64 = 365 * 86_400;
const DAY_S: u64 = 86_400;
/// One day in milliseconds, the longest any timeout or interval takes.
pub const DAY_MS: u64 = DAY_S * 1000;
/// One year in seconds.
pub const YEAR_S: u64 = 365 * DAY_S;

/// `v` (in `unit`) within `min..=max`, or what is wrong with it.
fn within(v: u64, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let show = |n: u64| match unit {
        "ms" if n >= 1000 && n.is_multiple_of(1000) => format!("{} s", n / 1000),
        _ if n >= DAY_S && n.is_multiple_of(DAY_S) && unit == "s" => format!("{} d", n / DAY_S),
        _ => format!("{n} {unit}"),
    };
    if v < min {
        return Err(format!("{} is below the minimum of {}", show(v), show(min)));
    }
    if v > max {
        return Err(format!("{} is above the maximum of {}", show(v), show(max)));
    }
    Ok(v)
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

/// A duration in milliseconds (a `*_ms` key), 0 to [`MAX_DURATION_S`].
///
/// # Errors
/// Neither an integer nor a number with a time unit, or longer than the maximum.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    millis_within::<D, 0, { MAX_DURATION_S * 1000 }>(d)
}

/// A duration in seconds (a `*_s` key), 0 to [`MAX_DURATION_S`].
///
/// # Errors
/// Neither an integer nor a number with a time unit of whole seconds, or longer than the maximum.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    seconds_within::<D, 0, MAX_DURATION_S>(d)
}

/// A duration in milliseconds from `MIN` to `MAX`:
/// `#[serde(deserialize_with = "units::millis_within::<_, 1, { units::DAY_MS }>")]`.
///
/// # Errors
/// Not a duration, or outside the range (the message says which bound).
pub fn millis_within<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(d: D) -> Result<u64, D::Error> {
    let v = d.deserialize_any(Units(Kind::Duration(1)))?;
    within(v, MIN, MAX, "ms").map_err(de::Error::custom)
}

/// A duration in seconds from `MIN` to `MAX`.
///
/// # Errors
/// Not a duration of whole seconds, or outside the range.
pub fn seconds_within<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(d: D) -> Result<u64, D::Error> {
    let v = d.deserialize_any(Units(Kind::Duration(1000)))?;
    within(v, MIN, MAX, "s").map_err(de::Error::custom)
}

/// 0 (off), or a duration in seconds from `MIN` to `MAX`.
///
/// # Errors
/// Not a duration of whole seconds, or neither 0 nor within the range.
pub fn seconds_off_or_within<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(d: D) -> Result<u64, D::Error> {
    let v = d.deserialize_any(Units(Kind::Duration(1000)))?;
    if v == 0 {
        return Ok(0);
    }
    within(v, MIN, MAX, "s").map_err(|e| de::Error::custom(format!("{e} (or 0: off)")))
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

    #[derive(Debug, serde::Deserialize)]
    struct Keys {
        #[serde(default, deserialize_with = "seconds_off_or_within::<_, MIN_RETENTION_S, MAX_DURATION_S>")]
        retention_s: u64,
        #[serde(default, deserialize_with = "millis_within::<_, 1, DAY_MS>")]
        timeout_ms: u64,
        #[serde(default, deserialize_with = "seconds")]
        plain_s: u64,
    }

    fn keys(text: &str) -> Result<Keys, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn durations_outside_their_key_s_range_are_refused_with_the_bound() {
        assert_eq!(keys("retention_s = \"400 d\"").unwrap().retention_s, 400 * DAY_S);
        assert_eq!(keys("retention_s = 0").unwrap().retention_s, 0);
        let e = keys("retention_s = \"1 s\"").unwrap_err();
        assert!(e.contains("below the minimum of 365 d") && e.contains("0: off"), "{e}");
        assert!(keys("retention_s = \"10000000 d\"").unwrap_err().contains("above the maximum"));
        assert!(keys("timeout_ms = 0").unwrap_err().contains("below the minimum of 1 ms"));
        assert!(keys("timeout_ms = \"2 d\"").unwrap_err().contains("above the maximum of 86400 s"));
        assert_eq!(keys("timeout_ms = \"2 s\"").unwrap().timeout_ms, 2000);
        assert!(keys("plain_s = \"10000000 d\"").unwrap_err().contains("above the maximum"));
        assert_eq!(keys("plain_s = \"7 d\"").unwrap().plain_s, 7 * DAY_S);
    }
}
