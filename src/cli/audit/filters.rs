//! `audit query`'s filters as the log writes the values: normalised where a value has one
//! spelling an officer may type another way (a fingerprint's case and colons, a purpose's case, a
//! document number's spaces and hyphens), refused where it names nothing the log can hold. A
//! filter never silently matches nothing because of how it was typed.

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::read::QueryArgs;
use crate::audit::{DOCUMENT_V2, Record, document_pseudonym, normalise_document, pseudonymise};

/// Normalises `q`'s client fingerprint, purpose and issuing state in place.
///
/// # Errors
/// A fingerprint that is not 64 hex digits, a purpose neither the built-in schema nor the log
/// knows, an issuing state that is not a state code.
pub(super) fn normalise(q: &mut QueryArgs) -> Result<(), String> {
    if let Some(c) = &q.client {
        q.client = Some(fingerprint(c)?);
    }
    if let Some(p) = &q.purpose {
        let p = p.trim().to_ascii_uppercase();
        let known = purposes(&q.dir);
        if !known.contains(&p) {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(format!("--purpose {p:?}: not a purpose the schema or this log knows ({})", list.join(", ")));
        }
        q.purpose = Some(p);
    }
    if let Some(s) = &q.issuing_state {
        let s = s.trim().to_ascii_uppercase();
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("--issuing-state {s:?}: a state code of 1 to 3 letters (CZE, D...)"));
        }
        q.issuing_state = Some(s);
    }
    Ok(())
}

/// A SHA-256 fingerprint as records write it: 64 lower-case hex digits.
fn fingerprint(v: &str) -> Result<String, String> {
    let hex: String = v.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!("--client {v:?}: a SHA-256 fingerprint, 64 hex digits (colons and either case allowed)"))
    }
}

/// The purposes a record can carry: the built-in schema's enumeration, and any the log holds (a
/// site's own schema may add some).
fn purposes(dir: &std::path::Path) -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for (_, xsd) in crate::xml::xsd::EMBEDDED {
        if let Some(at) = xsd.find("<xs:simpleType name=\"Purpose\">") {
            let block = &xsd[at..];
            let block = &block[..block.find("</xs:simpleType>").unwrap_or(block.len())];
            known.extend(block.split("value=\"").skip(1).filter_map(|v| v.split('"').next()).map(str::to_owned));
        }
    }
    for seg in crate::audit::segments(dir).unwrap_or_default() {
        let Ok(text) = std::fs::read_to_string(&seg) else { continue };
        known.extend(text.split("\"purpose\":\"").skip(1).filter_map(|v| v.split('"').next()).map(str::to_owned));
    }
    known
}

/// `--document` (and `--issuing-state`), matched through pseudonyms: for a record that covers
/// the issuing state ([`DOCUMENT_V2`]), the pseudonym of the record's state and the number; for
/// one written before, the pseudonym of the number alone, as typed or normalised.
pub(super) struct DocumentFilter {
    key: Zeroizing<Vec<u8>>,
    number: Zeroizing<String>,
    state: Option<String>,
    before_v2: [String; 2],
}

impl DocumentFilter {
    /// # Errors
    /// `--document` without `--pseudonym-key`, or a key that cannot be read or unsealed.
    pub(super) fn new(q: &QueryArgs) -> Result<Option<DocumentFilter>, String> {
        let (number, key) = match (&q.document, &q.pseudonym_key) {
            (None, _) => return Ok(None),
            (Some(_), None) => return Err("--document needs --pseudonym-key".into()),
            (Some(d), Some(k)) => (d, super::pseudonym_key_from(k, q.config.as_deref())?),
        };
        let normalised = Zeroizing::new(normalise_document(number));
        if normalised.is_empty() {
            return Err("--document: no letter or digit in it".into());
        }
        let before_v2 = [pseudonymise(&key, number.trim()), pseudonymise(&key, &normalised)];
        Ok(Some(DocumentFilter { key, number: normalised, state: q.issuing_state.clone(), before_v2 }))
    }

    pub(super) fn matches(&self, r: &Record) -> bool {
        let Some(d) = r.document.as_deref() else { return false };
        let state = r.issuing_state.as_deref().map(|s| s.trim().to_ascii_uppercase());
        if self.state.as_ref().is_some_and(|want| state.as_ref() != Some(want)) {
            return false;
        }
        if d.starts_with(DOCUMENT_V2) {
            d == document_pseudonym(&self.key, state.as_deref(), &self.number)
        } else {
            self.before_v2.iter().any(|p| p == d)
        }
    }

    /// How the access record names the search: the number's pseudonym, never the number.
    pub(super) fn describe(&self) -> String {
        let mut d = format!("document-pseudonym={}", self.before_v2[1]);
        if let Some(s) = &self.state {
            d.push_str(&format!(" issuing-state={s}"));
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised_or_refused() {
        let hex = "AB".repeat(32);
        let colons: Vec<String> = (0..32).map(|_| "aB".to_owned()).collect();
        assert_eq!(fingerprint(&hex).unwrap(), "ab".repeat(32));
        assert_eq!(fingerprint(&colons.join(":")).unwrap(), "ab".repeat(32));
        assert!(fingerprint("abcd").is_err());
        assert!(fingerprint(&"zz".repeat(32)).is_err());
    }

    /// Equal numbers of two states have different pseudonyms; the spelling of the number does
    /// not matter; a record written before the state was covered is still found.
    #[test]
    fn document_pseudonyms_cover_the_state_and_old_records_are_still_found() {
        let key = Zeroizing::new(vec![5u8; 32]);
        let cze = document_pseudonym(&key, Some("CZE"), "X123-4567");
        assert_eq!(cze, document_pseudonym(&key, Some("cze"), "x1234567"));
        assert_ne!(cze, document_pseudonym(&key, Some("SVK"), "X1234567"));
        let f = |state: Option<&str>| DocumentFilter {
            key: key.clone(),
            number: Zeroizing::new("X1234567".into()),
            state: state.map(str::to_owned),
            before_v2: [pseudonymise(&key, "X1234567"), pseudonymise(&key, "X1234567")],
        };
        let record = |state: &str, doc: String| Record {
            issuing_state: Some(state.into()),
            document: Some(doc),
            ..Record::default()
        };
        assert!(f(None).matches(&record("CZE", cze.clone())));
        assert!(f(Some("CZE")).matches(&record("CZE", cze.clone())));
        assert!(!f(Some("SVK")).matches(&record("CZE", cze)));
        let svk = document_pseudonym(&key, Some("SVK"), "X1234567");
        assert!(!f(Some("CZE")).matches(&record("SVK", svk.clone())));
        assert!(f(None).matches(&record("SVK", svk)));
        // Written before: the bare HMAC of the number.
        assert!(f(Some("CZE")).matches(&record("CZE", pseudonymise(&key, "X1234567"))));
    }
}
