//! The schemas the gateway validates with, and the service descriptions that import them: the
//! ones compiled in, or every `*.xsd` of `xml.schemas`, reloaded when that directory changes. A
//! new set comes into force whole, once it compiled and still declares every header entry the
//! routes let through; one that does not leaves the set in force and says why (log, audit
//! record, metric, `/readyz`), and is not tried again until the files change again.

use std::path::{Path, PathBuf};

use super::routes::RouteTable;
use super::wsdl::Documents;
use crate::reload::Reloadable;
use crate::xml::xsd::{EMBEDDED, Schema};

/// One set of schemas, compiled, with the documents served from it.
pub struct Compiled {
    pub schema: Schema,
    pub documents: Documents,
    /// SHA-256 over the files' names and contents.
    digest: String,
}

/// Why a set of schemas cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemasError {
    #[error("{0}")]
    Schema(String),
    /// A header entry route `route` lets through that no schema declares.
    #[error("xml.headers.{route}: no schema declares the header entry {name} globally, so it cannot be validated")]
    UndeclaredHeader { route: &'static str, name: String },
}

/// The schemas in force, and where they come from.
pub struct Schemas {
    /// None: the schemas compiled in (they never change).
    dir: Option<PathBuf>,
    public_url: String,
    state: Reloadable<Compiled>,
}

/// The `*.xsd` files of `dir` as (file name, text), in name order, and their digest.
fn read_dir(dir: &Path) -> Result<(Vec<(String, String)>, String), SchemasError> {
    let read = crate::xml::xsd::read_dir(dir).map_err(|e| SchemasError::Schema(e.to_string()))?;
    let mut files = Vec::new();
    let mut all = Vec::new();
    for (path, text) in read {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        all.extend_from_slice(name.as_bytes());
        all.push(0);
        all.extend_from_slice(text.as_bytes());
        all.push(0);
        files.push((name, text));
    }
    Ok((files, crate::encoding::sha256_hex(&all)))
}

/// Compiles `files` and checks them against the routes.
fn compile(
    files: Vec<(String, String)>,
    digest: String,
    public_url: &str,
    routes: &RouteTable,
) -> Result<Compiled, SchemasError> {
    let sources: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let schema = Schema::compile(&sources).map_err(|e| SchemasError::Schema(e.to_string()))?;
    if let Some((route, name)) = routes.undeclared_header(&schema) {
        return Err(SchemasError::UndeclaredHeader { route, name });
    }
    Ok(Compiled { schema, documents: Documents::new(public_url, files), digest })
}

impl Schemas {
    /// The schemas of `dir` (the ones compiled in when None), with the WSDLs served under
    /// `public_url`.
    ///
    /// # Errors
    /// Why the schemas cannot be read or compiled, or a header entry a route lets through that
    /// they do not declare.
    pub fn load(dir: Option<&Path>, public_url: &str, routes: &RouteTable) -> Result<Self, SchemasError> {
        let (files, digest) = match dir {
            Some(d) => read_dir(d)?,
            None => (EMBEDDED.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect(), "embedded".to_owned()),
        };
        let compiled = compile(files, digest, public_url, routes)?;
        Ok(Self {
            dir: dir.map(Path::to_path_buf),
            public_url: public_url.to_owned(),
            state: Reloadable::new(compiled),
        })
    }

    /// The set in force (cheap: no reference count taken).
    pub fn current(&self) -> arc_swap::Guard<std::sync::Arc<Compiled>> {
        self.state.peek()
    }

    /// Whether the schemas come from a directory (and so can change).
    pub fn reloadable(&self) -> bool {
        self.dir.is_some()
    }

    /// Compiles the directory again if its files changed: Some(Ok) when a new set is in force,
    /// Some(Err) when it was refused (the set in force stays), None when nothing changed (or
    /// the refused files did not change either).
    pub fn reload_if_changed(&self, routes: &RouteTable) -> Option<Result<(), SchemasError>> {
        let dir = self.dir.as_ref()?;
        let read = read_dir(dir);
        let digest = match &read {
            Ok((_, d)) => d.clone(),
            Err(e) => crate::encoding::sha256_hex(e.to_string().as_bytes()),
        };
        if digest == self.state.peek().digest || self.state.refused().is_some_and(|(d, _)| d == digest) {
            return None;
        }
        match read.and_then(|(files, digest)| compile(files, digest, &self.public_url, routes)) {
            Ok(compiled) => {
                self.state.put(compiled);
                Some(Ok(()))
            }
            Err(e) => {
                self.state.refuse(digest, e.to_string());
                Some(Err(e))
            }
        }
    }

    /// `/readyz`'s line: the set in force, and a refused reload (the previous set serves, so
    /// the gateway stays ready).
    pub fn status(&self) -> (bool, String) {
        let digest = &self.state.peek().digest;
        let short = &digest[..digest.len().min(16)];
        match self.state.refused() {
            Some((_, why)) => (true, format!("schemas: reload-failed, previous set still in force ({short}): {why}\n")),
            None => (true, format!("schemas: ok ({short})\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::{RouteLimits, XmlConfig};

    /// A changed directory comes into force whole; a broken one is refused, the set in force
    /// stays and says why, and the same broken files are not tried again.
    #[test]
    fn a_changed_directory_is_reloaded_whole_or_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, text) in EMBEDDED {
            std::fs::write(tmp.path().join(name), text).unwrap();
        }
        let routes = RouteTable::new(&toml::from_str::<RouteLimits>("").unwrap(), &XmlConfig::default());
        let s = Schemas::load(Some(tmp.path()), "https://gw.test", &routes).unwrap();
        assert!(s.reload_if_changed(&routes).is_none());
        let extra = r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:extra"><xs:element name="Extra" type="xs:string"/></xs:schema>"#;
        std::fs::write(tmp.path().join("extra.xsd"), extra).unwrap();
        assert_eq!(s.reload_if_changed(&routes), Some(Ok(())));
        assert!(s.current().schema.global("urn:extra", "Extra").is_some());
        std::fs::write(tmp.path().join("extra.xsd"), "<xs:schema").unwrap();
        assert!(matches!(s.reload_if_changed(&routes), Some(Err(_))));
        assert!(s.current().schema.global("urn:extra", "Extra").is_some());
        assert!(s.status().1.contains("reload-failed"), "{}", s.status().1);
        assert!(s.reload_if_changed(&routes).is_none());
    }
}
