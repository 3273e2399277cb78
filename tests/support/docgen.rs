//! Document generator for the differential and property tests: valid documents drawn from the
//! compiled schemas (random walks of the content automata, values drawn per type and checked
//! against the type's facets), and mutations of them (missing, extra, repeated, reordered
//! elements; broken facets; wrong types and namespaces; empty values; whitespace cases).
#![allow(dead_code)]

use base64::Engine as _;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use spocgw::sim::messages::synthetic_image;
use spocgw::xml::xsd::simple::{Builtin, SimpleType};
use spocgw::xml::xsd::{Content, Schema, TypeRef};

#[derive(Debug, Clone)]
pub enum N {
    E(El),
    T(String),
}

#[derive(Debug, Clone)]
pub struct El {
    pub ns: String,
    pub local: String,
    pub attrs: Vec<(String, String)>,
    pub kids: Vec<N>,
}

impl El {
    pub fn text(&self) -> Option<&str> {
        match self.kids.as_slice() {
            [N::T(t)] => Some(t),
            _ => None,
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Serialises with default namespaces, or with a prefix `p:` for the root's namespace.
pub fn serialize(root: &El, prefixed: bool) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let prefix = if prefixed { Some(root.ns.as_str()) } else { None };
    write_el(root, "", prefix, true, &mut out);
    out.push('\n');
    out
}

fn write_el(e: &El, default_ns: &str, prefix_ns: Option<&str>, is_root: bool, out: &mut String) {
    let use_prefix = prefix_ns == Some(e.ns.as_str()) && !e.ns.is_empty();
    let name = if use_prefix { format!("p:{}", e.local) } else { e.local.clone() };
    out.push('<');
    out.push_str(&name);
    if is_root && let Some(p) = prefix_ns {
        out.push_str(&format!(" xmlns:p=\"{}\"", esc(p)));
    }
    let mut my_default = default_ns;
    if !use_prefix && e.ns != default_ns {
        out.push_str(&format!(" xmlns=\"{}\"", esc(&e.ns)));
        my_default = &e.ns;
    }
    for (k, v) in &e.attrs {
        out.push_str(&format!(" {k}=\"{}\"", esc(v)));
    }
    if e.kids.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for k in &e.kids {
        match k {
            N::T(t) => out.push_str(&esc(t)),
            N::E(c) => write_el(c, my_default, prefix_ns, false, out),
        }
    }
    out.push_str(&format!("</{name}>"));
}

pub struct Gen<'a> {
    pub schema: &'a Schema,
    runner: TestRunner,
}

impl<'a> Gen<'a> {
    pub fn new(schema: &'a Schema, seed: u8) -> Self {
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
        Self { schema, runner: TestRunner::new_with_rng(Config::default(), rng) }
    }

    pub fn draw<S: Strategy>(&mut self, s: S) -> S::Value {
        s.new_tree(&mut self.runner).expect("strategy").current()
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.draw(0..n) }
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// A valid instance of the global element `decl`.
    pub fn element(&mut self, decl: usize) -> El {
        let schema = self.schema;
        let d = &schema.decls[decl];
        let mut el = El { ns: d.ns.clone(), local: d.local.clone(), attrs: vec![], kids: vec![] };
        match d.ty {
            TypeRef::Simple(st) => el.kids.push(N::T(self.value(&schema.simple[st], &d.local, &[]))),
            TypeRef::Complex(c) => {
                let ct = &schema.complex[c];
                for a in &ct.attributes {
                    if a.required || self.chance(50) {
                        let v = a.fixed.clone().unwrap_or_else(|| self.value(&schema.simple[a.ty], &a.name, &[]));
                        el.attrs.push((a.name.clone(), v));
                    }
                }
                match &ct.content {
                    Content::Empty => {}
                    Content::Simple(st) => el.kids.push(N::T(self.value(&schema.simple[*st], &d.local, &[]))),
                    Content::Elements(dfa) => {
                        let mut state = 0;
                        for _ in 0..64 {
                            let s = &dfa.states[state];
                            if s.transitions.is_empty() || (s.accepting && self.chance(35)) {
                                break;
                            }
                            let t = &s.transitions[self.below(s.transitions.len())];
                            let (child_decl, next) = (t.2, t.3);
                            let child = self.child(child_decl, &el.kids);
                            el.kids.push(N::E(child));
                            state = next;
                        }
                    }
                    Content::All { members, .. } => {
                        let mut order: Vec<usize> = (0..members.len()).collect();
                        for i in (1..order.len()).rev() {
                            let j = self.below(i + 1);
                            order.swap(i, j);
                        }
                        for i in order {
                            if members[i].required || self.chance(50) {
                                let child = self.child(members[i].decl, &el.kids);
                                el.kids.push(N::E(child));
                            }
                        }
                    }
                }
            }
        }
        el
    }

    fn child(&mut self, decl: usize, siblings: &[N]) -> El {
        let schema = self.schema;
        let d = &schema.decls[decl];
        if let TypeRef::Simple(st) = d.ty {
            let v = self.value(&schema.simple[st], &d.local, siblings);
            return El { ns: d.ns.clone(), local: d.local.clone(), attrs: vec![], kids: vec![N::T(v)] };
        }
        self.element(decl)
    }

    /// A valid value of `st`; `siblings` lets `Data` follow its `Format`.
    pub fn value(&mut self, st: &SimpleType, name: &str, siblings: &[N]) -> String {
        for _ in 0..200 {
            let v = self.candidate(st, name, siblings);
            if st.check(&v).is_ok() {
                return v;
            }
        }
        panic!("could not generate a valid value for {}", st.name);
    }

    fn candidate(&mut self, st: &SimpleType, name: &str, siblings: &[N]) -> String {
        if let Some(values) = &st.enumeration {
            let v = values[self.below(values.len())].clone();
            return if self.chance(10) { format!(" {v} ") } else { v };
        }
        match st.builtin {
            Builtin::Base64Binary => {
                let min = st.min_length.unwrap_or(0) as usize;
                let max = st.max_length.unwrap_or(600).min(6000) as usize;
                let len = min + self.below(max.saturating_sub(min).min(3000) + 1);
                let format = siblings.iter().rev().find_map(|s| match s {
                    N::E(e) if e.local == "Format" => e.text().map(|t| t.trim().to_owned()),
                    _ => None,
                });
                // A CV certificate or request field holds a BER-TLV CVC whose length matches.
                let data = match st.name.as_str() {
                    "CVCertificate" | "CVCRequest" => spocgw::sim::messages::synthetic_cvc(
                        &[0x7F, 0x21],
                        self.below(1000) as u32,
                        len.clamp(64, 3000),
                    ),
                    _ => synthetic_image(format.as_deref().unwrap_or("CVC"), self.below(1000) as u32, len),
                };
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                if self.chance(20) {
                    // MIME-style line breaks: valid base64Binary
                    b64.as_bytes()
                        .chunks(76)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    b64
                }
            }
            Builtin::Integer { min, max } => {
                let lo = min.unwrap_or(-100_000).max(-100_000);
                let hi = max.unwrap_or(100_000).min(100_000);
                let lo = st.min_inclusive.as_ref().map(|_| 0).unwrap_or(lo).max(lo);
                let hi = hi.min(if st.max_inclusive.is_some() { 100 } else { hi });
                let v = lo + self.below((hi - lo + 1).max(1) as usize) as i128;
                v.to_string()
            }
            Builtin::Decimal => {
                let n = self.below(10_001);
                let v = format!("{}.{:04}", n / 10_000, n % 10_000);
                match self.below(3) {
                    0 => v.trim_end_matches('0').trim_end_matches('.').to_owned(),
                    _ => v,
                }
            }
            Builtin::Boolean => ["true", "false", "1", "0"][self.below(4)].to_owned(),
            Builtin::Date => format!(
                "{:04}-{:02}-{:02}{}",
                1950 + self.below(90),
                1 + self.below(12),
                1 + self.below(28),
                self.zone()
            ),
            Builtin::DateTime => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{}",
                1990 + self.below(50),
                1 + self.below(12),
                1 + self.below(28),
                self.below(24),
                self.below(60),
                self.below(60),
                if self.chance(30) { ".123" } else { "" },
                ["Z", "+01:00", "-05:30", "Z"][self.below(4)]
            ),
            Builtin::Time => {
                format!("{:02}:{:02}:{:02}{}", self.below(24), self.below(60), self.below(60), self.zone())
            }
            _ => {
                if let Some(group) = st.patterns.last() {
                    let re = group[self.below(group.len())].as_str();
                    let inner = re.strip_prefix("^(?:").and_then(|r| r.strip_suffix(")$")).unwrap_or(re);
                    let s = self.draw(proptest::string::string_regex(inner).expect("pattern generator"));
                    return s;
                }
                let min = st.min_length.unwrap_or(1).max(1) as usize;
                let max = st.max_length.unwrap_or(40).min(60) as usize;
                let len = min + self.below(max.saturating_sub(min) + 1);
                let alphabet: Vec<char> =
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -.,éřž".chars().collect();
                let s: String = (0..len).map(|_| alphabet[self.below(alphabet.len())]).collect();
                let _ = name;
                s
            }
        }
    }

    fn zone(&mut self) -> &'static str {
        ["", "Z", "+02:00", "-11:00"][self.below(4)]
    }
}

/// Every element of the tree, by path of child indices.
pub fn paths(e: &El) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    fn walk(e: &El, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        for (i, k) in e.kids.iter().enumerate() {
            if let N::E(c) = k {
                path.push(i);
                out.push(path.clone());
                walk(c, path, out);
                path.pop();
            }
        }
    }
    walk(e, &mut Vec::new(), &mut out);
    out
}

pub fn at<'e>(root: &'e mut El, path: &[usize]) -> &'e mut El {
    let mut e = root;
    for &i in path {
        e = match &mut e.kids[i] {
            N::E(c) => c,
            N::T(_) => panic!("path into text"),
        };
    }
    e
}

/// The kinds of mutation, named for the report.
pub const MUTATIONS: &[&str] = &[
    "remove element",
    "duplicate element",
    "swap siblings",
    "bad value",
    "wrong namespace",
    "rename element",
    "unknown attribute",
    "text in element content",
    "empty element",
    "whitespace between elements",
    "base64 stray character",
];

/// Values that break facets, types and whitespace rules.
const BAD_VALUES: &[&str] = &[
    "",
    " ",
    "x",
    "-1",
    "0",
    "+1",
    "11",
    "101",
    "1.5",
    "1.23456",
    "1e3",
    "99999999999999999999",
    "2023-02-30",
    "2023-13-01",
    "2024-02-29",
    "2026-11-23T08:00:00",
    "2026-11-23T25:00:00Z",
    "2026-11-23T24:00:00Z",
    "25:00:00",
    "abc def",
    "ABC<",
    "D<<",
    "CZE",
    "cze",
    "CZ",
    "X1234567890",
    "MATCH",
    "IDENTITY_DOUBT",
    "identity_doubt",
    "ok_cert_available",
    "QUJD",
    "QUJ",
    "QR==",
    "QUJD=",
    "6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a0",
    "6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01",
    "\u{e9}t\u{e9}",
    "line\nbreak",
    "tab\there",
    "  spaced  out  ",
];

/// Applies mutation `kind` somewhere in `root`; returns false when it found no place.
pub fn mutate(g: &mut Gen<'_>, root: &mut El, kind: usize) -> bool {
    let all = paths(root);
    if all.is_empty() {
        return false;
    }
    let pick = |g: &mut Gen<'_>, v: &Vec<Vec<usize>>| v[g.below(v.len())].clone();
    match MUTATIONS[kind] {
        "remove element" => {
            let p = pick(g, &all);
            let (last, parent) = p.split_last().expect("non-empty path");
            at(root, parent).kids.remove(*last);
        }
        "duplicate element" => {
            let p = pick(g, &all);
            let (last, parent) = p.split_last().expect("non-empty path");
            let parent = at(root, parent);
            let copy = parent.kids[*last].clone();
            parent.kids.insert(*last + 1, copy);
        }
        "swap siblings" => {
            let candidates: Vec<_> = all
                .iter()
                .filter(|p| {
                    let (last, parent) = p.split_last().expect("non-empty");
                    let mut r = root.clone();
                    at(&mut r, parent).kids.len() > last + 1
                })
                .cloned()
                .collect();
            if candidates.is_empty() {
                return false;
            }
            let p = pick(g, &candidates);
            let (last, parent) = p.split_last().expect("non-empty path");
            at(root, parent).kids.swap(*last, *last + 1);
        }
        "bad value" => {
            let leaves: Vec<_> = all.iter().filter(|p| at(&mut root.clone(), p).text().is_some()).cloned().collect();
            if leaves.is_empty() {
                return false;
            }
            let p = pick(g, &leaves);
            let el = at(root, &p);
            let old = el.text().unwrap_or("").to_owned();
            let v = match g.below(4) {
                0 => format!("{old}X"),
                1 => format!(" {old}\n"),
                2 => old.repeat(3),
                _ => BAD_VALUES[g.below(BAD_VALUES.len())].to_owned(),
            };
            el.kids = if v.is_empty() { vec![] } else { vec![N::T(v)] };
        }
        "wrong namespace" => {
            let p = pick(g, &all);
            at(root, &p).ns = "urn:spocgw:other".into();
        }
        "rename element" => {
            let p = pick(g, &all);
            let e = at(root, &p);
            e.local = format!("{}X", e.local);
        }
        "unknown attribute" => {
            let p = pick(g, &all);
            at(root, &p).attrs.push(("unexpected".into(), "1".into()));
        }
        "text in element content" => {
            let inner: Vec<_> = all.iter().filter(|p| at(&mut root.clone(), p).text().is_none()).cloned().collect();
            if inner.is_empty() {
                return false;
            }
            let p = pick(g, &inner);
            at(root, &p).kids.insert(0, N::T("junk".into()));
        }
        "empty element" => {
            let p = pick(g, &all);
            at(root, &p).kids.clear();
        }
        "whitespace between elements" => {
            let inner: Vec<_> = all.iter().filter(|p| at(&mut root.clone(), p).text().is_none()).cloned().collect();
            if inner.is_empty() {
                return false;
            }
            let p = pick(g, &inner);
            let e = at(root, &p);
            let n = e.kids.len();
            e.kids.insert(g.below(n + 1), N::T("\n  \t".into()));
        }
        "base64 stray character" => {
            let b64: Vec<_> = all
                .iter()
                .filter(|p| {
                    let mut r = root.clone();
                    let e = at(&mut r, p);
                    matches!(e.local.as_str(), "Data" | "certificate" | "certificateRequest") && e.text().is_some()
                })
                .cloned()
                .collect();
            if b64.is_empty() {
                return false;
            }
            let p = pick(g, &b64);
            let e = at(root, &p);
            let mut t = e.text().unwrap_or("").to_owned();
            let pos = g.below(t.len().max(1));
            t.insert(pos.min(t.len()), '!');
            e.kids = vec![N::T(t)];
        }
        _ => return false,
    }
    true
}
