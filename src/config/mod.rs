//! Configuration files, the part every stage shares: reading TOML with every problem reported
//! as one line that names the file, the key and what is wrong, and resolving the files a key
//! names. Each stage owns its configuration type; the gateway's `gateway.toml` model is
//! `gateway::config`. This module imports nothing of the crate.
//!
//! Unknown keys are refused (`deny_unknown_fields`), relative paths are resolved against the
//! directory of the file that names them, and every file a key names must exist when the
//! configuration is loaded: a gateway never starts half-configured.

mod route_name;
pub mod units;

pub use route_name::RouteName;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self { file: file.to_path_buf(), key: key.into(), problem: problem.to_string() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(f, "{}: key `{}`: {}", self.file.display(), self.key, self.problem)
        }
    }
}

/// Reads and parses a TOML file into `T`, naming the key at fault on error.
///
/// # Errors
/// A [`ConfigError`] naming the file and, for a parse error, the key at fault.
pub fn read_toml<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::new(file, "", format!("cannot read: {e}")))?;
    let de = toml::Deserializer::new(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let mut problem = inner.message().to_string();
        if let Some(span) = inner.span() {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            problem = format!("{problem} (line {line})");
        }
        // serde names the key a struct refused in the message, not in the path
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(file, key, problem)
    })
}

/// Joins a relative path to `base` and checks that the file exists.
///
/// # Errors
/// A [`ConfigError`] naming `key` when the file does not exist.
pub fn resolve_file(path: &mut PathBuf, base: &Path, file: &Path, key: &str) -> Result<(), ConfigError> {
    if path.is_relative() {
        *path = base.join(&*path);
    }
    match std::fs::metadata(&*path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::new(file, key, format!("{} is not a file", path.display()))),
        Err(e) => Err(ConfigError::new(file, key, format!("{}: {e}", path.display()))),
    }
}
