//! The officer's report (`spocgw audit report`): one self-contained HTML page (no external
//! asset, no request anywhere) over a time window of the log. It shows:
//!
//! - consultations per day, per purpose, per border crossing point and per officer;
//! - refusals by code, by terminal and by officer, the reply fields minimisation removed, and the
//!   callbacks;
//! - refused TLS handshakes by reason and by certificate (who tried with a revoked, expired,
//!   untrusted or wrong-purpose certificate, and how often);
//! - the table of individual consultations and of attempts refused before their request was
//!   recorded, with filters;
//! - the log's verification status.
//!
//! Charts are inline SVG. Every value from a record is HTML-escaped: officer IDs and case
//! references come from clients. A document appears only as its pseudonym.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Record;
use super::verify::Summary;

/// One consultation (a request record from a police system, with how it ended), or an attempt
/// refused before its request record was written (its outcome record carries the context).
struct Consultation<'a> {
    request: &'a Record,
    outcome: Option<&'a Record>,
}

/// A refused handshake's certificate, as it presented itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Presented {
    pub subject: String,
    pub fingerprint: String,
    pub reason: String,
}

/// How often a certificate was refused, first and last time.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub count: u64,
    pub first: String,
    pub last: String,
}

/// What the report counts, in the window.
#[derive(Default)]
pub struct Tally {
    pub consultations: usize,
    /// Attempts refused before their request record was written (rows of the table too).
    pub refused_attempts: usize,
    pub refusals_by_terminal: BTreeMap<String, u64>,
    pub refusals_by_officer: BTreeMap<String, u64>,
    /// Refused TLS handshakes by reason (each recorded one, and those summarised per window).
    pub handshakes: BTreeMap<String, u64>,
    pub handshake_certificates: BTreeMap<Presented, Seen>,
    pub per_day: BTreeMap<String, u64>,
    pub per_purpose: BTreeMap<String, u64>,
    pub per_bcp: BTreeMap<String, u64>,
    pub per_officer: BTreeMap<String, u64>,
    pub refusals: BTreeMap<String, u64>,
    pub minimised: BTreeMap<String, u64>,
    pub callbacks: BTreeMap<String, u64>,
}

/// The report's inputs besides the records.
pub struct Context<'a> {
    pub title: &'a str,
    pub window: &'a str,
    pub generated: &'a str,
    /// The verification of the whole log, or why it failed.
    pub verified: &'a Result<Summary, String>,
    pub key: &'a str,
}

/// HTML-escaped text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// The terminal: its certificate's CN, else the start of its fingerprint.
fn terminal(r: &Record) -> String {
    let Some(c) = r.client.as_ref() else { return "-".into() };
    match c.subject.split(", ").find_map(|p| p.strip_prefix("CN=")) {
        Some(cn) => cn.to_owned(),
        None => format!("sha256:{}", c.fingerprint.get(..16).unwrap_or(&c.fingerprint)),
    }
}

fn refused(r: &Record) -> bool {
    r.event == "outcome" && !matches!(r.code.as_deref(), Some("ok") | None)
}

fn by_incident<'a>(records: &'a [Record], event: &str) -> BTreeMap<&'a str, &'a Record> {
    records.iter().filter(|r| r.event == event).filter_map(|r| Some((r.incident_id.as_deref()?, r))).collect()
}

fn consultations<'a>(records: &'a [Record], within: &dyn Fn(&Record) -> bool) -> Vec<Consultation<'a>> {
    let outcomes = by_incident(records, "outcome");
    let requests = by_incident(records, "request");
    let police = |r: &Record| r.listener.as_deref() == Some("police") && within(r);
    let mut list: Vec<Consultation<'a>> = records
        .iter()
        .filter(|r| r.event == "request" && police(r))
        .map(|r| Consultation { request: r, outcome: r.incident_id.as_deref().and_then(|i| outcomes.get(i).copied()) })
        .collect();
    // Refused before a request record was written: the outcome holds who asked and why not.
    list.extend(
        records
            .iter()
            .filter(|r| refused(r) && police(r) && r.incident_id.as_deref().is_none_or(|i| !requests.contains_key(i)))
            .map(|r| Consultation { request: r, outcome: Some(r) }),
    );
    list
}

fn tally(records: &[Record], list: &[Consultation<'_>], within: &dyn Fn(&Record) -> bool) -> Tally {
    let consultations = list.iter().filter(|c| c.request.event == "request").count();
    let mut t = Tally { consultations, refused_attempts: list.len() - consultations, ..Tally::default() };
    let bump = |m: &mut BTreeMap<String, u64>, k: &str| *m.entry(k.to_owned()).or_default() += 1;
    let requests = by_incident(records, "request");
    for c in list.iter().filter(|c| c.request.event == "request") {
        let r = c.request;
        bump(&mut t.per_day, r.time.get(..10).unwrap_or("-"));
        bump(&mut t.per_purpose, or_dash(&r.purpose));
        bump(&mut t.per_bcp, or_dash(&r.border_crossing_point));
        bump(&mut t.per_officer, or_dash(&r.officer_id));
    }
    for r in records.iter().filter(|r| r.event == "outcome" && within(r)) {
        if let Some(code) = r.code.as_deref().filter(|_| refused(r)) {
            bump(&mut t.refusals, code);
            // Who was refused: the request record's context, or the outcome's own.
            let who = r.incident_id.as_deref().and_then(|i| requests.get(i).copied()).unwrap_or(r);
            if who.client.is_some() || who.officer_id.is_some() {
                bump(&mut t.refusals_by_terminal, &terminal(who));
                bump(&mut t.refusals_by_officer, or_dash(&who.officer_id));
            }
        }
        for f in &r.removed {
            bump(&mut t.minimised, f);
        }
        if r.listener.as_deref() == Some("callback") {
            bump(&mut t.callbacks, r.code.as_deref().unwrap_or("-"));
        }
    }
    handshakes(records, within, &mut t);
    t
}

/// Refused handshakes: each recorded one by reason and certificate; the window summaries (a
/// flood, counted rather than recorded one by one) by reason.
fn handshakes(records: &[Record], within: &dyn Fn(&Record) -> bool, t: &mut Tally) {
    for r in records.iter().filter(|r| within(r)) {
        match r.event.as_str() {
            "handshake_refusal" => {
                let reason = or_dash(&r.code).to_owned();
                *t.handshakes.entry(reason.clone()).or_default() += 1;
                let c = r.client.as_ref();
                let key = Presented {
                    subject: c.map_or_else(|| "(no certificate)".to_owned(), |c| c.subject.clone()),
                    fingerprint: c.map(|c| c.fingerprint.clone()).unwrap_or_default(),
                    reason,
                };
                let seen = t.handshake_certificates.entry(key).or_default();
                seen.count += 1;
                if seen.first.is_empty() {
                    seen.first.clone_from(&r.time);
                }
                seen.last.clone_from(&r.time);
            }
            "handshake_refusals" => {
                for d in &r.data {
                    let parsed = d.strip_prefix("reason ").and_then(|x| x.rsplit_once(" x"));
                    if let Some((reason, n)) = parsed.and_then(|(r, n)| Some((r, n.parse::<u64>().ok()?))) {
                        *t.handshakes.entry(format!("{reason} (summarised)")).or_default() += n;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The certificates refused at the handshake, most often first.
fn handshake_table(t: &Tally) -> String {
    let mut rows: Vec<(&Presented, &Seen)> = t.handshake_certificates.iter().collect();
    rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    let mut out = String::from(
        "<table id=\"handshake-certificates\"><thead><tr><th>certificate subject (as presented)</th>\
         <th>SHA-256 fingerprint</th><th>reason</th><th>times</th><th>first (UTC)</th><th>last (UTC)</th></tr></thead><tbody>",
    );
    for (p, s) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.subject),
            esc(&p.fingerprint),
            esc(&p.reason),
            s.count,
            esc(&s.first),
            esc(&s.last)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A horizontal bar chart, one bar per entry, as inline SVG.
fn bars(id: &str, title: &str, items: &BTreeMap<String, u64>) -> String {
    let max = items.values().copied().max().unwrap_or(0).max(1);
    let (row, label_w, bar_w) = (22, 170, 260);
    let height = row * items.len().max(1) + 10;
    let mut svg = format!(
        "<figure id=\"{id}\" data-total=\"{}\"><figcaption>{}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        items.values().sum::<u64>(),
        esc(title),
        label_w + bar_w + 60,
        esc(title)
    );
    if items.is_empty() {
        let _ = write!(svg, "<text x=\"0\" y=\"16\" class=\"none\">nothing in this window</text>");
    }
    for (i, (label, n)) in items.iter().enumerate() {
        let y = i * row + 4;
        let w = (*n as usize * bar_w / max as usize).max(1);
        let _ = write!(
            svg,
            "<g class=\"bar\" data-label=\"{l}\" data-count=\"{n}\"><text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{l}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{h}\"/><text x=\"{cx}\" y=\"{ty}\">{n}</text></g>",
            l = esc(label),
            tx = label_w - 6,
            ty = y + 13,
            h = row - 6,
            cx = label_w + w + 6,
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn verification(ctx: &Context<'_>) -> String {
    match ctx.verified {
        Ok(s) => {
            let last = s.last_checkpoint.as_ref().map_or_else(
                || "no checkpoint yet".to_owned(),
                |c| {
                    format!(
                        "size {}, {} (key {}{})",
                        c.tree_size,
                        esc(&c.time),
                        esc(&c.key_id),
                        c.tpm_counter.map(|n| format!(", TPM counter {n}")).unwrap_or_default()
                    )
                },
            );
            let notes: String = s.describe().iter().skip(1).map(|l| format!("<li>{}</li>", esc(l))).collect();
            format!(
                "<section id=\"verification\" class=\"ok\" data-verified=\"true\"><h2>Log verification: passed</h2>\
                 <p>Every record, the sequence, the Merkle tree and every checkpoint signature verified with {} \
                 (key ID <code id=\"key-id\">{}</code>, the first 16 hex digits of SHA-256 over the public key: \
                 compare it with the key you hold).</p><ul>{notes}</ul>\
                 <dl><dt>records</dt><dd id=\"records\">{}</dd><dt>checkpoints</dt><dd>{}</dd>\
                 <dt>chain head (RFC 9162 root)</dt><dd><code>{}</code></dd><dt>newest checkpoint</dt><dd>{last}</dd></dl></section>",
                esc(ctx.key),
                esc(&s.key_id),
                s.records,
                s.checkpoints,
                esc(&s.root)
            )
        }
        Err(e) => format!(
            "<section id=\"verification\" class=\"failed\" data-verified=\"false\"><h2>Log verification: FAILED</h2>\
             <p>{}</p><p>The figures below come from a log that does not verify: treat them as unreliable.</p></section>",
            esc(e)
        ),
    }
}

fn table(list: &[Consultation<'_>]) -> String {
    let mut t = String::from(
        "<table id=\"consultations\"><thead><tr><th>time (UTC)</th><th>incident</th><th>operation</th><th>purpose</th>\
         <th>case</th><th>crossing point</th><th>officer</th><th>terminal</th><th>document (pseudonym)</th>\
         <th>decision</th><th>outcome</th></tr><tr class=\"filters\">",
    );
    for i in 0..11 {
        let _ = write!(t, "<th><input data-col=\"{i}\" placeholder=\"filter\" aria-label=\"filter column {i}\"></th>");
    }
    t.push_str("</tr></thead><tbody>");
    for c in list {
        let r = c.request;
        let doc = r.document.as_deref().map_or("-".to_owned(), |d| d.get(..16).unwrap_or(d).to_owned());
        let outcome = c.outcome.and_then(|o| o.code.as_deref()).unwrap_or("(no outcome)");
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.time),
            esc(or_dash(&r.incident_id)),
            esc(or_dash(&r.operation)),
            esc(or_dash(&r.purpose)),
            esc(or_dash(&r.case_reference)),
            esc(or_dash(&r.border_crossing_point)),
            esc(or_dash(&r.officer_id)),
            esc(&terminal(r)),
            esc(&doc),
            esc(or_dash(&r.decision)),
            esc(outcome)
        );
    }
    t.push_str("</tbody></table>");
    t
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{margin-bottom:0}\
.meta{color:#555}section{margin:1.5em 0}.ok{border-left:6px solid #2a7;padding-left:1em}\
.failed{border-left:6px solid #c22;padding-left:1em;background:#fee}figure{display:inline-block;vertical-align:top;margin:0 2em 1.5em 0;min-width:500px}\
figcaption{font-weight:600;margin-bottom:.3em}rect{fill:#3b6ea5}.none{fill:#777}svg text{font-size:12px}\
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}\
th input{width:7em}tbody tr:nth-child(even){background:#f5f7fa}";

/// Filters the table: a row shows when every column's filter text is in its cell.
const SCRIPT: &str = "const inputs=[...document.querySelectorAll('tr.filters input')];\
function apply(){let n=0;for(const row of document.querySelectorAll('#consultations tbody tr')){\
const show=inputs.every(i=>row.cells[+i.dataset.col].textContent.toLowerCase().includes(i.value.toLowerCase()));\
row.hidden=!show;if(show)n++;}document.getElementById('shown').textContent=n;}\
inputs.forEach(i=>i.addEventListener('input',apply));apply();";

/// The report page. `within` selects the window's records; the verification covers the whole
/// log.
pub fn render(records: &[Record], within: &dyn Fn(&Record) -> bool, ctx: &Context<'_>) -> (String, Tally) {
    let list = consultations(records, within);
    let t = tally(records, &list, within);
    let mut page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
         <title>{title}</title><style>{STYLE}</style></head><body><h1>{title}</h1>\
         <p class=\"meta\">Window: {window}. Generated {generated}. Documents appear only as pseudonyms (HMAC under the appliance's key).</p>",
        title = esc(ctx.title),
        window = esc(ctx.window),
        generated = esc(ctx.generated),
    );
    page.push_str(&verification(ctx));
    let charts = |title: String, list: [(&str, &str, &BTreeMap<String, u64>); 4]| {
        let figures: String = list.iter().filter(|(id, ..)| !id.is_empty()).map(|(id, t, m)| bars(id, t, m)).collect();
        format!("<section><h2>{title}</h2>{figures}</section>")
    };
    let none = BTreeMap::new();
    page.push_str(&charts(
        format!("Consultations: <span id=\"total-consultations\">{}</span>", t.consultations),
        [
            ("per-day", "Consultations per day", &t.per_day),
            ("per-purpose", "Per purpose", &t.per_purpose),
            ("per-bcp", "Per border crossing point", &t.per_bcp),
            ("per-officer", "Per officer", &t.per_officer),
        ],
    ));
    page.push_str(&charts(
        "Refusals, minimisation, callbacks".to_owned(),
        [
            ("refusals", "Refusals by code", &t.refusals),
            ("minimised", "Reply fields removed by minimisation", &t.minimised),
            ("callbacks", "CSN callbacks by outcome", &t.callbacks),
            ("", "", &none),
        ],
    ));
    page.push_str(&charts(
        "Who was refused".to_owned(),
        [
            ("refusals-by-terminal", "Refusals by terminal", &t.refusals_by_terminal),
            ("refusals-by-officer", "Refusals by officer", &t.refusals_by_officer),
            ("handshakes", "Refused TLS handshakes by reason", &t.handshakes),
            ("", "", &none),
        ],
    ));
    let _ = write!(
        page,
        "<section><h2>Certificates refused at the TLS handshake (<span id=\"handshake-certificates-count\">{}</span>)</h2>{}</section>",
        t.handshake_certificates.len(),
        handshake_table(&t)
    );
    let _ = write!(
        page,
        "<section><h2>Individual consultations and refused attempts (<span id=\"shown\">{}</span> shown; \
         <span id=\"refused-attempts\">{}</span> refused before their request was recorded)</h2>{}</section>",
        list.len(),
        t.refused_attempts,
        table(&list)
    );
    let _ = writeln!(page, "<script>{SCRIPT}</script></body></html>");
    (page, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_clients_are_escaped_and_counted() {
        let mut req = Record::now("request");
        req.listener = Some("police".into());
        req.incident_id = Some("i-1".into());
        req.officer_id = Some("<img src=x onerror=alert(1)>".into());
        req.purpose = Some("IDENTITY_DOUBT".into());
        let mut out = Record::now("outcome");
        out.incident_id = Some("i-1".into());
        out.code = Some("PolicyDenied".into());
        out.removed = vec!["Holder/Address".into()];
        let verified = Err("record 3: altered".to_owned());
        let ctx = Context { title: "t", window: "all", generated: "now", verified: &verified, key: "k" };
        let (page, t) = render(&[req, out], &|_| true, &ctx);
        assert!(!page.contains("<img") && page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert_eq!(
            (t.consultations, t.refusals.get("PolicyDenied"), t.minimised.get("Holder/Address")),
            (1, Some(&1), Some(&1))
        );
        assert!(page.contains("data-verified=\"false\"") && page.contains("record 3: altered"));
    }
}
