//! Service descriptions: the WSDLs of the police routes and the schemas they import, served on
//! the police listener at `GET <route>?wsdl` and `GET <route>?xsd=NAME` (mutual TLS as for
//! everything else), with the service address set to the listener's public URL. The shipped
//! files (`policies/wsdl/`) import the schemas beside them (`../schemas/NAME`); served, they
//! import them from the gateway (`?xsd=NAME`, resolved against the WSDL's own URL).

use bytes::Bytes;

/// The WSDL of each route that has one: (route path, file name, text).
pub const SHIPPED: &[(&str, &str, &str)] = &[
    ("/bio/v1", "bio-v1.wsdl", include_str!("../../policies/wsdl/bio-v1.wsdl")),
    ("/spoc/csn369791", "csn369791.wsdl", include_str!("../../policies/wsdl/csn369791.wsdl")),
];

/// The address the shipped files name, replaced by the public URL.
const PLACEHOLDER: &str = "https://localhost";

/// The documents, rendered once.
pub struct Documents {
    wsdl: Vec<(&'static str, Bytes)>,
    schemas: Vec<(String, Bytes)>,
}

/// A WSDL with its service address at `base` and its imports at `import(NAME)`.
pub fn render(wsdl: &str, base: &str, import: impl Fn(&str) -> String) -> String {
    let mut out =
        wsdl.replace(&format!("location=\"{PLACEHOLDER}/"), &format!("location=\"{}/", base.trim_end_matches('/')));
    while let Some(at) = out.find("schemaLocation=\"../schemas/") {
        let start = at + "schemaLocation=\"".len();
        let Some(len) = out[start..].find('"') else { break };
        let name = out[start + "../schemas/".len()..start + len].to_owned();
        out.replace_range(start..start + len, &import(&name));
    }
    out
}

impl Documents {
    /// The shipped WSDLs for a listener reached at `public_url`, and `schemas` (file name, text).
    pub fn new(public_url: &str, schemas: Vec<(String, String)>) -> Self {
        let wsdl = SHIPPED
            .iter()
            .map(|(path, _, text)| (*path, Bytes::from(render(text, public_url, |name| format!("?xsd={name}")))))
            .collect();
        let schemas = schemas.into_iter().map(|(n, t)| (n, Bytes::from(t))).collect();
        Self { wsdl, schemas }
    }

    /// The document a `GET` of `path` with `query` asks for, if it is one.
    pub fn get(&self, path: &str, query: Option<&str>) -> Option<Bytes> {
        let query = query?;
        if !self.wsdl.iter().any(|(p, _)| *p == path) {
            return None;
        }
        if query.eq_ignore_ascii_case("wsdl") {
            return self.wsdl.iter().find(|(p, _)| *p == path).map(|(_, b)| b.clone());
        }
        let name = query.strip_prefix("xsd=")?;
        self.schemas.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_and_the_imports_are_the_gateways() {
        let d = Documents::new("https://gw.example:8443", vec![("bio-v1.xsd".into(), "<xs:schema/>".into())]);
        let w = String::from_utf8(d.get("/bio/v1", Some("wsdl")).unwrap().to_vec()).unwrap();
        assert!(w.contains("location=\"https://gw.example:8443/bio/v1\""), "{w}");
        assert!(w.contains("schemaLocation=\"?xsd=bio-v1.xsd\"") && w.contains("schemaLocation=\"?xsd=fault.xsd\""));
        assert!(!w.contains("localhost") && !w.contains("../schemas"));
        assert_eq!(d.get("/bio/v1", Some("xsd=bio-v1.xsd")).as_deref(), Some(&b"<xs:schema/>"[..]));
        assert!(d.get("/bio/v1", Some("xsd=../../etc/passwd")).is_none());
        assert!(d.get("/bio/v1", None).is_none());
        assert!(d.get("/admin", Some("wsdl")).is_none());
        assert!(d.get("/spoc/csn369791", Some("WSDL")).is_some());
    }
}
