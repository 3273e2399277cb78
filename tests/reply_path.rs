//! The request and reply path against a hostile peer (the review's findings, each reproduced
//! over real mutual TLS): a Ministry that answers whatever it likes (the simulator's
//! `reply_file`), clients that bend SOAP's rules, and what reaches the police terminal, the
//! Ministry, the audit log and the application log.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};
use spocgw::gateway::upstream::Reply;
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::{SOAP11_NS, SOAP12_NS, SoapVersion};

const XML11: &str = "text/xml; charset=utf-8";
const HOLDER: &str = "<Holder><Surname>NOVAKOVA</Surname><GivenNames>JANA</GivenNames><DateOfBirth>1980-02-29</DateOfBirth>\
<Nationality>CZE</Nationality><PlaceOfBirth>BRNO</PlaceOfBirth><Address>Namesti Svobody 1</Address></Holder>";

fn bio(purpose: &'static str) -> BioRequest {
    let mut b = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 2048);
    b.purpose = purpose;
    b
}

fn ci(purpose: &'static str) -> String {
    messages::envelope(SoapVersion::V11, &bio(purpose).check_identity())
}

/// A CheckIdentityResponse as the Ministry would send it, with `header` in a SOAP 1.1 Header.
fn identity_reply(header: &str, holder: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"{SOAP11_NS}\">{header}<s:Body><CheckIdentityResponse xmlns=\"urn:spocgw:bio:1\">\
<MessageID>6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01</MessageID><Timestamp>2026-11-23T10:00:00Z</Timestamp>\
<DocumentStatus>VALID</DocumentStatus>{holder}</CheckIdentityResponse></s:Body></s:Envelope>"
    )
}

/// A SOAP 1.1 Fault with `detail` (and whatever `extra` parts follow faultstring).
fn fault11(extra: &str, detail: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"{SOAP11_NS}\"><s:Body><s:Fault><faultcode>s:Server</faultcode>\
<faultstring>internal error</faultstring>{extra}{detail}</s:Fault></s:Body></s:Envelope>"
    )
}

/// The world with a hostile Ministry that answers every request with `reply` and `status`,
/// and keeps what it received in `forwarded/`.
fn hostile(status: u16, reply: &str) -> World {
    let mut w = World::new();
    std::fs::write(w.path("hostile.xml"), reply).unwrap();
    std::fs::create_dir_all(w.path("forwarded")).unwrap();
    w.append(
        "ministry.toml",
        &format!("reply_file = \"hostile.xml\"\nreply_status = {status}\nrecord_dir = \"forwarded\"\n"),
    );
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    w
}

/// A world with the simulated Ministry keeping what it received in `forwarded/`.
fn recording() -> World {
    let mut w = World::new();
    std::fs::create_dir_all(w.path("forwarded")).unwrap();
    w.append("ministry.toml", "record_dir = \"forwarded\"\n");
    w.start_ministry();
    w.start_receiver();
    w.start_gateway();
    w.wait_ready();
    w
}

/// What the Ministry received, in order (headers, a blank line, the body).
fn forwarded(w: &World) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(t) = std::fs::read_to_string(w.path(&format!("forwarded/{}.txt", v.len()))) {
        v.push(t);
    }
    v
}

/// The audit log's records, as text.
fn audit_text(w: &World) -> String {
    std::thread::sleep(Duration::from_millis(200));
    spocgw::audit::segments(&w.path("audit")).unwrap().iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

async fn send(w: &World, who: &str, headers: HeaderMap, body: String) -> Reply {
    w.client(who, false).post("/bio/v1", headers, Bytes::from(body)).await.unwrap()
}

fn headers(content_type: &str, soap_action: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    for a in soap_action {
        h.append("soapaction", HeaderValue::from_str(a).unwrap());
    }
    h
}

/// Finding 1: personal data must not ride back in a reply's Header or a Fault's detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_header_is_dropped_and_a_fault_passes_only_in_its_shape() {
    let leak = "<s:Header><x:Leak xmlns:x=\"urn:evil\"><x:Address>Namesti Svobody 1</x:Address></x:Leak></s:Header>";
    let w = hostile(200, &identity_reply(leak, ""));
    let officer = w.client("officer", false);
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("IDENTITY_DOUBT")).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(!text(&r).contains("Svobody") && !text(&r).contains("Header"), "{}", text(&r));
    assert!(text(&r).contains("<DocumentStatus>VALID</DocumentStatus>"), "{}", text(&r));
    assert!(w.gateway_log().contains("\"removed\":\"Header\""), "{}", w.gateway_log());
    drop(w);

    // A reply in another SOAP version than the request's.
    let w = hostile(200, &identity_reply("", "").replace(SOAP11_NS, SOAP12_NS));
    let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("IDENTITY_DOUBT"))
        .await
        .unwrap();
    assert_eq!(fault_code(&r).as_deref(), Some("UpstreamInvalidResponse"), "{}", text(&r));
    drop(w);

    // 500 Faults: the fixed shape passes; a detail or a part that is not ours is refused.
    let ours = "<detail><GatewayFault xmlns=\"urn:spocgw:fault:1\"><Code>NotUnderstood</Code>\
<IncidentID>sim</IncidentID></GatewayFault></detail>";
    let holder_detail = format!("<detail><h:Leak xmlns:h=\"urn:spocgw:bio:1\">{HOLDER}</h:Leak></detail>");
    let cases: Vec<(String, u16)> = vec![
        (fault11("", ours), 500),
        (fault11("", ""), 500),
        (fault11("<faultactor>https://spoc.example/</faultactor>", "<detail/>"), 500),
        (fault11("", &holder_detail), 502),
        (fault11("", &format!("<detail>{HOLDER}</detail>")), 502),
        (fault11("<Address>Namesti Svobody 1</Address>", ""), 502),
        (fault11("", "<detail>Namesti Svobody 1</detail>"), 502),
        (fault11("", ours).replace("s:Server", "s:Nonsense"), 502),
        (fault11("", ours).replace("<faultstring>internal error</faultstring>", ""), 502),
        (fault11("", ours).replace("<s:Fault>", "<s:Fault data=\"Svobody\">"), 502),
    ];
    for (reply, expect) in cases {
        let w = hostile(500, &reply);
        let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("IDENTITY_DOUBT"))
            .await
            .unwrap();
        assert_eq!(r.status, expect, "{reply}: {}", text(&r));
        assert!(!text(&r).contains("Svobody") && !text(&r).contains("NOVAKOVA"), "{}", text(&r));
        if expect == 502 {
            assert_eq!(fault_code(&r).as_deref(), Some("UpstreamInvalidResponse"), "{reply}");
            let id = r.request_id.clone().unwrap();
            let audit = audit_text(&w);
            let line = audit.lines().find(|l| l.contains(&id) && l.contains("\"outcome\"")).expect("outcome record");
            assert!(line.contains("UpstreamInvalidResponse"), "{line}");
        }
    }

    // SOAP 1.2: Code/Value, Reason/Text with xml:lang; a Value outside SOAP's codes is refused.
    let fault12 = |value: &str, detail: &str| {
        format!(
            "<e:Envelope xmlns:e=\"{SOAP12_NS}\"><e:Body><e:Fault><e:Code><e:Value>{value}</e:Value>\
<e:Subcode><e:Value xmlns:m=\"urn:ministry\">m:Busy</e:Value></e:Subcode></e:Code>\
<e:Reason><e:Text xml:lang=\"en\">busy</e:Text></e:Reason>{detail}</e:Fault></e:Body></e:Envelope>"
        )
    };
    for (reply, expect) in [
        (fault12("e:Receiver", ""), 500),
        (fault12("e:Receiver", "<e:Detail/>"), 500),
        (fault12("e:Busy", ""), 502),
        (fault12("x:Receiver", ""), 502),
        (fault12("e:Receiver", &format!("<e:Detail>{HOLDER}</e:Detail>")), 502),
        (fault12("e:Receiver", "").replace(" xml:lang=\"en\"", ""), 502),
    ] {
        let w = hostile(500, &reply);
        let ct = messages::content_type(SoapVersion::V12, "urn:spocgw:bio:1/CheckIdentityRequest");
        let body = messages::envelope(SoapVersion::V12, &bio("IDENTITY_DOUBT").check_identity());
        let r = post(&w.client("officer", false), "/bio/v1", &ct, None, body).await.unwrap();
        assert_eq!(r.status, expect, "{reply}: {}", text(&r));
    }
}

/// Finding 2: minimisation is a policy outcome, whatever the (unrelated) rate numbers say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimisation_holds_whatever_the_rates() {
    for rate in ["3", "100000", "100000000", "7"] {
        let mut w = World::new();
        let routes = std::fs::read_to_string(w.path("policies/routes.toml")).unwrap();
        let changed: String = routes
            .lines()
            .map(|l| match l.split_once('=') {
                Some((k, _)) if k.trim() == "per_second" || k.trim() == "burst" => format!("{} = {rate}\n", k.trim()),
                _ => format!("{l}\n"),
            })
            .collect();
        std::fs::write(w.path("policies/routes.toml"), changed).unwrap();
        w.start_ministry();
        w.start_gateway();
        w.wait_ready();
        let officer = w.client("officer", false);
        let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("IDENTITY_DOUBT")).await.unwrap();
        assert_eq!(r.status, 200, "{}", text(&r));
        assert!(!text(&r).contains("<Address>") && text(&r).contains("<PlaceOfBirth>"), "rate {rate}: {}", text(&r));
        assert!(w.gateway_log().contains("\"removed\":\"Holder/Address\""), "rate {rate}");
    }
}

/// Findings 3 and 4: header entries the route does not name are not forwarded; one that must
/// be understood, however its value is written, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_are_validated_or_dropped_and_must_understand_is_read_as_xml() {
    let w = recording();
    let with_header = |version: SoapVersion, entries: &str| {
        let env = messages::envelope(version, &bio("IDENTITY_DOUBT").check_identity());
        assert!(env.contains("<soap:Body>"), "{env}");
        env.replace("<soap:Body>", &format!("<soap:Header>{entries}</soap:Header><soap:Body>"))
    };
    let v11 = |entries: &str| with_header(SoapVersion::V11, entries);
    let v12 = |entries: &str| with_header(SoapVersion::V12, entries);
    let ct12 = messages::content_type(SoapVersion::V12, "urn:spocgw:bio:1/CheckIdentityRequest");
    let officer = w.client("officer", false);

    // Refused: must be understood, whichever way the value is written.
    for (ct, body) in [
        (XML11.to_owned(), v11("<w:Security xmlns:w=\"urn:ws\" soap:mustUnderstand=\"&#49;\"/>")),
        (XML11.to_owned(), v11("<w:Security xmlns:w=\"urn:ws\" soap:mustUnderstand=\" 1 \"/>")),
        (XML11.to_owned(), v11("<w:Security xmlns:w=\"urn:ws\" soap:mustUnderstand=\"yes\"/>")),
        (ct12.clone(), v12("<w:Security xmlns:w=\"urn:ws\" soap:mustUnderstand=\" true\"/>")),
        (ct12.clone(), v12("<w:Security xmlns:w=\"urn:ws\" soap:mustUnderstand=\"&#x74;rue\"/>")),
    ] {
        let action = (ct == XML11).then_some("CheckIdentityRequest");
        let r = post(&officer, "/bio/v1", &ct, action, body.clone()).await.unwrap();
        assert_eq!(r.status, 400, "{body}: {}", text(&r));
        assert_eq!(fault_code(&r).as_deref(), Some("SchemaViolation"));
    }
    assert!(forwarded(&w).is_empty(), "a refused request reached the Ministry");

    // Passed, without the entries: WS-Addressing, anything else, mustUnderstand false.
    let entries = "<wsa:ReplyTo xmlns:wsa=\"http://www.w3.org/2005/08/addressing\"><wsa:Address>https://evil.example/</wsa:Address></wsa:ReplyTo>\
<e:Anything xmlns:e=\"urn:evil\" soap:mustUnderstand=\"0\">x</e:Anything>";
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), v11(entries)).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let got = forwarded(&w);
    assert_eq!(got.len(), 1);
    assert!(!got[0].contains("Header") && !got[0].contains("evil") && !got[0].contains("ReplyTo"), "{}", got[0]);
    assert!(got[0].contains("<CheckIdentityRequest"), "{}", got[0]);
}

/// Finding 4, the other half: a route lets named entries through, validated against the
/// schemas; one the schemas do not declare stops `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_entries_a_route_names_are_validated_and_kept() {
    let mut w = World::new();
    std::fs::create_dir_all(w.path("forwarded")).unwrap();
    w.append("ministry.toml", "record_dir = \"forwarded\"\n");
    w.append("gateway.toml", "\n[xml.headers.bio_v1]\nrequest = [\"{urn:evil}Undeclared\"]\n");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config", w.path("gateway.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml.headers.bio_v1") && err.contains("{urn:evil}Undeclared"), "{err}");
    w.edit("gateway.toml", "{urn:evil}Undeclared", "{urn:spocgw:fault:1}GatewayFault");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let officer = w.client("officer", false);
    let entry = |code: &str| {
        ci("IDENTITY_DOUBT").replace(
            "<soap:Body>",
            &format!(
                "<soap:Header><f:GatewayFault xmlns:f=\"urn:spocgw:fault:1\"><f:Code>{code}</f:Code>\
<f:IncidentID>trace-1</f:IncidentID></f:GatewayFault><e:Drop xmlns:e=\"urn:evil\"/></soap:Header><soap:Body>"
            ),
        )
    };
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), entry("Traced")).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let got = forwarded(&w);
    assert!(got[0].contains("<f:Code>Traced</f:Code>") && !got[0].contains("urn:evil"), "{}", got[0]);
    // The entry is validated like the Body.
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), entry("not a code!")).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(forwarded(&w).len(), 1);
}

/// Finding 5: a repeated `action` parameter (or SOAPAction header) is refused, and what the
/// Ministry receives is a Content-Type the gateway wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_action_is_refused_and_the_content_type_is_rebuilt() {
    let w = recording();
    let body12 = messages::envelope(SoapVersion::V12, &bio("IDENTITY_DOUBT").check_identity());
    let polluted = "application/soap+xml; charset=utf-8; action=\"urn:spocgw:bio:1/VerifyFingerprintRequest\"; action=\"CheckIdentityRequest\"";
    let r = send(&w, "officer", headers(polluted, &[]), body12.clone()).await;
    assert_eq!(r.status, 415, "{}", text(&r));
    assert!(text(&r).contains("UnsupportedMediaType"), "{}", text(&r));
    let r = send(
        &w,
        "officer",
        headers(XML11, &["\"CheckIdentityRequest\"", "\"VerifyFingerprintRequest\""]),
        ci("IDENTITY_DOUBT"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(forwarded(&w).is_empty());

    let extra = "application/soap+xml;charset=UTF-8;action=\"CheckIdentityRequest\";boundary=x;start=\"<evil>\"";
    let r = send(&w, "officer", headers(extra, &[]), body12).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = send(&w, "officer", headers("text/xml", &["CheckIdentityRequest"]), ci("IDENTITY_DOUBT")).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let got = forwarded(&w);
    assert!(
        got[0].starts_with(
            "content-type: application/soap+xml; charset=utf-8; action=\"CheckIdentityRequest\"\nsoapaction: \n"
        ),
        "{}",
        got[0]
    );
    assert!(
        got[1].starts_with("content-type: text/xml; charset=utf-8\nsoapaction: \"CheckIdentityRequest\"\n"),
        "{}",
        got[1]
    );
}

/// Finding 6: characters XML 1.0 forbids, raw or referenced, in text or attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn characters_xml_forbids_are_refused_and_never_recorded() {
    let w = recording();
    let officer = w.client("officer", false);
    for authority in
        ["Border\u{1}Police", "Border&#x1;Police", "Border&#x1e;Police", "Border\u{FFFE}Police", "Border&#65535;Police"]
    {
        let body = ci("IDENTITY_DOUBT")
            .replace("<Authority>Border Police</Authority>", &format!("<Authority>{authority}</Authority>"));
        let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), body).await.unwrap();
        assert_eq!(r.status, 400, "{authority:?}: {}", text(&r));
        assert_eq!(fault_code(&r).as_deref(), Some("XmlMalformed"), "{authority:?}");
    }
    let attr = ci("IDENTITY_DOUBT").replace("<Authority>", "<Authority xmlns:z=\"urn:z&#x1;\">");
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), attr).await.unwrap();
    assert_eq!(fault_code(&r).as_deref(), Some("XmlMalformed"));
    assert!(forwarded(&w).is_empty());
    let audit = audit_text(&w);
    assert!(!audit.contains("\\u0001") && !audit.contains("\\u001e") && !audit.contains('\u{FFFE}'), "{audit}");
}

/// Finding 7: refusals name the element, the rule and the position, never the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_from_a_message_reaches_the_log() {
    let mut w = World::new();
    let reply = identity_reply("", &HOLDER.replace("1980-02-29", "29.02.1980"));
    std::fs::write(w.path("hostile.xml"), reply).unwrap();
    w.append("ministry.toml", "reply_file = \"hostile.xml\"\n");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let officer = w.client("officer", false);
    let lower = ci("IDENTITY_DOUBT").replace("X1234567", "x1234567");
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), lower).await.unwrap();
    assert_eq!(fault_code(&r).as_deref(), Some("SchemaViolation"));
    let long = ci("IDENTITY_DOUBT").replace("OFF-0001", &"Q".repeat(20_000));
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), long).await.unwrap();
    assert_eq!(r.status, 400);
    let r = post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("IDENTITY_DOUBT")).await.unwrap();
    assert_eq!(fault_code(&r).as_deref(), Some("UpstreamInvalidResponse"));
    let log = w.gateway_log();
    for value in ["x1234567", "29.02.1980", "QQQQQQQQ", "NOVAKOVA"] {
        assert!(!log.contains(value), "{value} in the log: {log}");
    }
    assert!(log.lines().all(|l| l.len() < 2_000), "a long log line");
    assert!(log.contains("DocumentNumber") && log.contains("pattern"), "{log}");
    assert!(log.contains("DateOfBirth"), "{log}");
}

/// Finding 8: a fact the schema allows is recorded whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_fact_is_recorded_whole() {
    let w = World::full();
    let authority = "Č".repeat(90);
    let body = ci("IDENTITY_DOUBT")
        .replace("<Authority>Border Police</Authority>", &format!("<Authority>{authority}</Authority>"));
    let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), body).await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let id = r.request_id.clone().unwrap();
    let audit = audit_text(&w);
    let record = audit.lines().find(|l| l.contains(&id) && l.contains("\"request\"")).expect("request record");
    assert!(record.contains(&format!("\"authority\":\"{authority}\"")), "{record}");
}

/// Finding 9: a callback consumes its messageID; only requests the Ministry took on are waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_cannot_be_replayed_and_faulted_requests_are_not_remembered() {
    let w = World::full();
    let ministry = w.callback_client("ministry/client.pem", "ministry/client.key");
    let dv = w.client("document-verifier", false);
    let rc = messages::envelope(SoapVersion::V11, &messages::request_certificate("ASYNC-77"));
    let r = post(&dv, "/spoc/csn369791", XML11, Some("RequestCertificateRequest"), rc).await.unwrap();
    assert!(text(&r).contains("ok_reception_ack"), "{}", text(&r));
    let end = Instant::now() + Duration::from_secs(10);
    while !log_contains(&w.path("receiver.log"), "ASYNC-77") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log_contains(&w.path("receiver.log"), "ASYNC-77"), "callback not delivered");
    let replay = messages::envelope(SoapVersion::V11, &messages::send_certificates("ASYNC-77"));
    let r = post(&ministry, "/spoc/csn369791", XML11, Some("SendCertificatesRequest"), replay).await.unwrap();
    assert!(text(&r).contains("failure_messageID_unknown"), "replay accepted: {}", text(&r));

    // A synchronous answer and a Fault expect no callback.
    for id in ["SYNC-78", "SIM-STATUS-500"] {
        let rc = messages::envelope(SoapVersion::V11, &messages::request_certificate(id));
        let _ = post(&dv, "/spoc/csn369791", XML11, Some("RequestCertificateRequest"), rc).await.unwrap();
        let cb = messages::envelope(SoapVersion::V11, &messages::send_certificates(id));
        let r = post(&ministry, "/spoc/csn369791", XML11, Some("SendCertificatesRequest"), cb).await.unwrap();
        assert!(text(&r).contains("failure_messageID_unknown"), "{id}: {}", text(&r));
    }
}

/// Finding 10: the decision and the minimisation come from one bundle, even when a reload
/// lands while the request is upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_request_does_not_change_its_minimisation() {
    let mut w = World::new();
    w.edit("gateway.toml", "dir = \"policies\"", "dir = \"policies\"\nreload_interval_ms = 100");
    w.start_ministry();
    w.start_gateway();
    w.wait_ready();
    let before = admin_get(w.admin_port, "/readyz").1;
    let mut slow = bio("IDENTITY_DOUBT");
    slow.case_reference = "SIM-DELAY-2500".into();
    let body = messages::envelope(SoapVersion::V11, &slow.check_identity());
    let officer = w.client("officer", false);
    let pending =
        tokio::spawn(async move { post(&officer, "/bio/v1", XML11, Some("CheckIdentityRequest"), body).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The new bundle withholds the place of birth for an identity doubt.
    w.edit("policies/minimisation.cedar", " || context.purpose == \"IDENTITY_DOUBT\"", "");
    let end = Instant::now() + Duration::from_secs(10);
    while admin_get(w.admin_port, "/readyz").1 == before && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(admin_get(w.admin_port, "/readyz").1, before, "the bundle was not reloaded");
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(text(&r).contains("<PlaceOfBirth>"), "minimised by the new bundle: {}", text(&r));
    assert!(!text(&r).contains("<Address>"), "{}", text(&r));
    // The next request is decided and minimised by the new one.
    let r = post(&w.client("officer", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("IDENTITY_DOUBT"))
        .await
        .unwrap();
    assert!(!text(&r).contains("<PlaceOfBirth>"), "{}", text(&r));
}

/// Finding 11: a purpose is tied to the role that may claim it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_second_line_officer_gets_the_address() {
    let w = World::full();
    for who in ["analyst", "officer"] {
        let r = post(&w.client(who, false), "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("SECOND_LINE_CHECK"))
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{who}: {}", text(&r));
        assert_eq!(fault_code(&r).as_deref(), Some("PolicyDenied"));
    }
    let r =
        post(&w.client("second-line", false), "/bio/v1", XML11, Some("CheckIdentityRequest"), ci("SECOND_LINE_CHECK"))
            .await
            .unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(text(&r).contains("<Address>"), "{}", text(&r));
    assert!(w.gateway_log().contains("second-line-checks-by-second-line-officers"), "{}", w.gateway_log());
}
