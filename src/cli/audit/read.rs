//! Reading the log as an officer: `audit query` and `audit export`. Every read is recorded first
//! (`audit_access`, naming the real user the kernel knows, not the one the environment claims),
//! and nothing is shown unless the access could be recorded. Filters are checked before anything
//! is read or recorded: an unknown value, a time that is neither RFC 3339 (any offset) nor a date,
//! or a directory that is not an audit log is an error (exit 2), never an empty answer.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use time::format_description::well_known::Rfc3339;

use super::verify;
use crate::audit::Record;
use crate::gateway::refusal::Refusal;
use crate::gateway::routes::Operation;

/// `spocgw audit query`: the filters, all of which a record must match.
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    /// The audit log directory
    pub dir: PathBuf,
    /// An incident ID (as a client received it)
    #[arg(long)]
    pub incident: Option<String>,
    /// An officer's ID, as the request carried it
    #[arg(long)]
    pub officer: Option<String>,
    /// Client certificate SHA-256 fingerprint (64 hex digits, any case, colons allowed)
    #[arg(long)]
    pub client: Option<String>,
    /// The operation's request element (VerifyFingerprintRequest, CheckIdentityRequest...)
    #[arg(long)]
    pub operation: Option<String>,
    /// allow or deny
    #[arg(long)]
    pub decision: Option<String>,
    /// Outcome code: ok, a contract fault code (PolicyDenied, XmlThreat...), or a refused
    /// handshake's reason (revoked, expired, untrusted, wrong_purpose...)
    #[arg(long)]
    pub code: Option<String>,
    /// The purpose the request declared (IDENTITY_DOUBT..., any case)
    #[arg(long)]
    pub purpose: Option<String>,
    /// The border crossing point the request named
    #[arg(long)]
    pub bcp: Option<String>,
    /// From this time: RFC 3339 with any offset (2026-11-23T10:10:30+01:00), or a date (from
    /// its start, UTC)
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this time, inclusive: RFC 3339 with any offset, or a date (to its end, UTC)
    #[arg(long)]
    pub until: Option<String>,
    /// A document number, matched through its pseudonym (needs --pseudonym-key); spaces,
    /// hyphens and case do not matter
    #[arg(long)]
    pub document: Option<String>,
    /// The document's issuing state (ICAO code, e.g. CZE): equal numbers of other states are not
    /// matched
    #[arg(long)]
    pub issuing_state: Option<String>,
    /// The pseudonymisation key: a file, or tpm:audit-pseudonym (unsealed by the TPM named
    /// in --config's [tpm] table)
    #[arg(long)]
    pub pseudonym_key: Option<String>,
    /// gateway.toml, for its [tpm] table (with --pseudonym-key tpm:NAME)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// table, json (the records as written) or csv
    #[arg(long, default_value = "table")]
    pub format: String,
    /// The same as --format json
    #[arg(long)]
    pub json: bool,
}

pub(super) enum Format {
    Table,
    Json,
    Csv,
    Syslog,
}

/// A time bound as the records write times (UTC, microseconds), which then compare as text.
pub(super) fn time_bound(option: &str, value: &str, end_of_day: bool) -> Result<String, String> {
    let t = match time::OffsetDateTime::parse(value, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let date =
                time::Date::parse(value, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| {
                    format!(
                        "--{option} {value:?}: not an RFC 3339 time (2026-11-23T10:10:30+01:00) or a date (2026-11-23)"
                    )
                })?;
            let at =
                if end_of_day { time::Time::from_hms_micro(23, 59, 59, 999_999) } else { Ok(time::Time::MIDNIGHT) };
            date.with_time(at.map_err(|e| e.to_string())?).assume_utc()
        }
    };
    Ok(crate::encoding::rfc3339_micros(t.into()))
}

/// Times compared: since and until, normalised.
#[derive(Default)]
pub(super) struct Window {
    since: Option<String>,
    until: Option<String>,
}

impl Window {
    /// # Errors
    /// A bound that does not parse, or `since` after `until`.
    pub(super) fn new(since: Option<&str>, until: Option<&str>) -> Result<Window, String> {
        let w = Window {
            since: since.map(|s| time_bound("since", s, false)).transpose()?,
            until: until.map(|u| time_bound("until", u, true)).transpose()?,
        };
        if let (Some(s), Some(u)) = (&w.since, &w.until)
            && s > u
        {
            return Err(format!("--since {s} is after --until {u}"));
        }
        Ok(w)
    }

    fn holds(&self, time: &str) -> bool {
        self.since.as_deref().is_none_or(|s| time >= s) && self.until.as_deref().is_none_or(|u| time <= u)
    }

    fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        v.extend(self.since.as_ref().map(|s| format!("since={s}")));
        v.extend(self.until.as_ref().map(|u| format!("until={u}")));
        v
    }
}

/// A directory is an audit log when it holds segments or checkpoints; anything else is refused
/// before the access record would be spooled into it.
pub(super) fn check_log_dir(dir: &Path) -> Result<(), String> {
    let segments = crate::audit::segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if segments.is_empty() && !dir.join(crate::audit::CHECKPOINTS_FILE).is_file() {
        return Err(format!(
            "{}: not an audit log (no segment-*.jsonl, no {})",
            dir.display(),
            crate::audit::CHECKPOINTS_FILE
        ));
    }
    Ok(())
}

/// The name /etc/passwd gives `uid`.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| "no name".into())
}

/// Who reads, as the kernel knows it: the real uid, the login uid (the one `sudo` and `su` keep),
/// and `SUDO_UID` (set by sudo, but any environment can claim it: marked as claimed). `USER` and
/// `LOGNAME` are not used: anyone sets them.
pub(super) fn reader() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse::<u32>().ok());
    let mut who = match uid {
        Some(u) => format!("uid {u} ({})", user_name(u)),
        None => "uid unknown".to_owned(),
    };
    let login = std::fs::read_to_string("/proc/self/loginuid").ok().and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(l) = login.filter(|&l| l != u32::MAX) {
        who.push_str(&format!(", login uid {l} ({})", user_name(l)));
    }
    if let Some(s) = std::env::var("SUDO_UID").ok().and_then(|s| s.parse::<u32>().ok()) {
        who.push_str(&format!(", SUDO_UID {s} ({}) as claimed by the environment", user_name(s)));
    }
    who
}

/// Records that an officer read the log (spooled for the writer). Reading is refused when the
/// access cannot be recorded.
pub(super) fn record_access(dir: &Path, what: String) -> Result<(), ExitCode> {
    let mut r = Record::now("audit_access");
    r.detail = Some(format!("{what} by {}", reader()));
    crate::audit::spool(dir, &r).map(drop).map_err(|e| {
        eprintln!("spocgw audit: this access cannot be recorded, so the log is not shown: {e}");
        ExitCode::from(1)
    })
}

/// The values a filter may take, where they are a fixed set.
fn check_values(q: &QueryArgs) -> Result<Format, String> {
    if let Some(d) = q.decision.as_deref().filter(|d| !["allow", "deny"].contains(d)) {
        return Err(format!("--decision {d:?}: allow or deny"));
    }
    let codes: Vec<&str> = ["ok", "refused", "cancelled", "messageID_unknown", "messageID_expired"]
        .into_iter()
        .chain(Refusal::ALL.iter().map(|r| r.code()))
        .chain(crate::tls::HANDSHAKE_REASONS)
        .collect();
    if let Some(c) = q.code.as_deref().filter(|c| !codes.contains(c)) {
        return Err(format!("--code {c:?}: one of {}", codes.join(", ")));
    }
    let ops: Vec<&str> = Operation::ALL.iter().map(|o| o.element()).collect();
    if let Some(o) = q.operation.as_deref().filter(|o| !ops.contains(o)) {
        return Err(format!("--operation {o:?}: one of {}", ops.join(", ")));
    }
    match (q.format.as_str(), q.json) {
        (_, true) | ("json", _) => Ok(Format::Json),
        ("table", _) => Ok(Format::Table),
        ("csv", _) => Ok(Format::Csv),
        (other, _) => Err(format!("--format {other:?}: table, json or csv")),
    }
}

/// `spocgw audit query`: the records matching every filter, the access itself recorded first.
pub(super) fn query(mut q: QueryArgs) -> ExitCode {
    let checked = super::filters::normalise(&mut q)
        .and_then(|()| check_values(&q))
        .and_then(|f| Ok((f, Window::new(q.since.as_deref(), q.until.as_deref())?)))
        .and_then(|fw| check_log_dir(&q.dir).map(|()| fw));
    let (format, window) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spocgw audit query: {e}");
            return ExitCode::from(2);
        }
    };
    let document = match super::filters::DocumentFilter::new(&q) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("spocgw audit query: {e}");
            return ExitCode::from(2);
        }
    };
    let mut filters: Vec<String> = [
        ("incident", &q.incident),
        ("officer", &q.officer),
        ("client", &q.client),
        ("operation", &q.operation),
        ("decision", &q.decision),
        ("code", &q.code),
        ("purpose", &q.purpose),
        ("bcp", &q.bcp),
    ]
    .into_iter()
    .filter_map(|(name, v)| Some(format!("{name}={}", v.as_ref()?)))
    .collect();
    filters.extend(window.describe());
    filters.extend(document.as_ref().map(super::filters::DocumentFilter::describe));
    if let Err(code) = record_access(&q.dir, format!("audit query {}", filters.join(" "))) {
        return code;
    }
    let m = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_deref() == Some(w.as_str()))
    };
    let filter = |r: &Record| {
        m(&q.incident, &r.incident_id)
            && m(&q.officer, &r.officer_id)
            && m(&q.operation, &r.operation)
            && m(&q.decision, &r.decision)
            && m(&q.code, &r.code)
            && m(&q.purpose, &r.purpose)
            && m(&q.bcp, &r.border_crossing_point)
            && document.as_ref().is_none_or(|d| d.matches(r))
            && q.client.as_ref().is_none_or(|c| r.client.as_ref().is_some_and(|rc| &rc.fingerprint == c))
            && window.holds(&r.time)
    };
    print_records(&q.dir, &filter, format)
}

/// `spocgw audit export`: every record in the window, as JSON lines or syslog lines.
pub(super) fn export(dir: &Path, format: &str, since: Option<&str>, until: Option<&str>) -> ExitCode {
    let f = match format {
        "json" => Format::Json,
        "syslog" => Format::Syslog,
        other => {
            eprintln!("spocgw audit export: unknown format {other:?} (json, syslog)");
            return ExitCode::from(2);
        }
    };
    let window = match Window::new(since, until).and_then(|w| check_log_dir(dir).map(|()| w)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("spocgw audit export: {e}");
            return ExitCode::from(2);
        }
    };
    let mut what = vec![format!("audit export --format {format}")];
    what.extend(window.describe());
    if let Err(code) = record_access(dir, what.join(" ")) {
        return code;
    }
    print_records(dir, &|r| window.holds(&r.time), f)
}

/// `spocgw audit report`: the officer's HTML page over a window, the access recorded first.
/// Exit 1 when the log does not verify (the page says so too), so a scheduled job notices.
pub(super) fn report(
    dir: &Path,
    window: (Option<&str>, Option<&str>),
    out: &Path,
    key: &Path,
    opts: &verify::Options,
) -> ExitCode {
    let window = match Window::new(window.0, window.1).and_then(|w| check_log_dir(dir).map(|()| w)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("spocgw audit report: {e}");
            return ExitCode::from(2);
        }
    };
    let mut what = vec!["audit report".to_owned()];
    what.extend(window.describe());
    if let Err(code) = record_access(dir, what.join(" ")) {
        return code;
    }
    let verified = verify::verify(dir, key, opts);
    let log = match verify::read_log(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("spocgw audit report: {e}");
            return ExitCode::from(1);
        }
    };
    let records: Vec<Record> = log.records.into_iter().map(|(r, _, _)| r).collect();
    let described = window.describe();
    let ctx = crate::audit::report::Context {
        title: "spocgw audit report",
        window: &if described.is_empty() { "the whole log".to_owned() } else { described.join(", ") },
        generated: &crate::encoding::now_rfc3339_micros(),
        verified: &verified,
        key: &key.display().to_string(),
    };
    let (page, tally) = crate::audit::report::render(&records, &|r| window.holds(&r.time), &ctx);
    // Officer IDs and case references: readable by its owner only.
    if let Err(e) = write_private(out, page.as_bytes()) {
        eprintln!("spocgw audit report: {}: {e}", out.display());
        return ExitCode::from(2);
    }
    println!(
        "report written to {}: {} consultations, {} refusals; log verification {}",
        out.display(),
        tally.consultations,
        tally.refusals.values().sum::<u64>(),
        match &verified {
            Ok(s) => format!("passed (key ID {})", s.key_id),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    if verified.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// Writes `bytes` to `out` as a new file of mode 0600: into a temporary file beside it, created
/// with `O_CREAT|O_EXCL` (which never follows a symbolic link: a link planted at the temporary
/// name fails the open), synced, then renamed over `out` (a link at `out` is replaced, not
/// followed; an existing file's mode is not kept).
fn write_private(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = parent.join(format!(".{}.{}.tmp", name.to_string_lossy(), uuid::Uuid::new_v4()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let done = f.write_all(bytes).and_then(|()| f.sync_all()).and_then(|()| std::fs::rename(&tmp, out));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// The terminal's name: the CN of the client certificate's subject.
fn terminal(r: &Record) -> Option<&str> {
    r.client.as_ref()?.subject.split(", ").find_map(|p| p.strip_prefix("CN="))
}

/// A CSV field: quoted when it must be, and a leading `=`, `+`, `-` or `@` (a formula to a
/// spreadsheet, from a value a client sent) defused with a quote mark.
fn csv(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) { format!("'{v}") } else { v.to_owned() };
    if v.contains([',', '"', '\n', '\r']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v }
}

const COLUMNS: [&str; 13] = [
    "seq",
    "time",
    "event",
    "incident",
    "operation",
    "purpose",
    "case",
    "bcp",
    "officer",
    "terminal",
    "decision",
    "status",
    "code",
];

fn columns(r: &Record) -> [String; 13] {
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    [
        r.seq.to_string(),
        r.time.clone(),
        r.event.clone(),
        o(&r.incident_id),
        o(&r.operation),
        o(&r.purpose),
        o(&r.case_reference),
        o(&r.border_crossing_point),
        o(&r.officer_id),
        terminal(r).unwrap_or("-").to_owned(),
        o(&r.decision),
        r.status.map_or_else(|| "-".into(), |s| s.to_string()),
        o(&r.code),
    ]
}

const WIDTHS: [usize; 13] = [6, 27, 8, 36, 25, 16, 14, 10, 10, 16, 8, 6, 18];

fn table_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (c, w) in cells.iter().zip(WIDTHS) {
        line.push_str(&format!("{c:<w$} "));
    }
    line.trim_end().to_owned()
}

pub(super) fn print_records(dir: &Path, filter: &dyn Fn(&Record) -> bool, format: Format) -> ExitCode {
    let log = match verify::read_log(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("spocgw audit: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let _ = match format {
        Format::Table => writeln!(out, "{}", table_line(&header)),
        Format::Csv => writeln!(out, "{}", COLUMNS.join(",")),
        _ => Ok(()),
    };
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "-".into());
    // An outcome that follows its request's record names only the incident and how it ended:
    // searched and shown together with the request's fields.
    let requests: std::collections::HashMap<&str, &Record> = log
        .records
        .iter()
        .filter(|(r, _, _)| r.event == "request")
        .filter_map(|(r, _, _)| Some((r.incident_id.as_deref()?, r)))
        .collect();
    for (stored, bytes, _) in &log.records {
        let joined;
        let r = match stored.incident_id.as_deref().and_then(|i| requests.get(i)) {
            Some(request) if stored.event == "outcome" && stored.client.is_none() => {
                joined = stored.with_request(request);
                &joined
            }
            _ => stored,
        };
        if !filter(r) {
            continue;
        }
        let written = match format {
            Format::Json => writeln!(out, "{}", String::from_utf8_lossy(bytes)),
            // RFC 5424: PRI (facility 13 log audit, severity 6 informational) VERSION TIMESTAMP
            // HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG
            Format::Syslog => {
                writeln!(out, "<110>1 {} {host} spocgw - {} - {}", r.time, r.event, String::from_utf8_lossy(bytes))
            }
            Format::Table => writeln!(out, "{}", table_line(&columns(r))),
            Format::Csv => {
                let cells: Vec<String> =
                    columns(r).iter().map(|c| if c == "-" { String::new() } else { csv(c) }).collect();
                writeln!(out, "{}", cells.join(","))
            }
        };
        if written.is_err() {
            // A closed pipe (| head) ends the listing quietly.
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_are_instants_whatever_their_offset() {
        assert_eq!(time_bound("since", "2026-11-23T10:10:30+01:00", false).unwrap(), "2026-11-23T09:10:30.000000Z");
        assert_eq!(time_bound("since", "2026-11-23T09:10:30Z", false).unwrap(), "2026-11-23T09:10:30.000000Z");
        assert_eq!(time_bound("since", "2026-11-23", false).unwrap(), "2026-11-23T00:00:00.000000Z");
        assert_eq!(time_bound("until", "2026-11-23", true).unwrap(), "2026-11-23T23:59:59.999999Z");
        assert!(time_bound("since", "yesterday", false).unwrap_err().contains("--since \"yesterday\""));
        assert!(Window::new(Some("2026-11-24"), Some("2026-11-23")).is_err());
        let w = Window::new(Some("2026-11-23T10:10:30+01:00"), None).unwrap();
        assert!(w.holds("2026-11-23T09:10:30.000001Z") && !w.holds("2026-11-23T09:10:29.999999Z"));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(csv("-5"), "'-5");
    }
}
