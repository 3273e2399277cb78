//! Simple types: the supported built-ins, restriction facets, and the check of one value.
//!
//! A value is whitespace-normalised as its type says, checked against the built-in's lexical
//! space (with the value-space checks libxml2 makes too: day of month, ranges of the sized
//! integers), then against every facet of every derivation step.

use std::cmp::Ordering;

pub use super::base64::{Base64Check, SNIFF_BYTES, base64_octets};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteSpace {
    Preserve,
    Replace,
    Collapse,
}

/// The built-in types the compiler accepts, by their XSD names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    String,
    NormalizedString,
    Token,
    Boolean,
    Decimal,
    /// An integer type with optional bounds (inclusive).
    Integer {
        min: Option<i128>,
        max: Option<i128>,
    },
    Date,
    DateTime,
    Time,
    Base64Binary,
    HexBinary,
    AnyUri,
    NcName,
    Id,
    IdRef,
}

impl Builtin {
    /// The built-in named `local` in the XSD namespace.
    pub fn by_name(local: &str) -> Option<Builtin> {
        let int = |min: Option<i128>, max: Option<i128>| Builtin::Integer { min, max };
        Some(match local {
            "string" => Builtin::String,
            "normalizedString" => Builtin::NormalizedString,
            "token" => Builtin::Token,
            "boolean" => Builtin::Boolean,
            "decimal" => Builtin::Decimal,
            "integer" => int(None, None),
            "nonNegativeInteger" => int(Some(0), None),
            "positiveInteger" => int(Some(1), None),
            "nonPositiveInteger" => int(None, Some(0)),
            "negativeInteger" => int(None, Some(-1)),
            "long" => int(Some(i64::MIN as i128), Some(i64::MAX as i128)),
            "int" => int(Some(i32::MIN as i128), Some(i32::MAX as i128)),
            "short" => int(Some(i16::MIN as i128), Some(i16::MAX as i128)),
            "byte" => int(Some(i8::MIN as i128), Some(i8::MAX as i128)),
            "unsignedLong" => int(Some(0), Some(u64::MAX as i128)),
            "unsignedInt" => int(Some(0), Some(u32::MAX as i128)),
            "unsignedShort" => int(Some(0), Some(u16::MAX as i128)),
            "unsignedByte" => int(Some(0), Some(u8::MAX as i128)),
            "date" => Builtin::Date,
            "dateTime" => Builtin::DateTime,
            "time" => Builtin::Time,
            "base64Binary" => Builtin::Base64Binary,
            "hexBinary" => Builtin::HexBinary,
            "anyURI" => Builtin::AnyUri,
            "NCName" => Builtin::NcName,
            "ID" => Builtin::Id,
            "IDREF" => Builtin::IdRef,
            _ => return None,
        })
    }

    pub fn whitespace(self) -> WhiteSpace {
        match self {
            Builtin::String => WhiteSpace::Preserve,
            Builtin::NormalizedString => WhiteSpace::Replace,
            _ => WhiteSpace::Collapse,
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Builtin::Decimal | Builtin::Integer { .. })
    }

    /// Types whose length facets count octets rather than characters.
    pub fn is_binary(self) -> bool {
        matches!(self, Builtin::Base64Binary | Builtin::HexBinary)
    }

    /// Types whose length facets apply (XSD 1.0: strings and binaries).
    pub fn has_length(self) -> bool {
        matches!(
            self,
            Builtin::String
                | Builtin::NormalizedString
                | Builtin::Token
                | Builtin::Base64Binary
                | Builtin::HexBinary
                | Builtin::AnyUri
                | Builtin::NcName
                | Builtin::Id
                | Builtin::IdRef
        )
    }
}

/// A compiled simple type: its built-in root and the facets of every derivation step.
#[derive(Debug, Clone)]
pub struct SimpleType {
    pub name: String,
    pub builtin: Builtin,
    pub whitespace: WhiteSpace,
    /// One group per derivation step; a value must match some pattern of every group.
    pub patterns: Vec<Vec<super::regex::Pattern>>,
    /// Allowed values (normalised; numbers compared by value).
    pub enumeration: Option<Vec<String>>,
    pub length: Option<u64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_inclusive: Option<Decimal>,
    pub max_inclusive: Option<Decimal>,
    pub min_exclusive: Option<Decimal>,
    pub max_exclusive: Option<Decimal>,
    pub total_digits: Option<u32>,
    pub fraction_digits: Option<u32>,
}

impl SimpleType {
    pub fn builtin(name: &str, b: Builtin) -> Self {
        Self {
            name: name.to_owned(),
            builtin: b,
            whitespace: b.whitespace(),
            patterns: Vec::new(),
            enumeration: None,
            length: None,
            min_length: None,
            max_length: None,
            min_inclusive: None,
            max_inclusive: None,
            min_exclusive: None,
            max_exclusive: None,
            total_digits: None,
            fraction_digits: None,
        }
    }

    /// True when the value need not be held whole to be checked (base64 without pattern or
    /// enumeration is checked as it streams).
    pub fn streams(&self) -> bool {
        self.builtin == Builtin::Base64Binary && self.patterns.is_empty() && self.enumeration.is_none()
    }

    /// True when whitespace around the value is refused although XSD would collapse it.
    ///
    /// libxml2 (which the Ministry's and police systems' SOAP stacks commonly use) refuses
    /// surrounding whitespace in the sized integer types and in date, dateTime and time, unless
    /// the type has a pattern or an enumeration. We refuse the same, so that nothing passes the
    /// gateway that such a peer would refuse; the differential test holds us to it.
    fn strict_whitespace(&self) -> bool {
        let sized = matches!(self.builtin, Builtin::Integer { min: Some(_), max: Some(_) });
        let temporal = matches!(self.builtin, Builtin::Date | Builtin::DateTime | Builtin::Time);
        (sized || temporal) && self.patterns.is_empty() && self.enumeration.is_none()
    }

    /// Checks one value: the value as the type's whitespace facet normalises it, or the reason
    /// it fails.
    ///
    /// # Errors
    /// The facet the value breaks (pattern, enumeration, length, range, digits, or the built-in
    /// type's lexical space).
    pub fn check<'v>(&self, raw: &'v str) -> Result<std::borrow::Cow<'v, str>, String> {
        if self.strict_whitespace() && raw.trim_matches(is_xml_space).len() != raw.len() {
            return Err(format!("whitespace around the value is not accepted in {}", self.name));
        }
        let normalized = normalize(raw, self.whitespace);
        let v: &str = &normalized;
        let number = lexical(self.builtin, v)?;
        if let Some(n) = &number
            && let Builtin::Integer { min, max } = self.builtin
        {
            let too_small = min.is_some_and(|m| n.cmp(&Decimal::from_i128(m)) == Ordering::Less);
            let too_big = max.is_some_and(|m| n.cmp(&Decimal::from_i128(m)) == Ordering::Greater);
            if too_small || too_big {
                return Err(format!("out of the range of {}", self.name));
            }
        }
        if self.builtin.has_length() {
            let len = match self.builtin {
                Builtin::Base64Binary => base64_octets(v).unwrap_or(0),
                Builtin::HexBinary => v.len() as u64 / 2,
                _ => v.chars().count() as u64,
            };
            self.check_length(len)?;
        }
        if let Some(values) = &self.enumeration {
            let ok = match &number {
                Some(n) => values.iter().any(|e| Decimal::parse(e).is_some_and(|d| d.cmp(n) == Ordering::Equal)),
                None => values.iter().any(|e| e == v),
            };
            if !ok {
                return Err(format!("not one of the values {} allows (enumeration)", self.name));
            }
        }
        for group in &self.patterns {
            if !group.iter().any(|re| re.is_match(v)) {
                return Err(format!("does not match the pattern of {}", self.name));
            }
        }
        if let Some(n) = &number {
            let fail = |what: &str| Err(format!("{what} for {}", self.name));
            if self.min_inclusive.as_ref().is_some_and(|m| n.cmp(m) == Ordering::Less) {
                return fail("too small");
            }
            if self.max_inclusive.as_ref().is_some_and(|m| n.cmp(m) == Ordering::Greater) {
                return fail("too large");
            }
            if self.min_exclusive.as_ref().is_some_and(|m| n.cmp(m) != Ordering::Greater) {
                return fail("too small");
            }
            if self.max_exclusive.as_ref().is_some_and(|m| n.cmp(m) != Ordering::Less) {
                return fail("too large");
            }
            if self.total_digits.is_some_and(|t| n.total_digits() > t) {
                return fail("too long (total digits)");
            }
            if self.fraction_digits.is_some_and(|t| n.fraction_digits() > t) {
                return fail("too long (fraction digits)");
            }
        }
        Ok(normalized)
    }

    /// Checks the length facets against a length already counted (octets or characters).
    ///
    /// # Errors
    /// The length facet the length breaks.
    pub fn check_length(&self, len: u64) -> Result<(), String> {
        if self.length.is_some_and(|l| len != l) {
            return Err(format!("length {len} differs from the length {} requires", self.name));
        }
        if self.min_length.is_some_and(|l| len < l) {
            return Err(format!("length {len} is below the minimum of {}", self.name));
        }
        if self.max_length.is_some_and(|l| len > l) {
            return Err(format!("length {len} is above the maximum of {}", self.name));
        }
        Ok(())
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Whitespace normalisation (XSD Part 2, 4.3.6).
pub fn normalize(s: &str, ws: WhiteSpace) -> std::borrow::Cow<'_, str> {
    match ws {
        WhiteSpace::Preserve => s.into(),
        WhiteSpace::Replace => {
            if s.contains(['\t', '\n', '\r']) {
                s.replace(['\t', '\n', '\r'], " ").into()
            } else {
                s.into()
            }
        }
        WhiteSpace::Collapse => {
            let trimmed = s.trim_matches(is_xml_space);
            // One pass: a tab, line end or two spaces in a row need collapsing.
            let (needs, _) = trimmed.bytes().fold((false, false), |(needs, space), b| {
                (needs | matches!(b, b'\t' | b'\n' | b'\r') | (space & (b == b' ')), b == b' ')
            });
            if !needs {
                return trimmed.into();
            }
            let mut out = String::with_capacity(trimmed.len());
            for word in trimmed.split(is_xml_space).filter(|w| !w.is_empty()) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
            }
            out.into()
        }
    }
}

/// Checks `v` against the built-in's lexical space; numeric types return their value.
fn lexical(b: Builtin, v: &str) -> Result<Option<Decimal>, String> {
    let bad = |what: &str| Err(format!("not a valid {what}"));
    match b {
        Builtin::String | Builtin::NormalizedString | Builtin::Token | Builtin::AnyUri => Ok(None),
        Builtin::Boolean => match v {
            "true" | "false" | "1" | "0" => Ok(None),
            _ => bad("boolean"),
        },
        Builtin::Decimal => Decimal::parse(v).map(Some).map_or_else(|| bad("decimal"), Ok),
        Builtin::Integer { .. } => {
            let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return bad("integer");
            }
            Ok(Decimal::parse(v))
        }
        Builtin::Date => check_date(v).map(|_| None).map_err(|_| "not a valid date".to_owned()),
        Builtin::DateTime => {
            let ok = v.split_once('T').is_some_and(|(d, t)| {
                // the zone belongs to the whole value; the date part has none
                check_ymd(d).is_ok() && check_time(t).is_ok()
            });
            if ok { Ok(None) } else { bad("dateTime") }
        }
        Builtin::Time => check_time(v).map(|_| None).map_err(|_| "not a valid time".to_owned()),
        Builtin::Base64Binary => base64_octets(v).map(|_| None).ok_or_else(|| "not valid base64".to_owned()),
        Builtin::HexBinary => {
            if v.len().is_multiple_of(2) && v.bytes().all(|c| c.is_ascii_hexdigit()) {
                Ok(None)
            } else {
                bad("hexBinary")
            }
        }
        Builtin::NcName | Builtin::Id | Builtin::IdRef => {
            if is_ncname(v) {
                Ok(None)
            } else {
                bad("NCName")
            }
        }
    }
}

fn is_name_start(c: char) -> bool {
    matches!(c, 'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}'
        | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// XML NCName: a Name without colons.
pub fn is_ncname(v: &str) -> bool {
    let mut cs = v.chars();
    cs.next().is_some_and(is_name_start) && cs.all(is_name_char)
}

fn two(s: &str) -> Option<u32> {
    if s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit()) { s.parse().ok() } else { None }
}

fn split_zone(v: &str) -> Result<&str, ()> {
    if let Some(rest) = v.strip_suffix('Z') {
        return Ok(rest);
    }
    if v.len() >= 6 {
        let (head, zone) = v.split_at(v.len() - 6);
        let zb = zone.as_bytes();
        if (zb[0] == b'+' || zb[0] == b'-') && zb[3] == b':' {
            let h = two(&zone[1..3]).ok_or(())?;
            let m = two(&zone[4..6]).ok_or(())?;
            if h > 14 || m > 59 || (h == 14 && m != 0) {
                return Err(());
            }
            return Ok(head);
        }
    }
    Ok(v)
}

fn check_ymd(v: &str) -> Result<(), ()> {
    let (neg, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v),
    };
    let _ = neg;
    let mut parts = body.rsplitn(3, '-');
    let (d, m, y) = (parts.next().ok_or(())?, parts.next().ok_or(())?, parts.next().ok_or(())?);
    if y.len() < 4 || !y.bytes().all(|c| c.is_ascii_digit()) || (y.len() > 4 && y.starts_with('0')) {
        return Err(());
    }
    let year: i64 = y.parse().map_err(|_| ())?;
    if year == 0 {
        return Err(());
    }
    let month = two(m).ok_or(())?;
    let day = two(d).ok_or(())?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(()),
    };
    if day == 0 || day > days {
        return Err(());
    }
    Ok(())
}

fn check_date(v: &str) -> Result<(), ()> {
    check_ymd(split_zone(v)?)
}

fn check_time(v: &str) -> Result<(), ()> {
    let v = split_zone(v)?;
    let b = v.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return Err(());
    }
    let h = two(&v[0..2]).ok_or(())?;
    let m = two(&v[3..5]).ok_or(())?;
    let s = two(&v[6..8]).ok_or(())?;
    let frac = &v[8..];
    let frac_zero = if frac.is_empty() {
        true
    } else {
        let digits = frac.strip_prefix('.').ok_or(())?;
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(());
        }
        digits.bytes().all(|c| c == b'0')
    };
    if h == 24 {
        return if m == 0 && s == 0 && frac_zero { Ok(()) } else { Err(()) };
    }
    if h > 23 || m > 59 || s > 59 {
        return Err(());
    }
    Ok(())
}

/// An exact decimal number, enough for comparisons and digit counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros.
    int: String,
    /// Fraction digits without trailing zeros.
    frac: String,
}

impl Decimal {
    pub fn parse(s: &str) -> Option<Decimal> {
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let int = int.trim_start_matches('0').to_owned();
        let frac = frac.trim_end_matches('0').to_owned();
        let zero = int.is_empty() && frac.is_empty();
        Some(Decimal { negative: negative && !zero, int, frac })
    }

    pub fn from_i128(v: i128) -> Decimal {
        Decimal {
            negative: v < 0,
            int: if v == 0 { String::new() } else { v.unsigned_abs().to_string() },
            frac: String::new(),
        }
    }

    fn cmp_abs(&self, other: &Decimal) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            .then_with(|| self.frac.as_bytes().cmp(other.frac.as_bytes()))
    }

    pub fn total_digits(&self) -> u32 {
        let t = (self.int.len() + self.frac.len()) as u32;
        t.max(1)
    }

    pub fn fraction_digits(&self) -> u32 {
        self.frac.len() as u32
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collapse: trimmed, runs of white space made one space; an already collapsed value is
    /// borrowed as it is.
    #[test]
    fn collapsing_white_space() {
        let c = |s| normalize(s, WhiteSpace::Collapse);
        for (raw, want) in [
            ("a b", "a b"),
            ("  a b \n", "a b"),
            ("a  b", "a b"),
            ("a\tb", "a b"),
            ("a \r\n b", "a b"),
            ("a\n", "a"),
            ("", ""),
            (" ", ""),
            ("a b  ", "a b"),
            ("x  ", "x"),
            ("x y  z", "x y z"),
        ] {
            assert_eq!(c(raw), want, "{raw:?}");
        }
        assert!(matches!(c("a b c"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(c(" a b "), std::borrow::Cow::Borrowed(_)));
        assert_eq!(normalize("a\tb\n", WhiteSpace::Replace), "a b ");
        assert_eq!(normalize(" a\t", WhiteSpace::Preserve), " a\t");
    }

    #[test]
    fn decimals_compare_by_value() {
        let d = |s| Decimal::parse(s).unwrap();
        assert_eq!(d("1.50"), d("01.5"));
        assert!(d("-0.1") < d("0"));
        assert!(d("10") > d("9.999"));
        assert!(d("-10") < d("-9"));
        assert_eq!(d("-0"), d("0"));
        assert_eq!(d("123.4500").total_digits(), 5);
        assert!(Decimal::parse(".").is_none());
        assert!(Decimal::parse("1e3").is_none());
    }

    #[test]
    fn dates_and_times() {
        let t = |b: Builtin, v: &str| lexical(b, v).is_ok();
        assert!(t(Builtin::Date, "2024-02-29"));
        assert!(!t(Builtin::Date, "2023-02-29"));
        assert!(!t(Builtin::Date, "2023-13-01"));
        assert!(t(Builtin::Date, "2023-01-01Z"));
        assert!(t(Builtin::Date, "2023-01-01+14:00"));
        assert!(!t(Builtin::Date, "2023-01-01+15:00"));
        assert!(!t(Builtin::Date, "0000-01-01"));
        assert!(t(Builtin::DateTime, "2026-11-23T08:00:00.123Z"));
        assert!(t(Builtin::DateTime, "2026-11-23T24:00:00"));
        assert!(!t(Builtin::DateTime, "2026-11-23T24:00:01"));
        assert!(!t(Builtin::DateTime, "2026-11-23 08:00:00"));
        assert!(!t(Builtin::Time, "8:00:00"));
    }

    #[test]
    fn base64_rules() {
        assert_eq!(base64_octets("QUJD"), Some(3));
        assert_eq!(base64_octets("QUI="), Some(2));
        assert_eq!(base64_octets("QQ=="), Some(1));
        assert_eq!(base64_octets("QR=="), None);
        assert_eq!(base64_octets("QUJ"), None);
        assert_eq!(base64_octets("Q=UJ"), None);
        assert_eq!(base64_octets(""), Some(0));
        assert_eq!(base64_octets("QU JD"), Some(3));
    }
}
