//! Where schemas come from: the ones shipped with the gateway (compiled in), or every `*.xsd`
//! of a directory; and their compilation into one [`Schema`].

use std::path::Path;

use super::{Compiler, Schema, SchemaError, document};

/// The schemas shipped with the gateway (`policies/schemas/`), compiled in.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("bio-v1.xsd", include_str!("../../../policies/schemas/bio-v1.xsd")),
    ("csn369791.xsd", include_str!("../../../policies/schemas/csn369791.xsd")),
    ("fault.xsd", include_str!("../../../policies/schemas/fault.xsd")),
];

impl Schema {
    /// The global element named (ns, local).
    pub fn global(&self, ns: &str, local: &str) -> Option<usize> {
        // A handful of globals: a scan beats building a key.
        self.globals.iter().find(|((n, l), _)| l == local && n == ns).map(|(_, &i)| i)
    }

    /// Loads every `*.xsd` file of `dir`.
    ///
    /// # Errors
    /// A [`SchemaError`]: the directory cannot be read or has no `.xsd` files, or as
    /// [`Schema::compile`].
    pub fn load_dir(dir: &Path) -> Result<Schema, SchemaError> {
        let sources: Vec<(String, String)> =
            read_dir(dir)?.into_iter().map(|(p, t)| (p.display().to_string(), t)).collect();
        let refs: Vec<(&str, &str)> = sources.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Schema::compile(&refs)
    }

    /// The embedded default schemas.
    ///
    /// # Errors
    /// As [`Schema::compile`] (a defect of the build: the shipped schemas are tested).
    pub fn embedded() -> Result<Schema, SchemaError> {
        Schema::compile(EMBEDDED)
    }

    /// Compiles schema sources given as (file name, text).
    ///
    /// # Errors
    /// A [`SchemaError`] naming the file and what it uses that the compiler does not support or
    /// that is wrong (an unknown type, a duplicate name, an import outside the set).
    pub fn compile(sources: &[(&str, &str)]) -> Result<Schema, SchemaError> {
        let mut docs = Vec::new();
        for (name, text) in sources {
            let root =
                document::parse(text).map_err(|m| SchemaError { file: name.to_string(), line: 0, message: m })?;
            docs.push((name.to_string(), root));
        }
        let mut c = Compiler::default();
        c.run(&docs)?;
        Ok(c.schema)
    }
}

/// Every `*.xsd` file of `dir`, in name order, with its text.
///
/// # Errors
/// A [`SchemaError`]: the directory or a file cannot be read, or there is no `.xsd` file.
pub fn read_dir(dir: &Path) -> Result<Vec<(std::path::PathBuf, String)>, SchemaError> {
    let err = |m: String| SchemaError { file: dir.display().to_string(), line: 0, message: m };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot read the directory: {e}")))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xsd"))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(err("no .xsd files".into()));
    }
    names
        .into_iter()
        .map(|p| match std::fs::read_to_string(&p) {
            Ok(text) => Ok((p, text)),
            Err(e) => Err(SchemaError { file: p.display().to_string(), line: 0, message: e.to_string() }),
        })
        .collect()
}
