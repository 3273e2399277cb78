//! A policy bundle: the Cedar schema, the policies (every one with an `@id`), the entity data,
//! `routes.toml` (rates, minimised fields, time zone) and the test cases, loaded and checked as
//! a whole. A bundle that does not parse, does not validate against its schema, or fails its
//! own tests is never used.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use cedar_policy::{Entities, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use serde::Deserialize;

/// The files of a bundle, by their names relative to the bundle directory.
pub const SCHEMA_FILE: &str = "spocgw.cedarschema";
pub const ENTITIES_FILE: &str = "entities.json";
pub const ROUTES_FILE: &str = "routes.toml";
pub const SIGNATURE_FILE: &str = crate::signed::SIGNATURE_FILE;

/// The default bundle (`policies/`), compiled in.
pub const EMBEDDED: &[(&str, &str)] = &[
    (SCHEMA_FILE, include_str!("../../policies/spocgw.cedarschema")),
    ("access.cedar", include_str!("../../policies/access.cedar")),
    ("minimisation.cedar", include_str!("../../policies/minimisation.cedar")),
    (ENTITIES_FILE, include_str!("../../policies/entities.json")),
    (ROUTES_FILE, include_str!("../../policies/routes.toml")),
    ("tests/default.toml", include_str!("../../policies/tests/default.toml")),
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("policy validation against {SCHEMA_FILE} failed: {0}")]
    Validation(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("the bundle's own tests fail: {0}")]
    Tests(String),
}

fn invalid(file: &str, reason: impl std::fmt::Display) -> BundleError {
    BundleError::Invalid { file: file.to_owned(), reason: reason.to_string() }
}

/// `routes.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    #[serde(default)]
    pub rate: BTreeMap<String, Rate>,
    /// Operation -> reply fields (paths below the reply element) that minimisation rules decide.
    #[serde(default)]
    pub minimise: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub time: TimeZone,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per second per client certificate.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeZone {
    /// `+01:00`, `-05:30`, `Z`.
    pub utc_offset: String,
}

impl Default for TimeZone {
    fn default() -> Self {
        Self { utc_offset: "Z".into() }
    }
}

/// Seconds east of UTC for `+hh:mm` / `-hh:mm` / `Z`.
pub fn parse_offset(s: &str) -> Option<i32> {
    if s == "Z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 || h.to_string().len() > 2 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// A loaded, checked bundle.
pub struct Bundle {
    /// Where it came from (`embedded` for the compiled-in default).
    pub origin: String,
    /// SHA-256 over the canonical form of every file (see [`canonical_digest`]).
    pub digest: String,
    pub schema: Schema,
    pub policies: PolicySet,
    pub entities: Entities,
    pub routes: RoutesFile,
    pub utc_offset: i32,
    /// The test cases' source, kept to run them at load and for `policy test`.
    pub tests: Vec<(String, String)>,
    /// Policy IDs in the order they were written.
    pub policy_ids: Vec<String>,
    /// Decisions already made with this bundle (see [`super::cache`]).
    pub cache: super::cache::DecisionCache,
}

/// The bundle's digest: the one every signed bundle has (the signature file left out).
pub use crate::signed::canonical_digest;

/// Reads the bundle files of `dir`: the schema, `*.cedar`, entities, routes, `tests/*.toml`,
/// and the signature if present.
///
/// # Errors
/// A file that cannot be read, or a bundle file in an unexpected place.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    let io = |path: &Path, e: std::io::Error| BundleError::Io { path: path.to_path_buf(), reason: e.to_string() };
    let mut files = Vec::new();
    let mut list = |sub: &str, pred: &dyn Fn(&str) -> bool| -> Result<(), BundleError> {
        let d = if sub.is_empty() { dir.to_path_buf() } else { dir.join(sub) };
        if !d.is_dir() {
            return Ok(());
        }
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let entry = entry.map_err(|e| io(&d, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && pred(&name) {
                let bytes = std::fs::read(entry.path()).map_err(|e| io(&entry.path(), e))?;
                let rel = if sub.is_empty() { name } else { format!("{sub}/{name}") };
                files.push((rel, bytes));
            }
        }
        Ok(())
    };
    list("", &|n| {
        n == SCHEMA_FILE || n == ENTITIES_FILE || n == ROUTES_FILE || n == SIGNATURE_FILE || n.ends_with(".cedar")
    })?;
    list("tests", &|n| n.ends_with(".toml"))?;
    if !files.iter().any(|(n, _)| n == SCHEMA_FILE) {
        return Err(BundleError::Io { path: dir.join(SCHEMA_FILE), reason: "missing".into() });
    }
    Ok(files)
}

impl Bundle {
    /// Loads the bundle in `dir`.
    ///
    /// # Errors
    /// As [`read_dir`] and [`Bundle::from_files`].
    pub fn load_dir(dir: &Path) -> Result<Bundle, BundleError> {
        let files = read_dir(dir)?;
        Bundle::from_files(&dir.display().to_string(), &files)
    }

    /// The compiled-in default bundle.
    ///
    /// # Errors
    /// As [`Bundle::from_files`] (a defect of the build: the default bundle is tested).
    pub fn embedded() -> Result<Bundle, BundleError> {
        let files: Vec<(String, Vec<u8>)> =
            EMBEDDED.iter().map(|(n, t)| (n.to_string(), t.as_bytes().to_vec())).collect();
        Bundle::from_files("embedded", &files)
    }

    /// Parses and checks a bundle given as (relative name, bytes). Its tests are run.
    ///
    /// # Errors
    /// A file that is not UTF-8 or does not parse, a policy without an `@id` or with one used
    /// twice, policies that do not validate against the schema, bad entity data or routes, or a
    /// bundle test that fails.
    pub fn from_files(origin: &str, files: &[(String, Vec<u8>)]) -> Result<Bundle, BundleError> {
        let text = |name: &str| -> Result<Option<&str>, BundleError> {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| std::str::from_utf8(b).map_err(|_| invalid(name, "not UTF-8")))
                .transpose()
        };
        let schema_text = text(SCHEMA_FILE)?.ok_or_else(|| invalid(SCHEMA_FILE, "missing"))?;
        let (schema, _warnings) =
            Schema::from_cedarschema_str(schema_text).map_err(|e| invalid(SCHEMA_FILE, format!("{e:?}")))?;

        let (policies, policy_ids) = policy_files(files)?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| format!("{e}")).collect();
            return Err(BundleError::Validation(errors.join("; ")));
        }
        let entities_text = text(ENTITIES_FILE)?.unwrap_or("[]");
        let entities = Entities::from_json_str(entities_text, Some(&schema))
            .map_err(|e| invalid(ENTITIES_FILE, format!("{e}")))?;
        let (routes, utc_offset) = routes_file(text(ROUTES_FILE)?)?;
        let mut tests: Vec<(String, String)> = files
            .iter()
            .filter(|(n, _)| n.starts_with("tests/"))
            .map(|(n, b)| (n.clone(), String::from_utf8_lossy(b).into_owned()))
            .collect();
        tests.sort();
        let cache = super::cache::DecisionCache::for_policies(&policies);
        let bundle = Bundle {
            cache,
            origin: origin.to_owned(),
            digest: canonical_digest(files),
            schema,
            policies,
            entities,
            routes,
            utc_offset,
            tests,
            policy_ids,
        };
        let report = super::cases::run_all(&bundle, None).map_err(BundleError::Tests)?;
        if report.failed > 0 {
            return Err(BundleError::Tests(report.failures.join("; ")));
        }
        Ok(bundle)
    }
}

/// The `*.cedar` files, in name order, each policy in its file's order under its `@id`
/// (unique across the bundle).
fn policy_files(files: &[(String, Vec<u8>)]) -> Result<(PolicySet, Vec<String>), BundleError> {
    let mut policies = PolicySet::new();
    let mut policy_ids = Vec::new();
    let mut cedar: Vec<&(String, Vec<u8>)> = files.iter().filter(|(n, _)| n.ends_with(".cedar")).collect();
    cedar.sort_by(|a, b| a.0.cmp(&b.0));
    if cedar.is_empty() {
        return Err(invalid("*.cedar", "no policy files"));
    }
    let mut seen = HashSet::new();
    for (name, bytes) in cedar {
        let src = std::str::from_utf8(bytes).map_err(|_| invalid(name, "not UTF-8"))?;
        let set: PolicySet = src.parse().map_err(|e| invalid(name, format!("{e}")))?;
        // Keep the file's order: sort the parsed policies by their position in the text.
        let mut parsed: Vec<_> = set.policies().collect();
        parsed.sort_by_key(|p| p.id().to_string().trim_start_matches("policy").parse::<usize>().unwrap_or(0));
        for p in parsed {
            let Some(id) = p.annotation("id") else {
                return Err(invalid(name, "every policy needs an @id(\"...\") annotation"));
            };
            if !seen.insert(id.to_owned()) {
                return Err(invalid(name, format!("@id {id:?} is used twice")));
            }
            policies.add(p.new_id(PolicyId::new(id))).map_err(|e| invalid(name, e))?;
            policy_ids.push(id.to_owned());
        }
    }
    Ok((policies, policy_ids))
}

/// `routes.toml` (defaults when absent): rates for known routes only, each at least 1; the
/// local time's offset.
fn routes_file(text: Option<&str>) -> Result<(RoutesFile, i32), BundleError> {
    let routes: RoutesFile = match text {
        Some(t) => toml::from_str(t).map_err(|e| invalid(ROUTES_FILE, e.message()))?,
        None => RoutesFile::default(),
    };
    for (route, r) in &routes.rate {
        if crate::config::RouteName::parse(route).is_none() {
            return Err(invalid(
                ROUTES_FILE,
                format!("[rate.{route}]: unknown route ({})", crate::config::RouteName::list()),
            ));
        }
        if r.per_second == 0 || r.burst == 0 {
            return Err(invalid(ROUTES_FILE, format!("[rate.{route}]: per_second and burst must be at least 1")));
        }
    }
    let utc_offset = parse_offset(&routes.time.utc_offset)
        .ok_or_else(|| invalid(ROUTES_FILE, format!("[time] utc_offset {:?} is not +hh:mm", routes.time.utc_offset)))?;
    Ok((routes, utc_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_bundle_loads_and_passes_its_tests() {
        let b = Bundle::embedded().unwrap();
        assert!(b.policy_ids.contains(&"verify-fingerprint-by-border-verifiers".to_owned()));
        assert_eq!(b.digest.len(), 64);
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+01:00"), Some(3600));
        assert_eq!(parse_offset("-05:30"), Some(-19800));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("01:00"), None);
    }
}
