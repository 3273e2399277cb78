//! Data minimisation on replies: elements at the given paths below the reply element (e.g.
//! `Holder/Address` inside `CheckIdentityResponse`) are cut out of the (already validated)
//! reply. Only optional elements are listed for minimisation, so the reply stays valid.

use bytes::Bytes;
use quick_xml::Reader;
use quick_xml::events::Event;

/// Returns the reply without the elements at `paths`, and the paths actually removed.
pub fn remove(body: &Bytes, paths: &[&str]) -> (Bytes, Vec<String>) {
    if paths.is_empty() {
        return (body.clone(), Vec::new());
    }
    let wanted: Vec<Vec<&str>> = paths.iter().map(|p| p.split('/').collect()).collect();
    let mut reader = Reader::from_reader(&body[..]);
    // Local names from the reply element down (the SOAP Envelope and Body are skipped).
    let mut stack: Vec<String> = Vec::new();
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut removed = Vec::new();
    let mut open_cut: Option<(usize, usize)> = None; // (start offset, depth)
    loop {
        let start = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(_) => return (body.clone(), Vec::new()),
        };
        match event {
            Event::Start(e) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                if open_cut.is_none() && matches_path(&stack, &wanted) {
                    open_cut = Some((start, stack.len()));
                }
            }
            Event::Empty(e) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                if open_cut.is_none() && matches_path(&stack, &wanted) {
                    cut.push((start, reader.buffer_position() as usize));
                    removed.push(below_reply(&stack).join("/"));
                }
                stack.pop();
            }
            Event::End(_) => {
                if let Some((s, depth)) = open_cut
                    && depth == stack.len()
                {
                    cut.push((s, reader.buffer_position() as usize));
                    removed.push(below_reply(&stack).join("/"));
                    open_cut = None;
                }
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
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

/// The path below the reply element: skip Envelope, Body and the reply element itself.
fn below_reply(stack: &[String]) -> &[String] {
    let skip = if stack.first().map(String::as_str) == Some("Envelope") { 3 } else { 1 };
    stack.get(skip..).unwrap_or(&[])
}

fn matches_path(stack: &[String], wanted: &[Vec<&str>]) -> bool {
    let below = below_reply(stack);
    wanted.iter().any(|w| w.len() == below.len() && w.iter().zip(below).all(|(a, b)| a == b))
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
    }
}
