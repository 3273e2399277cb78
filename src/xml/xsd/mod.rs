//! The XSD compiler: `policies/schemas/*.xsd` into deterministic, compiled content models.
//!
//! Supported (XSD 1.0 subset): global and local elements and `ref`; named and anonymous
//! complexType with sequence, choice or all (min/maxOccurs, `unbounded`), attributes (use,
//! default, fixed), simpleContent extension; targetNamespace and elementFormDefault; xs:import of
//! files in the same directory; simpleType restriction with pattern, enumeration, length,
//! min/maxLength, min/max Inclusive/Exclusive (numeric types), totalDigits, fractionDigits and
//! whiteSpace; the built-ins of [`simple::Builtin`]. Anything else is refused at load with
//! `file:line` and the construct's name: nothing is skipped silently.

pub mod automaton;
pub mod base64;
pub mod document;
mod load;
pub mod regex;
pub mod restriction;
pub mod simple;

pub use load::{EMBEDDED, read_dir};

use std::collections::HashMap;
use std::path::Path;

use automaton::{Dfa, Particle};
use document::{Node, XS_NS};
use simple::{Builtin, SimpleType};

/// A schema problem, at `file:line`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SchemaError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ElementDecl {
    pub ns: String,
    pub local: String,
    pub ty: TypeRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeRef {
    Simple(usize),
    Complex(usize),
}

#[derive(Debug, Clone)]
pub struct ComplexType {
    pub name: String,
    pub content: Content,
    pub attributes: Vec<AttributeUse>,
}

#[derive(Debug, Clone)]
pub enum Content {
    Empty,
    Simple(usize),
    Elements(Dfa),
    /// xs:all: each member at most once; `optional` when the group itself has minOccurs 0.
    All {
        members: Vec<AllMember>,
        optional: bool,
    },
}

#[derive(Debug, Clone)]
pub struct AllMember {
    pub decl: usize,
    pub ns: String,
    pub local: String,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct AttributeUse {
    pub name: String,
    pub ty: usize,
    pub required: bool,
    pub fixed: Option<String>,
}

/// A compiled set of schemas.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub decls: Vec<ElementDecl>,
    pub globals: HashMap<(String, String), usize>,
    pub complex: Vec<ComplexType>,
    pub simple: Vec<SimpleType>,
}

/// Where a named type is defined.
#[derive(Clone, Copy)]
struct Named<'a> {
    file: usize,
    node: &'a Node,
    tns: &'a str,
    qualified: bool,
}

#[derive(Default)]
struct Compiler<'a> {
    schema: Schema,
    files: Vec<String>,
    simple_named: HashMap<(String, String), Named<'a>>,
    complex_named: HashMap<(String, String), Named<'a>>,
    simple_done: HashMap<(String, String), usize>,
    complex_done: HashMap<(String, String), usize>,
    /// Simple types being compiled (cycle detection).
    in_progress: Vec<(String, String)>,
}

fn parse_occurs(v: Option<&str>, default: u32) -> Result<Option<u32>, String> {
    match v {
        None => Ok(Some(default)),
        Some("unbounded") => Ok(None),
        Some(s) => s.trim().parse::<u32>().map(Some).map_err(|_| format!("bad occurrence value {s:?}")),
    }
}

impl<'a> Compiler<'a> {
    fn err(&self, file: usize, node: &Node, message: impl Into<String>) -> SchemaError {
        SchemaError {
            file: self.files.get(file).cloned().unwrap_or_default(),
            line: node.line,
            message: message.into(),
        }
    }

    fn unsupported(&self, file: usize, node: &Node) -> SchemaError {
        let what =
            if node.ns == XS_NS { format!("xs:{}", node.local) } else { format!("{{{}}}{}", node.ns, node.local) };
        self.err(file, node, format!("unsupported construct {what}"))
    }

    /// Refuses attributes outside `allowed` (namespace declarations are not attributes here).
    fn only_attrs(&self, file: usize, node: &Node, allowed: &[&str]) -> Result<(), SchemaError> {
        for (k, _) in &node.attrs {
            if !allowed.contains(&k.as_str()) && k != "id" {
                return Err(self.err(file, node, format!("unsupported attribute {k:?} on xs:{}", node.local)));
            }
        }
        Ok(())
    }

    /// Children other than annotations.
    fn content(node: &Node) -> impl Iterator<Item = &Node> {
        node.children.iter().filter(|c| !c.is_xs("annotation"))
    }

    fn run(&mut self, docs: &'a [(String, Node)]) -> Result<(), SchemaError> {
        self.files = docs.iter().map(|(n, _)| n.clone()).collect();
        let mut globals: Vec<(Named<'a>, &'a Node)> = Vec::new();
        let namespaces: Vec<String> =
            docs.iter().map(|(_, r)| r.attr("targetNamespace").unwrap_or("").to_owned()).collect();
        for (fi, (name, root)) in docs.iter().enumerate() {
            let qualified = self.schema_root(fi, root)?;
            let tns = root.attr("targetNamespace").unwrap_or("");
            for child in Self::content(root) {
                let named = Named { file: fi, node: child, tns, qualified };
                let key = |n: &Node| -> Result<(String, String), SchemaError> {
                    n.attr("name")
                        .map(|v| (tns.to_owned(), v.to_owned()))
                        .ok_or_else(|| self.err(fi, n, format!("global xs:{} without a name", n.local)))
                };
                match child.local.as_str() {
                    _ if child.ns != XS_NS => return Err(self.unsupported(fi, child)),
                    "import" => self.check_import(docs, &namespaces, fi, child)?,
                    "simpleType" => {
                        let k = key(child)?;
                        if self.simple_named.insert(k.clone(), named).is_some() || self.complex_named.contains_key(&k) {
                            return Err(self.err(fi, child, format!("type {:?} defined twice", k.1)));
                        }
                    }
                    "complexType" => {
                        let k = key(child)?;
                        if self.complex_named.insert(k.clone(), named).is_some() || self.simple_named.contains_key(&k) {
                            return Err(self.err(fi, child, format!("type {:?} defined twice", k.1)));
                        }
                    }
                    "element" => {
                        self.only_attrs(fi, child, &["name", "type"])?;
                        let k = key(child)?;
                        if self.schema.globals.contains_key(&k) {
                            return Err(self.err(fi, child, format!("element {:?} declared twice", k.1)));
                        }
                        // The declaration's type is filled in once every global is known.
                        self.schema.decls.push(ElementDecl {
                            ns: k.0.clone(),
                            local: k.1.clone(),
                            ty: TypeRef::Simple(0),
                        });
                        self.schema.globals.insert(k, self.schema.decls.len() - 1);
                        globals.push((named, child));
                    }
                    _ => return Err(self.unsupported(fi, child)),
                }
            }
            let _ = name;
        }
        for (named, node) in globals {
            let ty = self.element_type(named, node)?;
            let idx = self.schema.globals[&(named.tns.to_owned(), node.attr("name").unwrap_or("").to_owned())];
            self.schema.decls[idx].ty = ty;
        }
        // Named types nobody uses are still compiled: an error in them is an error.
        let simple: Vec<_> = self.simple_named.keys().cloned().collect();
        for k in simple {
            self.named_simple(&k)?;
        }
        let complex: Vec<_> = self.complex_named.keys().cloned().collect();
        for k in complex {
            self.named_complex(&k)?;
        }
        Ok(())
    }

    /// An `xs:schema` root and its attributes; whether its local elements are qualified.
    fn schema_root(&self, fi: usize, root: &Node) -> Result<bool, SchemaError> {
        if !root.is_xs("schema") {
            return Err(self.err(fi, root, "the root element is not xs:schema"));
        }
        self.only_attrs(
            fi,
            root,
            &["targetNamespace", "elementFormDefault", "attributeFormDefault", "version", "xml:lang"],
        )?;
        if root.attr("attributeFormDefault").is_some_and(|v| v != "unqualified") {
            return Err(self.err(fi, root, "attributeFormDefault=\"qualified\" is not supported"));
        }
        let qualified = match root.attr("elementFormDefault") {
            None | Some("unqualified") => false,
            Some("qualified") => true,
            Some(v) => return Err(self.err(fi, root, format!("bad elementFormDefault {v:?}"))),
        };
        Ok(qualified)
    }

    /// An `xs:import`: only of a file in the same set, with the namespace it declares.
    fn check_import(
        &self,
        docs: &[(String, Node)],
        namespaces: &[String],
        fi: usize,
        child: &Node,
    ) -> Result<(), SchemaError> {
        self.only_attrs(fi, child, &["namespace", "schemaLocation"])?;
        let ns = child.attr("namespace").unwrap_or("");
        let loc = child.attr("schemaLocation").unwrap_or("");
        let file_name = |p: &str| Path::new(p).file_name().map(|f| f.to_owned());
        let target = docs.iter().position(|(n, _)| file_name(n) == file_name(loc) && !loc.is_empty());
        match target {
            Some(t) if namespaces[t] == ns => {}
            Some(_) => {
                return Err(self.err(fi, child, format!("{loc} does not have targetNamespace {ns:?}")));
            }
            None => {
                return Err(self.err(
                    fi,
                    child,
                    format!("xs:import of {loc:?}: only files in the same schema directory can be imported"),
                ));
            }
        }
        Ok(())
    }

    /// The type of an element declaration: `type=`, or an anonymous child type.
    fn element_type(&mut self, at: Named<'a>, node: &'a Node) -> Result<TypeRef, SchemaError> {
        let children: Vec<&Node> = Self::content(node).collect();
        match (node.attr("type"), children.as_slice()) {
            (Some(t), []) => {
                let q =
                    node.resolve_qname(t).ok_or_else(|| self.err(at.file, node, format!("unknown prefix in {t:?}")))?;
                self.type_ref(at.file, node, &q)
            }
            (None, [c]) if c.is_xs("simpleType") => {
                self.only_attrs(at.file, c, &[])?;
                let st = self.simple_type(at, c, "anonymous")?;
                Ok(TypeRef::Simple(st))
            }
            (None, [c]) if c.is_xs("complexType") => {
                self.only_attrs(at.file, c, &["mixed"])?;
                let idx = self.schema.complex.len();
                self.schema.complex.push(ComplexType {
                    name: "anonymous".into(),
                    content: Content::Empty,
                    attributes: vec![],
                });
                let ct = self.complex_type(at, c, "anonymous")?;
                self.schema.complex[idx] = ct;
                Ok(TypeRef::Complex(idx))
            }
            (None, []) => Err(self.err(at.file, node, "an element without a type (xs:anyType) is not supported")),
            _ => Err(self.err(
                at.file,
                node,
                "an element has both a type attribute and an anonymous type, or several types",
            )),
        }
    }

    fn type_ref(&mut self, file: usize, node: &Node, q: &(String, String)) -> Result<TypeRef, SchemaError> {
        if q.0 == XS_NS {
            return self.builtin(file, node, &q.1).map(TypeRef::Simple);
        }
        if self.simple_named.contains_key(q) {
            return self.named_simple(q).map(TypeRef::Simple);
        }
        if self.complex_named.contains_key(q) {
            return self.named_complex(q).map(TypeRef::Complex);
        }
        Err(self.err(file, node, format!("unknown type {{{}}}{}", q.0, q.1)))
    }

    fn simple_ref(&mut self, file: usize, node: &Node, q: &(String, String)) -> Result<usize, SchemaError> {
        match self.type_ref(file, node, q)? {
            TypeRef::Simple(i) => Ok(i),
            TypeRef::Complex(_) => {
                Err(self.err(file, node, format!("{} is a complex type where a simple type is needed", q.1)))
            }
        }
    }

    fn builtin(&mut self, file: usize, node: &Node, local: &str) -> Result<usize, SchemaError> {
        let key = (XS_NS.to_owned(), local.to_owned());
        if let Some(&i) = self.simple_done.get(&key) {
            return Ok(i);
        }
        let b = Builtin::by_name(local)
            .ok_or_else(|| self.err(file, node, format!("unsupported built-in type xs:{local}")))?;
        self.schema.simple.push(SimpleType::builtin(&format!("xs:{local}"), b));
        let i = self.schema.simple.len() - 1;
        self.simple_done.insert(key, i);
        Ok(i)
    }

    fn named_simple(&mut self, q: &(String, String)) -> Result<usize, SchemaError> {
        if let Some(&i) = self.simple_done.get(q) {
            return Ok(i);
        }
        let named = self.simple_named[q];
        if self.in_progress.contains(q) {
            return Err(self.err(named.file, named.node, format!("type {} derives from itself", q.1)));
        }
        self.in_progress.push(q.clone());
        self.only_attrs(named.file, named.node, &["name"])?;
        let r = self.simple_type(named, named.node, &q.1);
        self.in_progress.pop();
        let i = r?;
        self.simple_done.insert(q.clone(), i);
        Ok(i)
    }

    fn named_complex(&mut self, q: &(String, String)) -> Result<usize, SchemaError> {
        if let Some(&i) = self.complex_done.get(q) {
            return Ok(i);
        }
        let named = self.complex_named[q];
        self.only_attrs(named.file, named.node, &["name", "mixed"])?;
        // Reserve the index first so recursive content models can refer to it.
        let idx = self.schema.complex.len();
        self.schema.complex.push(ComplexType { name: q.1.clone(), content: Content::Empty, attributes: vec![] });
        self.complex_done.insert(q.clone(), idx);
        let ct = self.complex_type(named, named.node, &q.1)?;
        self.schema.complex[idx] = ct;
        Ok(idx)
    }

    fn complex_type(&mut self, at: Named<'a>, node: &'a Node, name: &str) -> Result<ComplexType, SchemaError> {
        if node.attr("mixed").is_some_and(|m| m == "true" || m == "1") {
            return Err(self.err(at.file, node, "mixed content is not supported"));
        }
        let mut content = Content::Empty;
        let mut attributes = Vec::new();
        let mut seen_model = false;
        for c in Self::content(node) {
            if c.ns != XS_NS {
                return Err(self.unsupported(at.file, c));
            }
            match c.local.as_str() {
                "sequence" | "choice" if !seen_model && attributes.is_empty() => {
                    seen_model = true;
                    let p = self.particle(at, c)?;
                    let dfa = automaton::compile(&p).map_err(|m| self.err(at.file, c, m))?;
                    content = Content::Elements(dfa);
                }
                "all" if !seen_model && attributes.is_empty() => {
                    seen_model = true;
                    content = self.all_group(at, c)?;
                }
                "simpleContent" if !seen_model && attributes.is_empty() => {
                    seen_model = true;
                    self.only_attrs(at.file, c, &[])?;
                    let ext: Vec<&Node> = Self::content(c).collect();
                    let [ext] = ext.as_slice() else {
                        return Err(self.err(at.file, c, "xs:simpleContent needs one xs:extension"));
                    };
                    if !ext.is_xs("extension") {
                        return Err(self.unsupported(at.file, ext));
                    }
                    self.only_attrs(at.file, ext, &["base"])?;
                    let b = ext.attr("base").ok_or_else(|| self.err(at.file, ext, "xs:extension without a base"))?;
                    let q = ext
                        .resolve_qname(b)
                        .ok_or_else(|| self.err(at.file, ext, format!("unknown prefix in {b:?}")))?;
                    content = Content::Simple(self.simple_ref(at.file, ext, &q)?);
                    for a in Self::content(ext) {
                        attributes.push(self.attribute(at, a)?);
                    }
                }
                "attribute" => attributes.push(self.attribute(at, c)?),
                _ => return Err(self.unsupported(at.file, c)),
            }
        }
        for (i, a) in attributes.iter().enumerate() {
            if attributes[..i].iter().any(|b| b.name == a.name) {
                return Err(self.err(at.file, node, format!("attribute {:?} declared twice", a.name)));
            }
        }
        Ok(ComplexType { name: name.to_owned(), content, attributes })
    }

    fn attribute(&mut self, at: Named<'a>, a: &'a Node) -> Result<AttributeUse, SchemaError> {
        if !a.is_xs("attribute") {
            return Err(self.unsupported(at.file, a));
        }
        self.only_attrs(at.file, a, &["name", "type", "use", "default", "fixed"])?;
        let name =
            a.attr("name").ok_or_else(|| self.err(at.file, a, "xs:attribute without a name (ref is not supported)"))?;
        let children: Vec<&Node> = Self::content(a).collect();
        let ty = match (a.attr("type"), children.as_slice()) {
            (Some(t), []) => {
                let q = a.resolve_qname(t).ok_or_else(|| self.err(at.file, a, format!("unknown prefix in {t:?}")))?;
                self.simple_ref(at.file, a, &q)?
            }
            (None, [s]) if s.is_xs("simpleType") => self.simple_type(at, s, "anonymous")?,
            _ => return Err(self.err(at.file, a, "xs:attribute needs a type or one anonymous xs:simpleType")),
        };
        let required = match a.attr("use") {
            None | Some("optional") => false,
            Some("required") => true,
            Some(u) => return Err(self.err(at.file, a, format!("unsupported use {u:?}"))),
        };
        for key in ["default", "fixed"] {
            if let Some(v) = a.attr(key) {
                self.schema.simple[ty].check(v).map_err(|m| self.err(at.file, a, format!("{key} value: {m}")))?;
            }
        }
        let fixed = a.attr("fixed").map(|v| simple::normalize(v, self.schema.simple[ty].whitespace).into_owned());
        Ok(AttributeUse { name: name.to_owned(), ty, required, fixed })
    }

    fn occurs(&self, file: usize, n: &Node) -> Result<(u32, Option<u32>), SchemaError> {
        let min = parse_occurs(n.attr("minOccurs"), 1).map_err(|m| self.err(file, n, m))?;
        let max = parse_occurs(n.attr("maxOccurs"), 1).map_err(|m| self.err(file, n, m))?;
        let min = min.ok_or_else(|| self.err(file, n, "minOccurs cannot be unbounded"))?;
        Ok((min, max))
    }

    fn particle(&mut self, at: Named<'a>, n: &'a Node) -> Result<Particle, SchemaError> {
        if n.ns != XS_NS {
            return Err(self.unsupported(at.file, n));
        }
        match n.local.as_str() {
            "sequence" | "choice" => {
                self.only_attrs(at.file, n, &["minOccurs", "maxOccurs"])?;
                let (min, max) = self.occurs(at.file, n)?;
                let items = Self::content(n).map(|c| self.particle(at, c)).collect::<Result<Vec<_>, _>>()?;
                Ok(if n.local == "sequence" {
                    Particle::Sequence { items, min, max }
                } else {
                    Particle::Choice { items, min, max }
                })
            }
            "element" => {
                let (min, max) = self.occurs(at.file, n)?;
                let decl = self.local_element(at, n)?;
                let d = &self.schema.decls[decl];
                Ok(Particle::Element { decl, name: (d.ns.clone(), d.local.clone()), min, max })
            }
            _ => Err(self.unsupported(at.file, n)),
        }
    }

    /// A local element declaration (or a `ref` to a global one); returns its index.
    fn local_element(&mut self, at: Named<'a>, n: &'a Node) -> Result<usize, SchemaError> {
        if let Some(r) = n.attr("ref") {
            self.only_attrs(at.file, n, &["ref", "minOccurs", "maxOccurs"])?;
            let q = n.resolve_qname(r).ok_or_else(|| self.err(at.file, n, format!("unknown prefix in {r:?}")))?;
            return self
                .schema
                .globals
                .get(&q)
                .copied()
                .ok_or_else(|| self.err(at.file, n, format!("unknown element {r:?}")));
        }
        self.only_attrs(at.file, n, &["name", "type", "minOccurs", "maxOccurs"])?;
        let name = n.attr("name").ok_or_else(|| self.err(at.file, n, "xs:element needs a name or a ref"))?;
        let ns = if at.qualified { at.tns.to_owned() } else { String::new() };
        let idx = self.schema.decls.len();
        self.schema.decls.push(ElementDecl { ns, local: name.to_owned(), ty: TypeRef::Simple(0) });
        let ty = self.element_type(at, n)?;
        self.schema.decls[idx].ty = ty;
        Ok(idx)
    }

    fn all_group(&mut self, at: Named<'a>, n: &'a Node) -> Result<Content, SchemaError> {
        self.only_attrs(at.file, n, &["minOccurs", "maxOccurs"])?;
        let (min, max) = self.occurs(at.file, n)?;
        if min > 1 || max != Some(1) {
            return Err(self.err(at.file, n, "xs:all must have minOccurs 0 or 1 and maxOccurs 1"));
        }
        let mut members = Vec::new();
        for c in Self::content(n) {
            if !c.is_xs("element") {
                return Err(self.err(at.file, c, "xs:all may contain only xs:element"));
            }
            let (emin, emax) = self.occurs(at.file, c)?;
            if emin > 1 || emax != Some(1) {
                return Err(self.err(at.file, c, "elements in xs:all must have minOccurs 0 or 1 and maxOccurs 1"));
            }
            let decl = self.local_element(at, c)?;
            let d = &self.schema.decls[decl];
            if members.iter().any(|m: &AllMember| m.ns == d.ns && m.local == d.local) {
                return Err(self.err(at.file, c, format!("element {:?} twice in xs:all", d.local)));
            }
            members.push(AllMember { decl, ns: d.ns.clone(), local: d.local.clone(), required: emin == 1 });
        }
        if members.len() > 64 {
            return Err(self.err(at.file, n, "xs:all with more than 64 elements is not supported"));
        }
        Ok(Content::All { members, optional: min == 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_compile() {
        let s = Schema::embedded().unwrap();
        assert!(s.global("urn:spocgw:bio:1", "VerifyFingerprintRequest").is_some());
        assert!(s.global("http://namespaces.unmz.cz/csn369791", "SendCertificatesRequest").is_some());
    }

    fn compile_err(body: &str) -> String {
        let text = format!(
            "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" targetNamespace=\"urn:t\" xmlns:t=\"urn:t\">\n{body}\n</xs:schema>"
        );
        Schema::compile(&[("t.xsd", &text)]).unwrap_err().to_string()
    }

    #[test]
    fn unsupported_constructs_are_refused_with_file_and_line() {
        let e = compile_err(
            "<xs:element name=\"a\"><xs:complexType><xs:sequence><xs:any/></xs:sequence></xs:complexType></xs:element>",
        );
        assert!(e.starts_with("t.xsd:2:") && e.contains("xs:any"), "{e}");
        let e = compile_err("<xs:simpleType name=\"l\"><xs:list itemType=\"xs:string\"/></xs:simpleType>");
        assert!(e.contains("xs:list"), "{e}");
        let e = compile_err("<xs:element name=\"a\" type=\"xs:duration\"/>");
        assert!(e.contains("xs:duration"), "{e}");
        let e = compile_err("<xs:element name=\"a\" nillable=\"true\" type=\"xs:string\"/>");
        assert!(e.contains("nillable"), "{e}");
        let e = compile_err(
            "<xs:element name=\"a\"><xs:complexType><xs:sequence><xs:element name=\"b\" type=\"xs:string\" minOccurs=\"0\"/><xs:element name=\"b\" type=\"xs:int\"/></xs:sequence></xs:complexType></xs:element>",
        );
        assert!(e.contains("Unique Particle Attribution"), "{e}");
        let e = compile_err("<xs:element name=\"a\" type=\"t:missing\"/>");
        assert!(e.contains("unknown type"), "{e}");
    }
}
