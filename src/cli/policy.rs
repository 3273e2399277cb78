//! `spocgw policy check|test|explain|sign`: the security officer's tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::policy::bundle::{self, Bundle};
use crate::policy::engine::local_time;
use crate::policy::{Caller, cases, signature};
use crate::xml::limits::Limits;
use crate::xml::validate::{Expect, validate};
use crate::xml::xsd::Schema;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse the bundle, validate it against its Cedar schema, run its tests, and lint it.
    Check {
        /// The policy bundle directory (*.cedar, the schema, routes.toml, tests/)
        dir: PathBuf,
    },
    /// Run the bundle's test cases (DIR/tests/*.toml) and print each result.
    Test {
        /// The policy bundle directory (its tests/*.toml cases)
        dir: PathBuf,
    },
    /// Show the decision for one request, the policies behind it, and what the engine saw.
    Explain {
        /// The policy bundle directory
        dir: PathBuf,
        /// The caller's certificate (PEM); or give --cn/--o/--ou.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The caller's certificate CN, without --cert
        #[arg(long, default_value = "")]
        cn: String,
        /// The caller's certificate O, without --cert
        #[arg(long, default_value = "")]
        o: String,
        /// The caller's certificate OU (the role policies test), without --cert
        #[arg(long, default_value = "")]
        ou: String,
        /// The request message (SOAP envelope or bare element); its operation and facts are used.
        #[arg(long)]
        request: Option<PathBuf>,
        /// Route (bio_v1, csn369791, csn369791_callback).
        #[arg(long, default_value = "bio_v1")]
        route: String,
        /// Ask about a reply field (e.g. Holder/Address) instead of the operation.
        #[arg(long)]
        field: Option<String>,
    },
    /// Sign the bundle: writes DIR/bundle.sig with the officer's P-256 key (PKCS#8 PEM).
    Sign {
        /// The officer's private key (PKCS#8 PEM)
        #[arg(long)]
        key: PathBuf,
        /// The bundle's serial: gateways refuse a bundle with a lower serial than one they
        /// loaded. Default: one more than the signature it replaces, or 1
        #[arg(long)]
        serial: Option<u64>,
        /// The policy bundle directory to sign
        dir: PathBuf,
    },
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { dir } => check(&dir),
        PolicyCommand::Test { dir } => test(&dir),
        PolicyCommand::Explain { dir, cert, cn, o, ou, request, route, field } => explain(
            &dir,
            cert.as_deref(),
            Caller { common_name: cn, organization: o, unit: ou, ..Caller::default() },
            request.as_deref(),
            &route,
            field.as_deref(),
        ),
        PolicyCommand::Sign { key, serial, dir } => match signature::sign(&dir, &key, serial) {
            Ok((serial, digest)) => {
                println!("signed {} as serial {serial} (digest {digest})", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("spocgw policy sign: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn load(dir: &Path) -> Result<Bundle, ExitCode> {
    Bundle::load_dir(dir).map_err(|e| {
        eprintln!("spocgw policy: {e}");
        ExitCode::from(1)
    })
}

/// Policies that cannot matter: exact duplicates, permits under an unconditional blanket
/// forbid, and policies whose condition is the literal `false`.
pub fn lint(b: &Bundle) -> Vec<String> {
    let mut findings = Vec::new();
    let body = |p: &cedar_policy::Policy| {
        let text = p.to_string();
        let start = text.find("permit").into_iter().chain(text.find("forbid")).min().unwrap_or(0);
        text[start..].split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let policies: Vec<_> = b
        .policy_ids
        .iter()
        .filter_map(|id| b.policies.policy(&cedar_policy::PolicyId::new(id)).map(|p| (id, p)))
        .collect();
    for (i, (id, p)) in policies.iter().enumerate() {
        for (other, q) in &policies[..i] {
            if body(p) == body(q) {
                findings.push(format!("{id}: duplicates {other}; it never decides anything {other} does not"));
            }
        }
        let text = body(p);
        if text.contains("when { false }") || text.contains("unless { true }") {
            findings.push(format!("{id}: its condition is constant; it can never apply"));
        }
    }
    let blanket = policies.iter().find(|(_, p)| {
        p.effect() == cedar_policy::Effect::Forbid
            && body(p).trim_end_matches(';').trim() == "forbid( principal, action, resource )"
    });
    if let Some((fid, _)) = blanket {
        for (id, p) in &policies {
            if p.effect() == cedar_policy::Effect::Permit {
                findings.push(format!("{id}: always overridden by the unconditional forbid {fid}"));
            }
        }
    }
    let result =
        cedar_policy::Validator::new(b.schema.clone()).validate(&b.policies, cedar_policy::ValidationMode::Strict);
    for w in result.validation_warnings() {
        findings.push(format!("warning: {w}"));
    }
    findings
}

fn check(dir: &Path) -> ExitCode {
    let b = match load(dir) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let report = match cases::run_all(&b, Some(dir)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spocgw policy check: {e}");
            return ExitCode::from(1);
        }
    };
    let findings = lint(&b);
    for f in &findings {
        println!("lint: {f}");
    }
    println!(
        "{}: {} policies valid against {}, {} tests passed, digest {}",
        dir.display(),
        b.policy_ids.len(),
        bundle::SCHEMA_FILE,
        report.passed,
        b.digest
    );
    if findings.iter().any(|f| !f.starts_with("warning:")) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn test(dir: &Path) -> ExitCode {
    // Load without the built-in test gate, so failing cases are listed rather than refused.
    let files = match bundle::read_dir(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("spocgw policy test: {e}");
            return ExitCode::from(2);
        }
    };
    let b = match Bundle::from_files(&dir.display().to_string(), &files) {
        Ok(b) => b,
        Err(crate::policy::BundleError::Tests(_)) => {
            // Re-run to print every case.
            let without: Vec<_> = files.iter().filter(|(n, _)| !n.starts_with("tests/")).cloned().collect();
            match Bundle::from_files(&dir.display().to_string(), &without) {
                Ok(mut b) => {
                    b.tests = files
                        .iter()
                        .filter(|(n, _)| n.starts_with("tests/"))
                        .map(|(n, t)| (n.clone(), String::from_utf8_lossy(t).into_owned()))
                        .collect();
                    b
                }
                Err(e) => {
                    eprintln!("spocgw policy test: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Err(e) => {
            eprintln!("spocgw policy test: {e}");
            return ExitCode::from(1);
        }
    };
    match cases::run_all(&b, Some(dir)) {
        Ok(report) => {
            for l in &report.lines {
                println!("{l}");
            }
            println!("{} passed, {} failed", report.passed, report.failed);
            if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("spocgw policy test: {e}");
            ExitCode::from(2)
        }
    }
}

/// The identity in a certificate file's first certificate.
fn peer_of(cert: &Path) -> Result<crate::tls::PeerIdentity, String> {
    let certs = crate::tls::load_certs(cert).map_err(|e| e.to_string())?;
    let first = certs.first().ok_or_else(|| format!("{}: no certificate", cert.display()))?;
    crate::tls::PeerIdentity::from_der(first).map_err(|e| e.to_string())
}

/// The operation and facts of a request file, read as the gateway reads it; a request the
/// gateway would refuse before policy is reported (exit 1).
fn request_facts(path: &Path) -> Result<(String, crate::xml::facts::MessageFacts), ExitCode> {
    let body = std::fs::read(path).map_err(|e| {
        eprintln!("spocgw policy explain: {}: {e}", path.display());
        ExitCode::from(2)
    })?;
    let schema = Schema::embedded().map_err(|e| {
        eprintln!("spocgw policy explain: {e}");
        ExitCode::from(2)
    })?;
    match validate(&schema, &Limits::default(), &body, Expect::Any) {
        Ok(v) => Ok((v.operation, v.facts)),
        Err(e) => {
            eprintln!("spocgw policy explain: {}: the request is refused before policy: {e}", path.display());
            Err(ExitCode::from(1))
        }
    }
}

fn explain(
    dir: &Path,
    cert: Option<&Path>,
    mut caller: Caller,
    request: Option<&Path>,
    route: &str,
    field: Option<&str>,
) -> ExitCode {
    let b = match load(dir) {
        Ok(b) => b,
        Err(c) => return c,
    };
    if let Some(cert) = cert {
        match peer_of(cert) {
            Ok(peer) => caller = Caller::from_peer(&peer),
            Err(e) => {
                eprintln!("spocgw policy explain: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if caller.fingerprint.is_empty() {
        caller.fingerprint = "0".repeat(64);
    }
    let (operation, facts) = match request {
        Some(path) => match request_facts(path) {
            Ok(x) => x,
            Err(code) => return code,
        },
        None if field.is_some() => (String::new(), Default::default()),
        None => {
            eprintln!("spocgw policy explain: give --request FILE (and/or --field)");
            return ExitCode::from(2);
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let decision = match field {
        Some(f) => b.may_receive(&caller, f, &facts, now),
        None => b.decide(&caller, &operation, route, &facts, now),
    };
    let principal = b.principal(&caller).ok().and_then(|(_, e)| e.to_json_value().ok());
    let (hour, weekday) = local_time(now, b.utc_offset);
    let context = serde_json::json!({
        "purpose": facts.purpose, "caseReference": facts.case_reference,
        "borderCrossingPoint": facts.border_crossing_point, "issuingState": facts.issuing_state,
        "officerId": facts.officer_id, "authority": facts.authority, "callerId": facts.caller_id, "status": facts.result,
        "chipFingerprints": facts.chip_fingerprints, "liveFingerprints": facts.live_fingerprints,
        "formats": facts.formats, "hour": hour, "weekday": weekday,
    });
    let out = serde_json::json!({
        "decision": if decision.allowed { "allow" } else { "deny" },
        "policies": decision.policies,
        "errors": decision.errors,
        "bundle": b.digest,
        "principal": principal,
        "action": field.map_or(operation.clone(), |_| "ReceiveField".to_owned()),
        "resource": field.map_or_else(|| format!("Spoc::Route::\"{route}\""), |f| format!("Spoc::Field::\"{f}\"")),
        "context": context,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    if decision.allowed { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
