//! `spocgw validate --schemas DIR FILE...`: the gateway's own validator (same firewall limits,
//! same compiled schemas) on files. A file may be a SOAP envelope or a bare element that the
//! schemas declare. Prints `FILE: ok` or `FILE:LINE:COL: reason` per file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::xml::firewall::Limits;
use crate::xml::validate::{Expect, XmlRefusal, line_col, validate};
use crate::xml::xsd::Schema;

pub fn run(schemas: &Path, files: &[PathBuf]) -> ExitCode {
    let schema = match Schema::load_dir(schemas) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("spocgw validate: {e}");
            return ExitCode::from(2);
        }
    };
    if files.is_empty() {
        eprintln!("spocgw validate: no files given");
        return ExitCode::from(2);
    }
    let limits = Limits::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut invalid = false;
    for f in files {
        let body = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("spocgw validate: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        };
        let line = match validate(&schema, &limits, &body, Expect::Any) {
            Ok(_) => format!("{}: ok", f.display()),
            Err(e) => {
                invalid = true;
                let (l, c) = line_col(&body, e.offset());
                let kind = match &e {
                    XmlRefusal::Malformed { .. } => "XmlMalformed",
                    XmlRefusal::Threat { .. } => "XmlThreat",
                    XmlRefusal::Invalid { .. } | XmlRefusal::UnknownOperation { .. } => "SchemaViolation",
                    XmlRefusal::ContentMismatch { .. } => "ContentMismatch",
                };
                format!("{}:{l}:{c}: {kind}: {e}", f.display())
            }
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::from(2);
        }
    }
    let _ = out.flush();
    if invalid { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
