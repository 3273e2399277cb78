//! Data minimisation on replies: elements at the given paths below the reply element (e.g.
//! `Holder/Address` inside `CheckIdentityResponse`) are cut out of the (already validated)
//! reply. Only optional elements are listed for minimisation, so the reply stays valid.
//!
//! The validator outlines the reply as it reads it (names and spans of the elements down to
//! the deepest path, [`depth`]): cutting needs no second reading of the reply.

use std::ops::Range;

use bytes::Bytes;

use crate::xml::validate::Outlined;

/// How deep below the reply element the outline must go for `paths`.
pub fn depth<S: AsRef<str>>(paths: &[S]) -> usize {
    paths.iter().map(|p| p.as_ref().split('/').count()).max().unwrap_or(0)
}

/// Returns the reply without the elements at `paths`, and the paths actually removed (in
/// document order). `outline` is the validator's outline of `body` to at least
/// [`depth`]`(paths)`.
pub fn cut(body: &Bytes, outline: &[Outlined], paths: &[&str]) -> (Bytes, Vec<String>) {
    let (spans, removed) = spans(body, outline, paths);
    (without(body, &spans), removed)
}

/// The spans of the elements at `paths` (none inside another), in document order, and the
/// paths they are at.
pub fn spans(body: &[u8], outline: &[Outlined], paths: &[&str]) -> (Vec<Range<usize>>, Vec<String>) {
    let mut removed = Vec::new();
    let mut cuts: Vec<Range<usize>> = Vec::new();
    if paths.is_empty() {
        return (cuts, removed);
    }
    // The names of the elements open down to the current one, by depth.
    let mut open: Vec<&[u8]> = Vec::new();
    for o in outline {
        open.truncate(o.depth - 1);
        open.push(body.get(o.name.clone()).unwrap_or_default());
        if cuts.last().is_some_and(|c| o.span.start < c.end) {
            continue; // inside an element already cut
        }
        if let Some(p) = paths.iter().find(|p| p.split('/').map(str::as_bytes).eq(open.iter().copied())) {
            cuts.push(o.span.clone());
            removed.push((*p).to_owned());
        }
    }
    (cuts, removed)
}

/// `body` without the byte ranges `cuts` (in order, not overlapping): the body itself when
/// there is nothing to cut.
pub fn without(body: &Bytes, cuts: &[Range<usize>]) -> Bytes {
    if cuts.is_empty() {
        return body.clone();
    }
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    for c in cuts {
        out.extend_from_slice(body.get(from..c.start).unwrap_or_default());
        from = c.end.max(from);
    }
    out.extend_from_slice(body.get(from..).unwrap_or_default());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::limits::Limits;
    use crate::xml::validate::{Expect, validate_outlined};
    use crate::xml::xsd::Schema;

    const HOLDER: &str = "<Holder><Surname>NOVAKOVA</Surname><GivenNames>JANA</GivenNames><DateOfBirth>1980-02-29</DateOfBirth>\
        <Nationality>CZE</Nationality><PlaceOfBirth>BRNO</PlaceOfBirth><Address>Namesti Svobody 1</Address></Holder>";

    fn reply(prefix: &str, holder: &str) -> Bytes {
        Bytes::from(format!(
            "{prefix}<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <CheckIdentityResponse xmlns=\"urn:spocgw:bio:1\"><MessageID>6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01</MessageID>\
             <Timestamp>2026-11-23T10:00:00Z</Timestamp><DocumentStatus>VALID</DocumentStatus>{holder}\
             </CheckIdentityResponse></s:Body></s:Envelope>"
        ))
    }

    /// Validates (outlined for `paths`), cuts, and checks the result is still valid.
    fn minimised(body: &Bytes, paths: &[&str]) -> (String, Vec<String>) {
        let schema = Schema::embedded().unwrap();
        let ops = [("urn:spocgw:bio:1", "CheckIdentityResponse")];
        let expect = Expect::Soap { operations: &ops, fault_ok: false, headers: &[] };
        let v = validate_outlined(&schema, &Limits::default(), body, expect, depth(paths)).unwrap();
        let (out, removed) = cut(body, &v.outline, paths);
        validate_outlined(&schema, &Limits::default(), &out, expect, 0).unwrap();
        (String::from_utf8(out.to_vec()).unwrap(), removed)
    }

    #[test]
    fn cuts_the_named_elements_only() {
        let body = reply("", HOLDER);
        let (text, removed) = minimised(&body, &["Holder/Address"]);
        assert!(!text.contains("Svobody") && text.contains("<PlaceOfBirth>BRNO</PlaceOfBirth>"), "{text}");
        assert_eq!(text, String::from_utf8(body.to_vec()).unwrap().replace("<Address>Namesti Svobody 1</Address>", ""));
        assert_eq!(removed, vec!["Holder/Address"]);
        // Removed in document order, whatever the order asked.
        let (text, removed) = minimised(&body, &["Holder/Address", "Holder/PlaceOfBirth"]);
        assert!(!text.contains("PlaceOfBirth") && !text.contains("Address"), "{text}");
        assert_eq!(removed, vec!["Holder/PlaceOfBirth", "Holder/Address"]);
        // A path names elements from the reply element down: `Address` alone is not there.
        let (text, removed) = minimised(&body, &["Address", "Surname"]);
        assert_eq!(text.as_bytes(), &body[..]);
        assert!(removed.is_empty());
        // A whole element, and what is inside it with it (once).
        let (text, removed) = minimised(&body, &["Holder/Surname", "Holder", "Holder/Address"]);
        assert!(!text.contains("Holder") && text.contains("</DocumentStatus></CheckIdentityResponse>"), "{text}");
        assert_eq!(removed, vec!["Holder"]);
        // Nothing asked, or nothing there.
        assert_eq!(minimised(&body, &[]).0.as_bytes(), &body[..]);
        let bare = reply("", "");
        assert_eq!(minimised(&bare, &["Holder/Address"]), (String::from_utf8(bare.to_vec()).unwrap(), vec![]));
    }

    #[test]
    fn offsets_hold_after_a_byte_order_mark_and_past_64_paths() {
        let body = reply("\u{feff}", HOLDER);
        let (text, removed) = minimised(&body, &["Holder/Address"]);
        assert!(text.starts_with('\u{feff}') && !text.contains("Svobody") && text.contains("</Holder>"), "{text}");
        assert_eq!(removed, vec!["Holder/Address"]);
        let mut many: Vec<String> = (0..70).map(|i| format!("Holder/F{i}")).collect();
        many.push("Holder/PlaceOfBirth".into());
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let (text, removed) = minimised(&reply("", HOLDER), &many);
        assert!(!text.contains("BRNO"), "{text}");
        assert_eq!(removed, vec!["Holder/PlaceOfBirth"]);
    }

    #[test]
    fn the_outline_goes_as_deep_as_asked() {
        let body = reply("", HOLDER);
        let schema = Schema::embedded().unwrap();
        let ops = [("urn:spocgw:bio:1", "CheckIdentityResponse")];
        let expect = Expect::Soap { operations: &ops, fault_ok: false, headers: &[] };
        let v = validate_outlined(&schema, &Limits::default(), &body, expect, 1).unwrap();
        assert_eq!(v.outline.len(), 4);
        assert!(v.outline.iter().all(|o| o.depth == 1));
        assert_eq!(&body[v.outline[3].name.clone()], b"Holder");
        assert_eq!(&body[v.outline[3].span.clone()], HOLDER.as_bytes());
        let v = validate_outlined(&schema, &Limits::default(), &body, expect, 2).unwrap();
        assert_eq!(v.outline.iter().map(|o| o.depth).collect::<Vec<_>>(), [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
        assert!(validate_outlined(&schema, &Limits::default(), &body, expect, 0).unwrap().outline.is_empty());
        assert_eq!(depth(&["Holder/Address", "A/B/C", "D"]), 3);
    }
}
