//! `spocgw validate --schemas DIR FILE...`: the gateway's own validator (same firewall limits,
//! same compiled schemas) on files. A file may be a SOAP envelope or a bare element that the
//! schemas declare. Prints `FILE: ok` or `FILE:LINE:COL: reason` per file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::xml::limits::Limits;
use crate::xml::validate::{Expect, XmlRefusal, line_col, validate};
use crate::xml::xsd::Schema;

/// One file's verdict line, or the reason it could not be read.
fn check_file(schema: &Schema, limits: &Limits, f: &Path, buf: &mut Vec<u8>) -> Result<(bool, String), String> {
    use std::io::Read;
    // One buffer per worker, reused: a file costs open, read and close, nothing more (`take`
    // keeps std from asking the file's size and position first).
    buf.clear();
    std::fs::File::open(f)
        .and_then(|file| file.take(u64::MAX).read_to_end(buf))
        .map_err(|e| format!("{}: {e}", f.display()))?;
    let body = &buf[..];
    Ok(match validate(schema, limits, body, Expect::Any) {
        Ok(_) => (true, format!("{}: ok", f.display())),
        Err(e) => {
            let (l, c) = line_col(body, e.offset());
            let kind = match &e {
                XmlRefusal::Malformed { .. } => "XmlMalformed",
                XmlRefusal::Threat { .. } => "XmlThreat",
                XmlRefusal::Invalid { .. } | XmlRefusal::UnknownOperation { .. } => "SchemaViolation",
                XmlRefusal::ContentMismatch { .. } => "ContentMismatch",
            };
            (false, format!("{}:{l}:{c}: {kind}: {e}", f.display()))
        }
    })
}

/// Validates `files` on `jobs` threads (the schemas are shared, read-only); prints the
/// verdicts in the order the files were given.
pub fn run(schemas: &Path, files: &[PathBuf], jobs: Option<usize>) -> ExitCode {
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
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, 64);
    let chunk = files.len().div_ceil(jobs);
    let results: Vec<Result<(bool, String), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let (schema, limits) = (&schema, &limits);
                scope.spawn(move || {
                    let mut buf = Vec::with_capacity(256 * 1024);
                    part.iter().map(|f| check_file(schema, limits, f, &mut buf)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|_| vec![Err("a worker failed".into())])).collect()
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut invalid = false;
    for r in results {
        match r {
            Ok((ok, line)) => {
                invalid |= !ok;
                if writeln!(out, "{line}").is_err() {
                    return ExitCode::from(2);
                }
            }
            Err(e) => {
                let _ = out.flush();
                eprintln!("spocgw validate: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let _ = out.flush();
    if invalid { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
