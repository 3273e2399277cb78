//! The firmware's TPM event log (`/sys/kernel/security/tpm0/binary_bios_measurements`), read
//! off the appliance: the TCG PC Client crypto-agile format (a SHA-1-format header event whose
//! Spec ID Event lists the banks, then `TCG_PCR_EVENT2` records). Replaying its SHA-256
//! digests gives the PCR values the log claims; a verifier compares them with a quote, which
//! the TPM signed, and then reads from the log what the firmware measured: whether Secure Boot
//! was on, which variables and which db entry verified the boot. The log itself proves nothing
//! until its replay equals the quoted value.

use std::collections::BTreeMap;

use crate::encoding::Sha256;

const EV_NO_ACTION: u32 = 0x0000_0003;
const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;
const TPM_ALG_SHA256: u16 = 0x000B;
/// A log larger than this is not a firmware's (a few hundred events of a few KiB at most).
const MAX_LOG: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event log: {0}")]
pub struct EventLogError(String);

fn bad(why: impl Into<String>) -> EventLogError {
    EventLogError(why.into())
}

/// What a replay of the log gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// PCR values (SHA-256 bank) for every PCR the log extends.
    pub pcrs: BTreeMap<u8, [u8; 32]>,
    /// The `SecureBoot` variable the firmware measured into PCR 7 (true: enforced).
    pub secure_boot: Option<bool>,
    /// SHA-256 of the data of each Secure Boot database the firmware measured into PCR 7 (PK,
    /// KEK, db, dbx), by name.
    pub databases: BTreeMap<String, [u8; 32]>,
    /// SHA-256 of each certificate (or hash) that verified an image (EV_EFI_VARIABLE_AUTHORITY).
    pub authorities: Vec<[u8; 32]>,
    /// Events extended, per PCR.
    pub events: BTreeMap<u8, usize>,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventLogError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| bad(format!("cut short at byte {} ({n} more bytes expected)", self.at)))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, EventLogError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, EventLogError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// The digest sizes the Spec ID Event declares, by algorithm.
fn spec_id(event: &[u8]) -> Result<Vec<(u16, usize)>, EventLogError> {
    let mut r = Reader { data: event, at: 0 };
    if r.take(16)? != b"Spec ID Event03\0" {
        return Err(bad("not a crypto-agile log (no Spec ID Event03 header)"));
    }
    r.take(8)?; // platform class, version, errata, uintn size
    let n = r.u32()?;
    if n == 0 || n > 16 {
        return Err(bad(format!("{n} digest algorithms declared")));
    }
    let mut sizes = Vec::new();
    for _ in 0..n {
        let alg = r.u16()?;
        let size = usize::from(r.u16()?);
        if size == 0 || size > 64 {
            return Err(bad(format!("algorithm {alg:#06x} with a {size}-byte digest")));
        }
        sizes.push((alg, size));
    }
    if !sizes.iter().any(|(alg, _)| *alg == TPM_ALG_SHA256) {
        return Err(bad("the log has no SHA-256 bank"));
    }
    Ok(sizes)
}

/// `UEFI_VARIABLE_DATA`: the variable's name and data.
fn variable(event: &[u8]) -> Option<(String, &[u8])> {
    let mut r = Reader { data: event, at: 0 };
    r.take(16).ok()?;
    let name_len = usize::try_from(u64::from_le_bytes(r.take(8).ok()?.try_into().ok()?)).ok()?;
    let data_len = usize::try_from(u64::from_le_bytes(r.take(8).ok()?.try_into().ok()?)).ok()?;
    let name = r.take(name_len.checked_mul(2)?).ok()?;
    let units: Vec<u16> = name.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    Some((String::from_utf16(&units).ok()?, r.take(data_len).ok()?))
}

/// Replays `log`.
///
/// # Errors
/// The log is not a crypto-agile TCG log, or is cut short or malformed.
pub fn replay(log: &[u8]) -> Result<Replay, EventLogError> {
    if log.len() > MAX_LOG {
        return Err(bad(format!("{} bytes: larger than any firmware's log", log.len())));
    }
    let mut r = Reader { data: log, at: 0 };
    // The header: a TCG_PCClientPCREvent (SHA-1 format) whose data is the Spec ID Event.
    r.take(8 + 20)?;
    let size = r.u32()? as usize;
    let sizes = spec_id(r.take(size)?)?;
    let mut out = Replay::default();
    while !r.done() {
        let pcr = r.u32()?;
        let kind = r.u32()?;
        let count = r.u32()?;
        if count as usize != sizes.len() {
            return Err(bad(format!(
                "an event at byte {} carries {count} digests, the header declared {}",
                r.at,
                sizes.len()
            )));
        }
        let mut sha256 = None;
        for _ in 0..count {
            let alg = r.u16()?;
            let size = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| *s)
                .ok_or_else(|| bad(format!("undeclared algorithm {alg:#06x}")))?;
            let digest = r.take(size)?;
            if alg == TPM_ALG_SHA256 {
                sha256 = <[u8; 32]>::try_from(digest).ok();
            }
        }
        let size = r.u32()? as usize;
        let event = r.take(size)?;
        let pcr = u8::try_from(pcr).ok().filter(|p| *p <= 23).ok_or_else(|| bad(format!("PCR {pcr}")))?;
        if kind == EV_NO_ACTION {
            continue;
        }
        let digest = sha256.ok_or_else(|| bad("an event without a SHA-256 digest"))?;
        let value = out.pcrs.entry(pcr).or_insert([0u8; 32]);
        *value = Sha256::of_parts(&[value.as_slice(), &digest]).0;
        *out.events.entry(pcr).or_default() += 1;
        if pcr == 7 {
            match (kind, variable(event)) {
                (EV_EFI_VARIABLE_DRIVER_CONFIG, Some((name, data))) if name == "SecureBoot" => {
                    out.secure_boot = Some(data == [1]);
                }
                (EV_EFI_VARIABLE_DRIVER_CONFIG, Some((name, data))) => {
                    out.databases.insert(name, Sha256::of_parts(&[data]).0);
                }
                (EV_EFI_VARIABLE_AUTHORITY, Some((_, data))) => {
                    // EFI_SIGNATURE_DATA: the owner GUID, then the certificate or hash.
                    out.authorities.push(Sha256::of_parts(&[data.get(16..).unwrap_or_default()]).0);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend_from_slice(&[0; 8]);
        spec.extend_from_slice(&2u32.to_le_bytes());
        spec.extend_from_slice(&0x0004u16.to_le_bytes());
        spec.extend_from_slice(&20u16.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        spec.extend_from_slice(&32u16.to_le_bytes());
        spec.push(0);
        let mut log = vec![0u8; 8 + 20];
        log[4..8].copy_from_slice(&EV_NO_ACTION.to_le_bytes());
        log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec);
        log
    }

    fn event(log: &mut Vec<u8>, pcr: u32, kind: u32, data: &[u8]) {
        log.extend_from_slice(&pcr.to_le_bytes());
        log.extend_from_slice(&kind.to_le_bytes());
        log.extend_from_slice(&2u32.to_le_bytes());
        log.extend_from_slice(&0x0004u16.to_le_bytes());
        log.extend_from_slice(&[0xAA; 20]);
        log.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        log.extend_from_slice(&Sha256::of_parts(&[data]).0);
        log.extend_from_slice(&(data.len() as u32).to_le_bytes());
        log.extend_from_slice(data);
    }

    fn var(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0x11; 16];
        v.extend_from_slice(&(name.len() as u64).to_le_bytes());
        v.extend_from_slice(&(data.len() as u64).to_le_bytes());
        for u in name.encode_utf16() {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn replays_sha256_reads_secure_boot_and_skips_no_action() {
        let mut log = header();
        let sb = var("SecureBoot", &[1]);
        event(&mut log, 7, EV_EFI_VARIABLE_DRIVER_CONFIG, &sb);
        event(&mut log, 7, EV_NO_ACTION, b"ignored");
        event(&mut log, 7, EV_EFI_VARIABLE_AUTHORITY, &var("db", b"0123456789abcdefCERT"));
        let r = replay(&log).unwrap();
        let first = Sha256::of_parts(&[&[0u8; 32], &Sha256::of_parts(&[&sb]).0]).0;
        let auth = Sha256::of_parts(&[&var("db", b"0123456789abcdefCERT")]).0;
        assert_eq!(r.pcrs[&7], Sha256::of_parts(&[&first, &auth]).0);
        assert_eq!(r.secure_boot, Some(true));
        assert_eq!(r.authorities, vec![Sha256::of_parts(&[b"CERT"]).0]);
        assert_eq!(r.events[&7], 2);
    }

    #[test]
    fn refuses_cut_short_foreign_and_malformed_logs() {
        let mut log = header();
        event(&mut log, 7, EV_EFI_VARIABLE_DRIVER_CONFIG, &var("SecureBoot", &[0]));
        assert!(replay(&log[..log.len() - 1]).unwrap_err().0.contains("cut short"));
        assert!(replay(b"junk").is_err());
        let mut other = header();
        other[28 + 4] = b'X';
        assert!(replay(&other).unwrap_err().0.contains("crypto-agile"));
        let mut wrong_pcr = header();
        event(&mut wrong_pcr, 99, 1, b"x");
        assert!(replay(&wrong_pcr).is_err());
        assert_eq!(replay(&log).unwrap().secure_boot, Some(false));
    }

    /// A real log: OVMF 2022.11 with Secure Boot on and the image's development keys, booting
    /// the signed UKI (`make image-test`'s second boot; regenerate with KEEP=1 from
    /// vm/attest-out/eventlog).
    #[test]
    fn a_real_ovmf_log_replays_to_its_quoted_pcr_7_with_secure_boot_on() {
        let log = include_bytes!("../../tests/data/eventlog-ovmf-secureboot.bin");
        let r = replay(log).unwrap();
        assert_eq!(r.secure_boot, Some(true));
        assert_eq!(r.databases.keys().map(String::as_str).collect::<Vec<_>>(), ["KEK", "PK", "db", "dbx"]);
        assert_eq!(r.authorities.len(), 1);
        assert_eq!(
            crate::encoding::hex(&r.pcrs[&7]),
            "59eb7689b52e3b325b1c8d17aa41fa7bd4446aefaad1cbdbc86d0760646039a0",
            "the value tpm2_eventlog and the TPM's quote gave"
        );
        assert_eq!(r.events[&11], 8, "systemd-stub: four sections, each name and data");
    }
}
