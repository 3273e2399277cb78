//! Data minimisation on replies: elements at the given paths below the reply element (e.g.
//! `Holder/Address` inside `CheckIdentityResponse`) are cut out of the (already validated)
//! reply. Only optional elements are listed for minimisation, so the reply stays valid.

use bytes::Bytes;
use quick_xml::Reader;
use quick_xml::events::Event;

/// Returns the reply without the elements at `paths`, and the paths actually removed.
///
/// One pass of quick-xml with no copy of names: per open element, the set (a bit mask) of the
/// wanted paths whose steps so far match the elements open down to it.
pub fn remove(body: &Bytes, paths: &[&str]) -> (Bytes, Vec<String>) {
    if paths.is_empty() {
        return (body.clone(), Vec::new());
    }
    if paths.len() > 64 {
        // One mask holds 64 paths: the rest are cut from what the first 64 leave.
        let (first, mut removed) = remove(body, &paths[..64]);
        let (out, more) = remove(&first, &paths[64..]);
        removed.extend(more);
        return (out, removed);
    }
    let wanted: Vec<Vec<&[u8]>> = paths.iter().map(|p| p.split('/').map(str::as_bytes).collect()).collect();
    let all: u64 = if wanted.len() == 64 { u64::MAX } else { (1u64 << wanted.len()) - 1 };
    let mut reader = Reader::from_reader(&body[..]);
    // Per open element: the paths still matching (the SOAP Envelope and Body and the reply
    // element itself are above the paths: every path matches there).
    let mut stack: Vec<u64> = Vec::new();
    // Open elements above the paths: 3 in a SOAP Envelope, else 1 (the reply element).
    let mut above = 1;
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut removed = Vec::new();
    let mut open_cut: Option<(usize, usize, usize)> = None; // (start offset, depth, path)
    loop {
        let start = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(_) => return (body.clone(), Vec::new()),
        };
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                if let Some((s, depth, w)) = open_cut
                    && depth == stack.len()
                {
                    cut.push((s, reader.buffer_position() as usize));
                    removed.push(paths[w].to_owned());
                    open_cut = None;
                }
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        if stack.is_empty() && e.local_name().as_ref() == b"Envelope" {
            above = 3;
        }
        let parent = stack.last().copied().unwrap_or(all);
        let step = stack.len().checked_sub(above);
        let (mask, done) = match step {
            None => (all, None),
            Some(k) => {
                let name = e.local_name();
                let mut mask = 0u64;
                let mut done = None;
                for (i, w) in wanted.iter().enumerate() {
                    if parent & (1 << i) != 0 && w.get(k) == Some(&name.as_ref()) {
                        mask |= 1 << i;
                        if w.len() == k + 1 && done.is_none() {
                            done = Some(i);
                        }
                    }
                }
                (mask, done)
            }
        };
        stack.push(mask);
        if let (None, Some(w)) = (open_cut, done) {
            if empty {
                cut.push((start, reader.buffer_position() as usize));
                removed.push(paths[w].to_owned());
            } else {
                open_cut = Some((start, stack.len(), w));
            }
        }
        if empty {
            stack.pop();
        }
    }
    if cut.is_empty() {
        return (body.clone(), removed);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (s, e) in cut {
        out.extend_from_slice(&body[at..s]);
        at = e;
    }
    out.extend_from_slice(&body[at..]);
    (Bytes::from(out), removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_the_named_elements_only() {
        let body = Bytes::from_static(b"<s:Envelope xmlns:s=\"x\"><s:Body><R xmlns=\"u\"><DocumentStatus>VALID</DocumentStatus><Holder><Surname>A</Surname><PlaceOfBirth>B</PlaceOfBirth><Address>Street 1</Address></Holder></R></s:Body></s:Envelope>");
        let (out, removed) = remove(&body, &["Holder/Address"]);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("Street") && text.contains("<PlaceOfBirth>B</PlaceOfBirth>"), "{text}");
        assert_eq!(removed, vec!["Holder/Address"]);
        let (out, removed) = remove(&body, &["Holder/Address", "Holder/PlaceOfBirth"]);
        assert!(!String::from_utf8(out.to_vec()).unwrap().contains("PlaceOfBirth"));
        assert_eq!(removed.len(), 2);
        let (_, removed) = remove(&body, &["Address"]);
        assert!(removed.is_empty());
        // Outside an Envelope the reply element is the root; an empty element is cut too.
        let bare = Bytes::from_static(b"<R><Holder><Address/><Surname>A</Surname></Holder><Address>x</Address></R>");
        let (out, removed) = remove(&bare, &["Holder/Address", "Holder/Surname"]);
        assert_eq!(&out[..], b"<R><Holder></Holder><Address>x</Address></R>");
        assert_eq!(removed, vec!["Holder/Address", "Holder/Surname"]);
        let (out, removed) = remove(&bare, &["Holder"]);
        assert_eq!(&out[..], b"<R><Address>x</Address></R>");
        assert_eq!(removed, vec!["Holder"]);
        // More paths than one mask holds.
        let mut many: Vec<String> = (0..70).map(|i| format!("Holder/F{i}")).collect();
        many.push("Address".into());
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let (out, removed) = remove(&bare, &many);
        assert_eq!(&out[..], b"<R><Holder><Address/><Surname>A</Surname></Holder></R>");
        assert_eq!(removed, vec!["Address"]);
    }
}
