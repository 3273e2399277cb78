//! The audit log's checkpoints as C2SP signed notes (c2sp.org/tlog-checkpoint), and the
//! witnesses' Ed25519 cosignatures over them (c2sp.org/tlog-cosignature, `cosignature/v1`).
//!
//! A checkpoint's note body is the standard three lines (origin, tree size, base64 root) and two
//! extension lines carrying what spocgw's own checkpoint signature also covers (its time, and the
//! TPM counter when there is one). The log's signature line holds that P-256 signature; its
//! signature type is `0xff` followed by `spocgw/checkpoint/v1` (signed-note: a type without an
//! assigned byte), because it covers spocgw's checkpoint message rather than the note text.
//! Cosignatures are standard: any tlog client verifies them with the witness's vkey.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::Checkpoint;
use super::merkle::{self, Hash};

/// The dash that starts a signature line (U+2014).
const DASH: &str = "\u{2014} ";
const TYPE_COSIGNATURE_V1: u8 = 0x04;
const TYPE_SPOCGW: &[u8] = b"\xffspocgw/checkpoint/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoteError {
    #[error("not a checkpoint note: {0}")]
    Malformed(String),
    #[error("a witness key must be 32 bytes (an Ed25519 seed)")]
    Seed,
    #[error("not a vkey (NAME+KEYID+BASE64, type 0x04): {0}")]
    Vkey(String),
}

/// A checkpoint's note body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteBody {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines, without their newlines.
    pub extensions: Vec<String>,
}

/// One signature line of a note: the key name and the decoded base64 (key ID first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigLine {
    pub name: String,
    pub data: Vec<u8>,
}

impl SigLine {
    /// The line as it stands in a note, with its newline.
    pub fn text(&self) -> String {
        format!("{DASH}{} {}\n", self.name, B64.encode(&self.data))
    }

    /// One signature line, without its newline.
    ///
    /// # Errors
    /// No dash, no key name, a signature that is not base64 or too short.
    pub fn parse(line: &str) -> Result<SigLine, NoteError> {
        let rest =
            line.strip_prefix(DASH).ok_or_else(|| NoteError::Malformed("a signature line without \u{2014}".into()))?;
        let (name, b64) =
            rest.rsplit_once(' ').ok_or_else(|| NoteError::Malformed("a signature line without a key name".into()))?;
        let data = B64.decode(b64).map_err(|_| NoteError::Malformed("a signature that is not base64".into()))?;
        if name.is_empty() || name.contains(char::is_whitespace) || data.len() < 5 {
            return Err(NoteError::Malformed("a signature line with a bad name or a short signature".into()));
        }
        Ok(SigLine { name: name.to_owned(), data })
    }
}

impl NoteBody {
    /// The body of `cp`'s note.
    ///
    /// # Errors
    /// The checkpoint's root is not 64 hex digits.
    pub fn of(cp: &Checkpoint) -> Result<NoteBody, NoteError> {
        let root = merkle::unhex(&cp.root_hash).ok_or_else(|| NoteError::Malformed("a root that is not hex".into()))?;
        let mut extensions = vec![format!("spocgw-time {}", cp.time)];
        extensions.extend(cp.tpm_counter.map(|c| format!("spocgw-counter {c}")));
        Ok(NoteBody { origin: cp.origin.clone(), size: cp.tree_size, root, extensions })
    }

    /// The note text the signatures cover (every line ends in a newline).
    pub fn text(&self) -> String {
        let mut t = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            t.push_str(e);
            t.push('\n');
        }
        t
    }

    fn extension(&self, key: &str) -> Option<&str> {
        self.extensions.iter().find_map(|e| e.strip_prefix(key)?.strip_prefix(' '))
    }

    /// Splits a note into its body and signature lines.
    ///
    /// # Errors
    /// The text is not a checkpoint note: fewer than three body lines, a size that is not a
    /// decimal, a root that is not 32 bytes of base64, no blank line, a bad signature line.
    pub fn parse(text: &str) -> Result<(NoteBody, Vec<SigLine>), NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_owned());
        let (body, sigs) = text.split_once("\n\n").ok_or_else(|| bad("no blank line before the signatures"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(|| bad("no origin line"))?;
        let size_line = lines.next().ok_or_else(|| bad("no tree size line"))?;
        if size_line.is_empty() || (size_line.starts_with('0') && size_line != "0") {
            return Err(bad("a tree size that is not a decimal without leading zeroes"));
        }
        let size: u64 = size_line.parse().map_err(|_| bad("a tree size that is not a decimal"))?;
        let root: Hash = B64
            .decode(lines.next().ok_or_else(|| bad("no root hash line"))?)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("a root hash that is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an empty extension line"));
        }
        let sigs = sigs.strip_suffix('\n').ok_or_else(|| bad("a signature line without its newline"))?;
        let sigs = sigs.split('\n').map(SigLine::parse).collect::<Result<Vec<_>, _>>()?;
        Ok((NoteBody { origin: origin.to_owned(), size, root, extensions }, sigs))
    }

    /// The spocgw checkpoint this body and the log's signature line stand for, for
    /// [`super::verify::check_signature`]; None when the line is not the log key's.
    pub fn checkpoint(&self, line: &SigLine, point: &[u8]) -> Option<Checkpoint> {
        let (id, signature) = line.data.split_at_checked(4)?;
        if line.name != self.origin || id != log_key_id(&self.origin, point) {
            return None;
        }
        let time = self.extension("spocgw-time")?.to_owned();
        let tpm_counter = match self.extension("spocgw-counter") {
            Some(c) => Some(c.parse().ok()?),
            None => None,
        };
        Some(Checkpoint {
            origin: self.origin.clone(),
            tree_size: self.size,
            root_hash: merkle::hex(&self.root),
            time,
            key_id: super::key_id(point),
            signature: B64.encode(signature),
            tpm_counter,
        })
    }
}

/// The signed-note key ID of a log's checkpoint key (P-256 point, uncompressed).
pub fn log_key_id(origin: &str, point: &[u8]) -> [u8; 4] {
    key_id4(origin, TYPE_SPOCGW, point)
}

fn key_id4(name: &str, kind: &[u8], key: &[u8]) -> [u8; 4] {
    let mut m = Vec::with_capacity(name.len() + 1 + kind.len() + key.len());
    m.extend_from_slice(name.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(kind);
    m.extend_from_slice(key);
    let d = digest(&SHA256, &m);
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_ref()[..4]);
    id
}

/// `cp` as a signed note: its body and the log's signature line.
///
/// # Errors
/// As [`NoteBody::of`], or a signature that is not base64.
pub fn checkpoint_note(cp: &Checkpoint, point: &[u8]) -> Result<String, NoteError> {
    let body = NoteBody::of(cp)?;
    let mut data = log_key_id(&cp.origin, point).to_vec();
    data.extend(B64.decode(&cp.signature).map_err(|_| NoteError::Malformed("a signature that is not base64".into()))?);
    Ok(format!("{}\n{}", body.text(), SigLine { name: cp.origin.clone(), data }.text()))
}

fn cosigned_message(body: &NoteBody, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{}", body.text()).into_bytes()
}

/// A witness's verifier key: its name and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vkey {
    pub name: String,
    pub public: [u8; 32],
}

impl Vkey {
    fn id(&self) -> [u8; 4] {
        key_id4(&self.name, &[TYPE_COSIGNATURE_V1], &self.public)
    }

    /// The signed-note vkey text: `NAME+KEYID+BASE64(0x04 || public key)`.
    pub fn text(&self) -> String {
        let mut k = vec![TYPE_COSIGNATURE_V1];
        k.extend_from_slice(&self.public);
        format!("{}+{}+{}", self.name, crate::encoding::hex(&self.id()), B64.encode(k))
    }

    /// # Errors
    /// Not three `+`-separated parts, not a type 0x04 key of 32 bytes, or a key ID that does not
    /// match.
    pub fn parse(text: &str) -> Result<Vkey, NoteError> {
        let text = text.trim();
        let bad = || NoteError::Vkey(text.chars().take(80).collect());
        // A key name holds no '+'; the base64 key may.
        let mut parts = text.splitn(3, '+');
        let (name, id, key) =
            (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
        let key = B64.decode(key).map_err(|_| bad())?;
        if key.len() != 33 || key[0] != TYPE_COSIGNATURE_V1 || name.is_empty() {
            return Err(bad());
        }
        let v = Vkey { name: name.to_owned(), public: key[1..].try_into().map_err(|_| bad())? };
        if crate::encoding::hex(&v.id()) != id {
            return Err(bad());
        }
        Ok(v)
    }

    /// The cosignature's timestamp when one of `lines` is this witness's valid cosignature on
    /// `body`; lines of other keys are ignored.
    pub fn verify(&self, body: &NoteBody, lines: &[SigLine]) -> Option<u64> {
        let id = self.id();
        lines.iter().filter(|l| l.name == self.name && l.data.len() == 4 + 8 + 64 && l.data[..4] == id).find_map(|l| {
            let ts = u64::from_be_bytes(l.data[4..12].try_into().ok()?);
            UnparsedPublicKey::new(&ED25519, self.public)
                .verify(&cosigned_message(body, ts), &l.data[12..])
                .ok()
                .map(|()| ts)
        })
    }
}

/// A witness's signing key (an Ed25519 seed, sealed by the TPM or a file in development).
pub struct WitnessKey {
    name: String,
    pair: Ed25519KeyPair,
}

impl WitnessKey {
    /// # Errors
    /// The seed is not 32 bytes.
    pub fn from_seed(name: &str, seed: &Zeroizing<Vec<u8>>) -> Result<WitnessKey, NoteError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteError::Seed)?;
        Ok(WitnessKey { name: name.to_owned(), pair })
    }

    pub fn vkey(&self) -> Vkey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        Vkey { name: self.name.clone(), public }
    }

    /// A `cosignature/v1` line on `body` at `timestamp` (POSIX seconds).
    pub fn cosign(&self, body: &NoteBody, timestamp: u64) -> SigLine {
        let mut data = self.vkey().id().to_vec();
        data.extend_from_slice(&timestamp.to_be_bytes());
        data.extend_from_slice(self.pair.sign(&cosigned_message(body, timestamp)).as_ref());
        SigLine { name: self.name.clone(), data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> NoteBody {
        NoteBody { origin: "example.com/log".into(), size: 7, root: [9; 32], extensions: vec!["spocgw-time t".into()] }
    }

    #[test]
    fn notes_round_trip_and_cosignatures_verify_only_for_their_key_and_body() {
        let key = WitnessKey::from_seed("w.example/a", &Zeroizing::new(vec![1; 32])).unwrap();
        let other = WitnessKey::from_seed("w.example/a", &Zeroizing::new(vec![2; 32])).unwrap();
        let b = body();
        let line = key.cosign(&b, 1_700_000_000);
        let note = format!("{}\n{}", b.text(), line.text());
        let (parsed, lines) = NoteBody::parse(&note).unwrap();
        assert_eq!(parsed, b);
        let vkey = Vkey::parse(&key.vkey().text()).unwrap();
        assert_eq!(vkey.verify(&parsed, &lines), Some(1_700_000_000));
        assert_eq!(other.vkey().verify(&parsed, &lines), None, "another key's check");
        let mut grown = parsed.clone();
        grown.size = 8;
        assert_eq!(vkey.verify(&grown, &lines), None, "another body");
        assert!(Vkey::parse("w+00000000+AAAA").is_err());
        // Base64 keys hold '+' and '/' now and then: every one parses back.
        for seed in 0..64u8 {
            let v = WitnessKey::from_seed("w.example/b", &Zeroizing::new(vec![seed; 32])).unwrap().vkey();
            assert_eq!(Vkey::parse(&v.text()), Ok(v));
        }
        assert!(NoteBody::parse("o\n07\nAAAA\n\n").is_err(), "leading zero");
    }
}
