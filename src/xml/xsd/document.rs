//! Schema files read into a small tree (schemas are short, trusted configuration; messages are
//! never read this way). Each node keeps its line and the namespace prefixes in scope, so
//! QName-valued attributes (`type="bio:UUID"`) resolve and errors name `file:line`.

use std::rc::Rc;

use quick_xml::events::{BytesStart, Event};

pub const XS_NS: &str = "http://www.w3.org/2001/XMLSchema";

#[derive(Debug)]
pub struct Node {
    pub ns: String,
    pub local: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    pub line: usize,
    /// (prefix, namespace) in scope, innermost last; "" is the default namespace.
    pub scope: Rc<Vec<(String, String)>>,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Resolves a QName-valued attribute value to (namespace, local).
    pub fn resolve_qname(&self, value: &str) -> Option<(String, String)> {
        let (prefix, local) = value.split_once(':').unwrap_or(("", value));
        let ns = self.scope.iter().rev().find(|(p, _)| p == prefix).map(|(_, n)| n.clone());
        match ns {
            Some(ns) => Some((ns, local.to_owned())),
            None if prefix.is_empty() => Some((String::new(), local.to_owned())),
            None => None,
        }
    }

    pub fn is_xs(&self, local: &str) -> bool {
        self.ns == XS_NS && self.local == local
    }
}

fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn open(e: &BytesStart<'_>, text: &str, pos: usize, parent_scope: &Rc<Vec<(String, String)>>) -> Result<Node, String> {
    let line = line_of(text, pos);
    let mut attrs = Vec::new();
    let mut decls = Vec::new();
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(|e| format!("line {line}: {e}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a.unescape_value().map_err(|e| format!("line {line}: {e}"))?.into_owned();
        if key == "xmlns" {
            decls.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            decls.push((p.to_owned(), value));
        } else {
            attrs.push((key, value));
        }
    }
    let scope = if decls.is_empty() {
        parent_scope.clone()
    } else {
        let mut s = (**parent_scope).clone();
        s.extend(decls);
        Rc::new(s)
    };
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let (prefix, local) =
        name.split_once(':').map(|(p, l)| (p.to_owned(), l.to_owned())).unwrap_or((String::new(), name));
    let ns = scope
        .iter()
        .rev()
        .find(|(p, _)| *p == prefix)
        .map(|(_, n)| n.clone())
        .ok_or_else(|| format!("line {line}: undeclared prefix {prefix:?}"))
        .or_else(|e| if prefix.is_empty() { Ok(String::new()) } else { Err(e) })?;
    Ok(Node { ns, local, attrs, children: Vec::new(), line, scope })
}

/// Parses a schema file's text into its root node.
///
/// # Errors
/// Text that is not a well-formed XML document (DTDs and processing instructions refused).
pub fn parse(text: &str) -> Result<Node, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let root_scope = Rc::new(vec![("xml".to_owned(), "http://www.w3.org/XML/1998/namespace".to_owned())]);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    loop {
        let pos = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| format!("line {}: {e}", line_of(text, pos)))?;
        match event {
            Event::Start(e) => {
                let scope = stack.last().map(|n| n.scope.clone()).unwrap_or_else(|| root_scope.clone());
                stack.push(open(&e, text, pos, &scope)?);
            }
            Event::Empty(e) => {
                let scope = stack.last().map(|n| n.scope.clone()).unwrap_or_else(|| root_scope.clone());
                let node = open(&e, text, pos, &scope)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::DocType(_) => return Err("schemas may not have a DOCTYPE".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    root.ok_or_else(|| "no root element".to_owned())
}
