//! The simulated National SPOC: a mutual-TLS server answering every operation of CONTRACT.md
//! section 3 by fixed, documented rules, able to misbehave on demand.
//!
//! Rules (also in docs/operations.md):
//! - `VerifyFingerprintRequest`: `MATCH` (score 0.97) when some live print has the same finger
//!   position and the same image data as a chip print; `NO_MATCH` (0.03) when positions meet
//!   but data differ; `INCONCLUSIVE` (0.50) when no position meets.
//! - `CheckIdentityRequest`: `DocumentStatus` by the document number's first letter: `L` LOST,
//!   `S` STOLEN, `R` REVOKED, `U` UNKNOWN (no Holder); otherwise VALID with a synthetic Holder
//!   (including an Address).
//! - `RequestCertificateRequest`: `ok_reception_ack`, then after `callback_delay_ms` a
//!   `SendCertificatesRequest` callback to the gateway; synchronous (`ok_cert_available` with the
//!   certificate) when `request_certificate = "sync"` or the messageID starts with `SYNC-`.
//! - `GetCACertificatesRequest`: `ok_cert_available` with two certificates. `GeneralMessage`: `ok`.
//! - Misbehaviour, for every request (`[behaviour] fault`) or for one request whose
//!   `CaseReference`, `subject` or `messageID` is `SIM-DELAY-<ms>`, `SIM-RESET`,
//!   `SIM-STATUS-<code>`, `SIM-MALFORMED`, `SIM-NOTSOAP` or `SIM-INVALID` (schema-invalid reply).
//! - A hostile SPOC, for tests: `[behaviour] reply_file` answers every request with that file's
//!   bytes and `reply_status`; `record_dir` keeps each request received (its Content-Type,
//!   SOAPAction and body) as a numbered file, so a test can see what the gateway forwarded.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use quick_xml::escape::escape;
use quick_xml::events::Event;
use serde::Deserialize;

use super::messages;
use crate::config::{ConfigError, read_toml};
use crate::gateway::body::read_limited;
use crate::gateway::config::{ListenerConfig, UpstreamConfig};
use crate::gateway::routes::{BIO_NS, CSN_NS};
use crate::gateway::upstream::{Upstream, soap_headers};
use crate::xml::limits::Limits;
use crate::xml::validate::{Expect, Validated, validate};
use crate::xml::xsd::Schema;
use crate::xml::{self, SoapVersion};

/// `ministry.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinistryConfig {
    pub server: ListenerConfig,
    /// Where `SendCertificatesRequest` callbacks go (the gateway's callback listener).
    pub callback: Option<UpstreamConfig>,
    #[serde(default)]
    pub behaviour: Behaviour,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Added to every answer.
    #[serde(deserialize_with = "crate::config::units::millis", default)]
    pub latency_ms: u64,
    /// `none`, `reset`, `status-500`, `status-503`, `malformed`, `notsoap`, `invalid`, `delay-<ms>`.
    #[serde(default = "default_fault")]
    pub fault: String,
    /// `async` (acknowledge, then call back) or `sync`.
    #[serde(default = "default_request_certificate")]
    pub request_certificate: String,
    #[serde(deserialize_with = "crate::config::units::millis", default = "default_callback_delay")]
    pub callback_delay_ms: u64,
    /// Answer every request with this file's bytes (relative to the config file).
    #[serde(default)]
    pub reply_file: Option<std::path::PathBuf>,
    /// The HTTP status of a `reply_file` answer.
    #[serde(default = "default_reply_status")]
    pub reply_status: u16,
    /// Keep every request received in this directory (`N.txt`: headers, a blank line, body).
    #[serde(default)]
    pub record_dir: Option<std::path::PathBuf>,
}

fn default_reply_status() -> u16 {
    200
}

fn default_fault() -> String {
    "none".into()
}
fn default_request_certificate() -> String {
    "async".into()
}
fn default_callback_delay() -> u64 {
    300
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            fault: default_fault(),
            request_certificate: default_request_certificate(),
            callback_delay_ms: default_callback_delay(),
            reply_file: None,
            reply_status: default_reply_status(),
            record_dir: None,
        }
    }
}

impl MinistryConfig {
    /// # Errors
    /// A [`ConfigError`] naming the key at fault.
    pub fn load(file: &std::path::Path) -> Result<Self, ConfigError> {
        let mut cfg: MinistryConfig = read_toml(file)?;
        let base = file.parent().unwrap_or(std::path::Path::new("."));
        cfg.server.resolve(base, file, "server")?;
        if let Some(cb) = cfg.callback.as_mut() {
            cb.resolve(base, file, "callback")?;
        }
        for p in [&mut cfg.behaviour.reply_file, &mut cfg.behaviour.record_dir].into_iter().flatten() {
            *p = base.join(&*p);
        }
        if StatusCode::from_u16(cfg.behaviour.reply_status).is_err() {
            return Err(ConfigError::new(file, "behaviour.reply_status", "not an HTTP status"));
        }
        if Misbehaviour::parse(&cfg.behaviour.fault).is_none() && cfg.behaviour.fault != "none" {
            return Err(ConfigError::new(file, "behaviour.fault", format!("unknown fault {:?}", cfg.behaviour.fault)));
        }
        if !matches!(cfg.behaviour.request_certificate.as_str(), "async" | "sync") {
            return Err(ConfigError::new(file, "behaviour.request_certificate", "must be \"async\" or \"sync\""));
        }
        Ok(cfg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    Delay(u64),
    Reset,
    Status(u16),
    Malformed,
    NotSoap,
    /// Well-formed SOAP whose content breaks the schema.
    Invalid,
}

impl Misbehaviour {
    /// `reset`, `status-500`, `delay-2000`, ... (any case, `SIM-` prefix allowed).
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("sim-").unwrap_or(&s);
        match s {
            "reset" => Some(Self::Reset),
            "malformed" => Some(Self::Malformed),
            "notsoap" => Some(Self::NotSoap),
            "invalid" => Some(Self::Invalid),
            _ => {
                if let Some(ms) = s.strip_prefix("delay-") {
                    ms.parse().ok().map(Self::Delay)
                } else if let Some(code) = s.strip_prefix("status-") {
                    code.parse().ok().filter(|c| (100..600).contains(c)).map(Self::Status)
                } else {
                    None
                }
            }
        }
    }
}

/// The simulator's shared state.
pub struct Ministry {
    behaviour: Behaviour,
    /// Requests recorded so far (`record_dir`).
    recorded: std::sync::atomic::AtomicUsize,
    callback: Option<Upstream>,
    schema: Arc<Schema>,
}

/// The fields of a request the rules look at.
#[derive(Default, Debug)]
struct Facts {
    message_id: String,
    case_reference: String,
    trigger: Option<String>,
    document_number: String,
    /// (chip?, position, data)
    prints: Vec<(bool, String, String)>,
}

fn read_facts(body: &[u8]) -> Facts {
    let mut facts = Facts::default();
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut current = String::new();
    let mut print: Option<(bool, String, String)> = None;
    // Only the Body's facts: a client's WS-Addressing header carries a MessageID of its own.
    let mut in_body = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "Body" {
                    in_body = true;
                }
                match name.as_str() {
                    "ChipFingerprint" => print = Some((true, String::new(), String::new())),
                    "LiveFingerprint" => print = Some((false, String::new(), String::new())),
                    _ => {}
                }
                current = name;
            }
            Ok(Event::Text(t)) => {
                let text = String::from_utf8_lossy(&t.into_inner()).trim().to_owned();
                if !in_body {
                    continue;
                }
                if text.starts_with("SIM-") || text.starts_with("sim-") {
                    facts.trigger = Some(text.clone());
                }
                match (current.as_str(), print.as_mut()) {
                    ("MessageID" | "messageID", _) if facts.message_id.is_empty() => facts.message_id = text,
                    ("DocumentNumber", _) => facts.document_number = text,
                    ("CaseReference", _) => facts.case_reference = text,
                    ("FingerPosition", Some(p)) => p.1 = text,
                    ("Data", Some(p)) => p.2.push_str(&text),
                    _ => {}
                }
            }
            Ok(Event::End(e)) => {
                let name = e.local_name();
                if name.as_ref() == b"Body" {
                    in_body = false;
                }
                if (name.as_ref() == b"ChipFingerprint" || name.as_ref() == b"LiveFingerprint")
                    && let Some(p) = print.take()
                {
                    facts.prints.push(p);
                }
                current.clear();
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    facts
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The reply as a misbehaving SPOC sends it (the message's trigger, else the configured fault):
/// late, cut off, with an error status, malformed, not SOAP, or invalid.
async fn misbehave(misbehaviour: Option<Misbehaviour>, status: StatusCode, text: String) -> (StatusCode, SimBody) {
    match misbehaviour {
        None => (status, SimBody::whole(text)),
        Some(Misbehaviour::Delay(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (status, SimBody::whole(text))
        }
        Some(Misbehaviour::Reset) => (status, SimBody::broken(text)),
        Some(Misbehaviour::Status(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            SimBody::whole("service failure\n".into()),
        ),
        Some(Misbehaviour::Malformed) => (status, SimBody::whole(text[..text.len() / 2].to_owned())),
        Some(Misbehaviour::NotSoap) => (status, SimBody::whole("<html><body>gateway error</body></html>".into())),
        Some(Misbehaviour::Invalid) => {
            let broken = text
                .replace("<Result>MATCH</Result>", "<Result>PERHAPS</Result>")
                .replace("<DocumentStatus>VALID</DocumentStatus>", "<DocumentStatus>FINE</DocumentStatus>")
                .replace("<result>", "<result>maybe_");
            (status, SimBody::whole(broken))
        }
    }
}

impl Ministry {
    /// # Errors
    /// The callback client's certificates or key cannot be read.
    pub fn new(cfg: &MinistryConfig, schema: Arc<Schema>) -> Result<Self, crate::tls::TlsError> {
        let callback = cfg.callback.as_ref().map(Upstream::new).transpose()?;
        Ok(Self { behaviour: cfg.behaviour.clone(), recorded: Default::default(), callback, schema })
    }

    /// Answers one request.
    ///
    /// # Errors
    /// The request's body cannot be read, or a recorded request or reply file cannot be written or
    /// read.
    pub async fn answer(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<SimBody>, std::io::Error> {
        let version = match req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(ct) if ct.starts_with("application/soap+xml") => SoapVersion::V12,
            _ => SoapVersion::V11,
        };
        let header = |name: &str| {
            let values: Vec<&str> = req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
            format!("{name}: {}\n", values.join(" | "))
        };
        let headers = header("content-type") + &header("soapaction");
        let body = read_limited(&mut req.into_body(), 16 * 1024 * 1024)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if let Some(dir) = &self.behaviour.record_dir {
            let n = self.recorded.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut text = headers.into_bytes();
            text.push(b'\n');
            text.extend_from_slice(&body);
            tokio::fs::write(dir.join(format!("{n}.txt")), text).await?;
        }
        if let Some(file) = &self.behaviour.reply_file {
            let mut resp =
                Response::new(SimBody::whole(String::from_utf8_lossy(&tokio::fs::read(file).await?).into_owned()));
            *resp.status_mut() = StatusCode::from_u16(self.behaviour.reply_status).unwrap_or(StatusCode::OK);
            resp.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(version.content_type()));
            return Ok(resp);
        }
        let facts = read_facts(&body);
        tracing::info!(message_id = %facts.message_id, case_reference = %facts.case_reference, trigger = facts.trigger.as_deref().unwrap_or(""), bytes = body.len(), "request received");
        let misbehaviour = facts
            .trigger
            .as_deref()
            .and_then(Misbehaviour::parse)
            .or_else(|| Misbehaviour::parse(&self.behaviour.fault));
        if self.behaviour.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.behaviour.latency_ms)).await;
        }
        // The simulated SPOC checks requests with the same schemas the gateway uses.
        let reply = match validate(&self.schema, &Limits::default(), &body, Expect::Any) {
            Ok(env) => self.clone().reply(&env, &facts),
            Err(_) => None,
        };
        let (status, text) = match reply {
            Some(x) => (StatusCode::OK, messages::envelope(version, &x)),
            None => {
                let fault = xml::FaultText {
                    hint: None,
                    code: "NotUnderstood",
                    reason: "the simulated SPOC does not know this message",
                    sender: true,
                    incident_id: "sim",
                    message_id: None,
                };
                (StatusCode::INTERNAL_SERVER_ERROR, xml::soap_fault(version, &fault).0)
            }
        };
        let ct = version.content_type();
        let (status, body) = misbehave(misbehaviour, status, text).await;
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        if let Ok(v) = ct.parse() {
            resp.headers_mut().insert(CONTENT_TYPE, v);
        }
        Ok(resp)
    }

    /// The reply's operation element, or None for a request the rules do not know.
    fn reply(self: Arc<Self>, env: &Validated, f: &Facts) -> Option<String> {
        let mid = escape(&f.message_id).into_owned();
        let ts = now();
        match (env.namespace.as_str(), env.operation.as_str()) {
            (BIO_NS, "VerifyFingerprintRequest") => {
                let chip: Vec<_> = f.prints.iter().filter(|p| p.0).collect();
                let live: Vec<_> = f.prints.iter().filter(|p| !p.0).collect();
                let same_pos = live.iter().any(|l| chip.iter().any(|c| c.1 == l.1));
                let same_data = live.iter().any(|l| chip.iter().any(|c| c.1 == l.1 && c.2 == l.2));
                let (result, score) = match (same_pos, same_data) {
                    (_, true) => ("MATCH", "0.97"),
                    (true, false) => ("NO_MATCH", "0.03"),
                    _ => ("INCONCLUSIVE", "0.50"),
                };
                Some(format!(
                    "<VerifyFingerprintResponse xmlns=\"{BIO_NS}\"><MessageID>{mid}</MessageID><Timestamp>{ts}</Timestamp><Result>{result}</Result><Score>{score}</Score><Matcher>spocgw-sim-1</Matcher></VerifyFingerprintResponse>"
                ))
            }
            (BIO_NS, "CheckIdentityRequest") => {
                let status = match f.document_number.chars().next() {
                    Some('L') => "LOST",
                    Some('S') => "STOLEN",
                    Some('R') => "REVOKED",
                    Some('U') => "UNKNOWN",
                    _ => "VALID",
                };
                let holder = if status == "UNKNOWN" {
                    String::new()
                } else {
                    "<Holder><Surname>NOVAKOVA</Surname><GivenNames>JANA</GivenNames><DateOfBirth>1980-02-29</DateOfBirth><Nationality>CZE</Nationality><PlaceOfBirth>BRNO</PlaceOfBirth><Address>Namesti Svobody 1, 602 00 Brno</Address></Holder>".to_owned()
                };
                Some(format!(
                    "<CheckIdentityResponse xmlns=\"{BIO_NS}\"><MessageID>{mid}</MessageID><Timestamp>{ts}</Timestamp><DocumentStatus>{status}</DocumentStatus>{holder}</CheckIdentityResponse>"
                ))
            }
            (CSN_NS, "RequestCertificateRequest") => {
                let sync = self.behaviour.request_certificate == "sync" || f.message_id.starts_with("SYNC-");
                if sync {
                    Some(format!(
                        "<RequestCertificateResponse xmlns=\"{CSN_NS}\"><certificateSequence><certificate>{}</certificate></certificateSequence><result>ok_cert_available</result></RequestCertificateResponse>",
                        B64.encode(messages::synthetic_cvc(&[0x7F, 0x21], 11, 220))
                    ))
                } else {
                    self.schedule_callback(f.message_id.clone());
                    Some(format!(
                        "<RequestCertificateResponse xmlns=\"{CSN_NS}\"><result>ok_reception_ack</result></RequestCertificateResponse>"
                    ))
                }
            }
            (CSN_NS, "GetCACertificatesRequest") => Some(format!(
                "<GetCACertificatesResponse xmlns=\"{CSN_NS}\"><certificateSequence><certificate>{}</certificate><certificate>{}</certificate></certificateSequence><result>ok_cert_available</result></GetCACertificatesResponse>",
                B64.encode(messages::synthetic_cvc(&[0x7F, 0x21], 21, 220)),
                B64.encode(messages::synthetic_cvc(&[0x7F, 0x21], 22, 220))
            )),
            (CSN_NS, "GeneralMessage") => {
                Some(format!("<GeneralMessageResponse xmlns=\"{CSN_NS}\"><result>ok</result></GeneralMessageResponse>"))
            }
            _ => None,
        }
    }

    fn schedule_callback(self: Arc<Self>, message_id: String) {
        let Some(cb) = self.callback.clone() else {
            tracing::warn!("RequestCertificateRequest acknowledged, but no [callback] is configured");
            return;
        };
        let delay = Duration::from_millis(self.behaviour.callback_delay_ms);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let body = messages::envelope(SoapVersion::V11, &messages::send_certificates(&message_id));
            // As deployed SPOCs send it: an empty SOAPAction, the Body decides.
            let headers = soap_headers("text/xml; charset=utf-8", Some("\"\""), None);
            match cb.post("/spoc/csn369791", headers, Bytes::from(body)).await {
                Ok(r) => {
                    // What the gateway answered, not only its status: `failure_messageID_unknown`
                    // comes with a 200.
                    let text = String::from_utf8_lossy(&r.body);
                    let result = text
                        .split_once("<result>")
                        .and_then(|(_, rest)| rest.split_once("</result>"))
                        .map_or("(no result)", |(r, _)| r);
                    tracing::info!(
                        message_id,
                        status = r.status.as_u16(),
                        result,
                        "SendCertificatesRequest callback answered"
                    )
                }
                Err(e) => tracing::warn!(message_id, error = %e, "SendCertificatesRequest callback failed"),
            }
        });
    }
}

/// A reply body: whole, or one that breaks off halfway (a reset mid-response).
pub struct SimBody {
    first: Option<Bytes>,
    declared: u64,
    broken: bool,
}

impl SimBody {
    pub fn whole(s: String) -> Self {
        let declared = s.len() as u64;
        Self { first: Some(Bytes::from(s)), declared, broken: false }
    }

    fn broken(s: String) -> Self {
        let declared = s.len() as u64;
        let half = Bytes::from(s).slice(..(declared as usize) / 2);
        Self { first: Some(half), declared, broken: true }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if self.broken {
            self.broken = false;
            return Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset"))));
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.declared)
    }
}

#[cfg(test)]
mod tests {
    use super::read_facts;

    #[test]
    fn the_message_id_is_the_bodys_not_a_ws_addressing_one() {
        let body = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><wsa:MessageID xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:uuid:header</wsa:MessageID></s:Header><s:Body><CheckIdentityRequest xmlns="urn:spocgw:bio:1"><MessageID>6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01</MessageID></CheckIdentityRequest></s:Body></s:Envelope>"#;
        assert_eq!(read_facts(body).message_id, "6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01");
    }
}
