//! Policy test cases (`policies/tests/*.toml`): who asks (certificate attributes, or a
//! certificate file), what (operation or reply field, route), with which facts; the expected
//! decision and, optionally, the policies expected to decide. Run at every load (a bundle whose
//! tests fail is refused) and by `spocgw policy test`.

use std::path::Path;

use serde::Deserialize;

use super::bundle::Bundle;
use super::engine::{Caller, Decision};
use crate::xml::facts::MessageFacts;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// Certificate attributes; or `cert`, a PEM file relative to the test file.
    #[serde(default)]
    pub principal: Option<Principal>,
    #[serde(default)]
    pub cert: Option<String>,
    /// An operation (`VerifyFingerprintRequest`...) or `ReceiveField`.
    pub action: String,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub facts: Facts,
    /// `allow` or `deny`.
    pub expect: String,
    /// When given, exactly these policies must decide.
    #[serde(default)]
    pub policies: Option<Vec<String>>,
    /// Seconds since the epoch (default: 2026-01-05T10:00:00Z, a Monday morning).
    #[serde(default)]
    pub time: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    #[serde(default)]
    pub cn: String,
    #[serde(default)]
    pub o: String,
    #[serde(default)]
    pub ou: String,
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Facts {
    pub purpose: Option<String>,
    pub case_reference: Option<String>,
    pub border_crossing_point: Option<String>,
    pub issuing_state: Option<String>,
    pub officer_id: Option<String>,
    pub authority: Option<String>,
    pub caller_id: Option<String>,
    /// A CSN 36 9791 `statusInfo` or `result`.
    pub status: Option<String>,
    #[serde(default)]
    pub chip_fingerprints: u32,
    #[serde(default)]
    pub live_fingerprints: u32,
    #[serde(default)]
    pub formats: Vec<String>,
}

impl Facts {
    pub fn to_message_facts(&self) -> MessageFacts {
        MessageFacts {
            purpose: self.purpose.clone(),
            case_reference: self.case_reference.clone(),
            border_crossing_point: self.border_crossing_point.clone(),
            issuing_state: self.issuing_state.clone(),
            officer_id: self.officer_id.clone(),
            authority: self.authority.clone(),
            caller_id: self.caller_id.clone(),
            result: self.status.clone(),
            chip_fingerprints: self.chip_fingerprints,
            live_fingerprints: self.live_fingerprints,
            formats: self.formats.iter().filter_map(|f| crate::xml::content::known_format(f)).collect(),
            ..MessageFacts::default()
        }
    }
}

pub const DEFAULT_TIME: i64 = 1_767_607_200;

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    pub lines: Vec<String>,
}

/// Evaluates one case.
///
/// # Errors
/// A case whose caller certificate cannot be read, or whose request cannot be evaluated.
pub fn evaluate(bundle: &Bundle, case: &Case, base: Option<&Path>) -> Result<(Caller, Decision), String> {
    let caller = match (&case.principal, &case.cert) {
        (Some(p), None) => Caller {
            common_name: p.cn.clone(),
            organization: p.o.clone(),
            unit: p.ou.clone(),
            fingerprint: if p.fingerprint.is_empty() { "0".repeat(64) } else { p.fingerprint.clone() },
            issuer: String::new(),
        },
        (None, Some(cert)) => {
            let path = base.map(|b| b.join(cert)).unwrap_or_else(|| cert.into());
            let certs = crate::tls::load_certs(&path).map_err(|e| e.to_string())?;
            let peer = crate::tls::PeerIdentity::from_der(&certs[0]).map_err(|e| e.to_string())?;
            Caller::from_peer(&peer)
        }
        _ => return Err("give either principal or cert".into()),
    };
    let facts = case.facts.to_message_facts();
    let time = case.time.unwrap_or(DEFAULT_TIME);
    let decision = if case.action == "ReceiveField" {
        let field = case.field.as_deref().ok_or("ReceiveField needs a field")?;
        bundle.may_receive(&caller, field, &facts, time)
    } else {
        let route = case.route.as_deref().ok_or("an operation needs a route")?;
        bundle.decide(&caller, &case.action, route, &facts, time)
    };
    Ok((caller, decision))
}

/// Runs every test file of the bundle; `base` resolves `cert` paths (the bundle directory).
///
/// # Errors
/// A test file that does not parse, or a case that cannot be evaluated (failed cases are counted in
/// the report, not errors).
pub fn run_all(bundle: &Bundle, base: Option<&Path>) -> Result<Report, String> {
    let mut report = Report::default();
    for (name, text) in &bundle.tests {
        let file: File = toml::from_str(text).map_err(|e| format!("{name}: {}", e.message()))?;
        let dir = base.map(|b| b.join("tests"));
        for case in &file.cases {
            let (_, d) = evaluate(bundle, case, dir.as_deref()).map_err(|e| format!("{name}: {}: {e}", case.name))?;
            let want_allow = match case.expect.as_str() {
                "allow" => true,
                "deny" => false,
                other => return Err(format!("{name}: {}: expect must be allow or deny, not {other:?}", case.name)),
            };
            let mut problems = Vec::new();
            if d.allowed != want_allow {
                problems.push(format!("expected {}, got {}", case.expect, if d.allowed { "allow" } else { "deny" }));
            }
            if let Some(want) = &case.policies {
                let mut got = d.policies.clone();
                let mut want = want.clone();
                got.sort();
                want.sort();
                if got != want {
                    problems.push(format!("expected policies {want:?}, got {got:?}"));
                }
            }
            if problems.is_empty() {
                report.passed += 1;
                report.lines.push(format!("ok    {name}: {}", case.name));
            } else {
                report.failed += 1;
                let line = format!("{name}: {}: {}", case.name, problems.join(", "));
                report.lines.push(format!("FAIL  {line}"));
                report.failures.push(line);
            }
        }
    }
    Ok(report)
}
