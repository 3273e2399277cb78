//! Well-formed example messages of every operation, as police systems and the Ministry send
//! them. The demo, the tests, the benchmarks and `dev-pki`'s `samples/` all use these, so
//! they are the one place that shows what a correct message looks like.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use quick_xml::escape::escape;

use crate::gateway::routes::{BIO_NS, CSN_NS};
use crate::xml::SoapVersion;

/// Wraps an operation element in a SOAP envelope of `version`.
pub use crate::xml::soap::envelope;

/// The content type of a SOAP message of `version` for `action`.
pub fn content_type(version: SoapVersion, action: &str) -> String {
    crate::gateway::routes::SoapMediaType::forwarded(version, Some(action)).into_owned()
}

/// A synthetic fingerprint image of `len` bytes in `format`: the format's leading bytes (as
/// the gateway's content check expects them) followed by bytes derived from `seed`.
pub fn synthetic_image(format: &str, seed: u32, len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = match format {
        "WSQ" => vec![0xFF, 0xA0, 0xFF, 0xA8],
        "JPEG2000" => vec![0xFF, 0x4F, 0xFF, 0x51],
        _ => b"FIR\0".to_vec(),
    };
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    while out.len() < len {
        // xorshift: cheap, deterministic filler
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A synthetic card-verifiable certificate (`tag` 7F21) or request (`tag` 67 for an
/// authenticated one): a body `7F4E` of `body` filler bytes and a 64-byte signature `5F37`,
/// BER lengths throughout. Well formed as a TLV, meaningless as a certificate.
pub fn synthetic_cvc(tag: &[u8], seed: u32, body: usize) -> Vec<u8> {
    fn tlv(tag: &[u8], content: &[u8]) -> Vec<u8> {
        let mut v = tag.to_vec();
        match content.len() {
            n @ 0..=0x7F => v.push(n as u8),
            n @ 0x80..=0xFF => v.extend([0x81, n as u8]),
            n => v.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(content);
        v
    }
    let filler = synthetic_image("", seed, body + 64);
    let mut content = tlv(&[0x7F, 0x4E], &filler[..body]);
    content.extend(tlv(&[0x5F, 0x37], &filler[body..]));
    tlv(tag, &content)
}

/// One fingerprint in a request.
#[derive(Debug, Clone)]
pub struct Finger {
    pub position: u8,
    pub format: &'static str,
    pub data: Vec<u8>,
}

/// The parts of a bio v1 request that tests vary.
#[derive(Debug, Clone)]
pub struct BioRequest {
    pub message_id: String,
    pub officer_id: String,
    pub purpose: &'static str,
    pub case_reference: String,
    pub document_number: String,
    pub chip: Vec<Finger>,
    pub live: Vec<Finger>,
}

impl BioRequest {
    /// A request whose live print matches the chip's (same position, same data): the simulated
    /// Ministry answers MATCH. `image_bytes` sets each image's size.
    pub fn matching(message_id: &str, image_bytes: usize) -> Self {
        let img = synthetic_image("WSQ", 7, image_bytes);
        Self {
            message_id: message_id.to_owned(),
            officer_id: "OFF-0001".to_owned(),
            purpose: "IDENTITY_DOUBT",
            case_reference: "CASE-2026-000123".to_owned(),
            document_number: "X1234567".to_owned(),
            chip: vec![Finger { position: 1, format: "WSQ", data: img.clone() }],
            live: vec![Finger { position: 1, format: "WSQ", data: img }],
        }
    }

    fn common(&self) -> String {
        format!(
            "<MessageID>{}</MessageID><Timestamp>2026-11-23T08:00:00Z</Timestamp>\
<Requester><OfficerID>{}</OfficerID><Authority>Border Police</Authority><BorderCrossingPoint>PRG-AIRPORT-T1</BorderCrossingPoint></Requester>\
<Justification><Purpose>{}</Purpose><CaseReference>{}</CaseReference></Justification>\
<TravelDocument><IssuingState>CZE</IssuingState><DocumentType>P</DocumentType><DocumentNumber>{}</DocumentNumber><DateOfExpiry>2031-05-31</DateOfExpiry></TravelDocument>",
            escape(&self.message_id),
            escape(&self.officer_id),
            self.purpose,
            escape(&self.case_reference),
            escape(&self.document_number),
        )
    }

    /// The `VerifyFingerprintRequest` element.
    pub fn verify_fingerprint(&self) -> String {
        let mut s = format!("<VerifyFingerprintRequest xmlns=\"{BIO_NS}\">{}", self.common());
        for f in &self.chip {
            s.push_str(&format!(
                "<ChipFingerprint><FingerPosition>{}</FingerPosition><Format>{}</Format><Data>{}</Data></ChipFingerprint>",
                f.position,
                f.format,
                B64.encode(&f.data)
            ));
        }
        for f in &self.live {
            s.push_str(&format!(
                "<LiveFingerprint><FingerPosition>{}</FingerPosition><Format>{}</Format><Data>{}</Data><Quality>80</Quality></LiveFingerprint>",
                f.position,
                f.format,
                B64.encode(&f.data)
            ));
        }
        s.push_str("</VerifyFingerprintRequest>");
        s
    }

    /// The `CheckIdentityRequest` element.
    pub fn check_identity(&self) -> String {
        format!("<CheckIdentityRequest xmlns=\"{BIO_NS}\">{}</CheckIdentityRequest>", self.common())
    }
}

/// A CSN 36 9791 `RequestCertificateRequest` element.
pub fn request_certificate(message_id: &str) -> String {
    format!(
        "<RequestCertificateRequest xmlns=\"{CSN_NS}\"><callerID>CZ</callerID><messageID>{}</messageID><certificateRequest>{}</certificateRequest></RequestCertificateRequest>",
        escape(message_id),
        B64.encode(synthetic_cvc(&[0x7F, 0x21], 3, 160))
    )
}

/// A CSN 36 9791 `GetCACertificatesRequest` element.
pub fn get_ca_certificates(message_id: &str) -> String {
    format!(
        "<GetCACertificatesRequest xmlns=\"{CSN_NS}\"><callerID>CZ</callerID><messageID>{}</messageID></GetCACertificatesRequest>",
        escape(message_id)
    )
}

/// A CSN 36 9791 `GeneralMessage` element.
pub fn general_message(message_id: &str, subject: &str) -> String {
    format!(
        "<GeneralMessage xmlns=\"{CSN_NS}\"><callerID>CZ</callerID><messageID>{}</messageID><subject>{}</subject><body>Hello from the police SPOC.</body></GeneralMessage>",
        escape(message_id),
        escape(subject)
    )
}

/// A CSN 36 9791 `SendCertificatesRequest` element (the Ministry's callback).
pub fn send_certificates(message_id: &str) -> String {
    format!(
        "<SendCertificatesRequest xmlns=\"{CSN_NS}\"><callerID>CZ</callerID><messageID>{}</messageID><certificateSequence><certificate>{}</certificate></certificateSequence><statusInfo>ok_cert_available</statusInfo></SendCertificatesRequest>",
        escape(message_id),
        B64.encode(synthetic_cvc(&[0x7F, 0x21], 5, 220))
    )
}

/// A SPOC's unsolicited `SendCertificatesRequest`: new certificates are available; no
/// messageID (it answers nothing).
pub fn new_certificates_notification() -> String {
    format!(
        "<SendCertificatesRequest xmlns=\"{CSN_NS}\"><callerID>CZ</callerID><certificateSequence><certificate>{}</certificate></certificateSequence><statusInfo>new_cert_available_notification</statusInfo></SendCertificatesRequest>",
        B64.encode(synthetic_cvc(&[0x7F, 0x21], 7, 220))
    )
}
