//! `spocgw dev-pki --out DIR`: the development PKI and ready-to-run configurations of
//! CONTRACT.md section 5. Every key is new on each run (ECDSA P-256); nothing here is for
//! production.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::sim::messages::{self, BioRequest};
use crate::xml::SoapVersion;

/// The ports written into the generated configurations.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub gateway: u16,
    pub callback: u16,
    pub admin: u16,
    pub ministry: u16,
    pub receiver: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self { gateway: 8443, callback: 8444, admin: 8081, ministry: 9443, receiver: 8445 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TPM provisioning failed: {0}")]
    Tpm(String),
}

/// CSN 36 9791 extended key usages for SPOC TLS clients and servers.
const CSN_EKU_CLIENT: &[u64] = &[1, 2, 203, 7064, 1, 1, 369791, 1];
const CSN_EKU_SERVER: &[u64] = &[1, 2, 203, 7064, 1, 1, 369791, 2];

pub(super) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub(super) pem: String,
}

fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    // aws-lc's RNG; a failing RNG leaves zeros, and the counter below still makes serials differ.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[0] &= 0x7F;
    b[0] |= 0x10;
    SerialNumber::from_slice(&b)
}

fn dn(cn: &str, o: &str, ou: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CountryName, "CZ");
    d.push(DnType::OrganizationName, o);
    if let Some(ou) = ou {
        d.push(DnType::OrganizationalUnitName, ou);
    }
    d.push(DnType::CommonName, cn);
    d
}

pub(super) fn new_ca(cn: &str, o: &str) -> Result<Ca, DevPkiError> {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, o, None);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3650);
    p.serial_number = Some(serial());
    let key = KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok(Ca { pem: cert.pem(), issuer: Issuer::new(p, key) })
}

/// What a leaf certificate is for.
pub(super) struct Leaf<'a> {
    pub(super) cn: &'a str,
    pub(super) o: &'a str,
    pub(super) ou: Option<&'a str>,
    pub(super) server: bool,
    pub(super) client: bool,
    pub(super) csn: Option<&'static [u64]>,
    /// Days of validity from now; negative `start` makes an expired certificate.
    pub(super) start_days: i64,
    pub(super) end_days: i64,
    /// A DNS name besides `localhost` (the pair link checks its peer's name).
    pub(super) dns: Option<&'a str>,
}

impl<'a> Leaf<'a> {
    pub(super) fn client(cn: &'a str, ou: &'a str) -> Self {
        Self {
            cn,
            o: "Border Police",
            ou: Some(ou),
            server: false,
            client: true,
            csn: None,
            start_days: -1,
            end_days: 365,
            dns: None,
        }
    }
    pub(super) fn server(cn: &'a str, o: &'a str) -> Self {
        Self { cn, o, ou: None, server: true, client: false, csn: None, start_days: -1, end_days: 365, dns: None }
    }
}

/// A CRL of `ca` revoking `revoked` (for key compromise), PEM.
pub(super) fn crl(
    ca: &Ca,
    number: u64,
    revoked: Vec<SerialNumber>,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<String, DevPkiError> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .into_iter()
            .map(|serial_number| RevokedCertParams {
                serial_number,
                revocation_time: this_update,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&ca.issuer)?.pem()?)
}

pub(super) fn issue(ca: &Ca, leaf: &Leaf<'_>) -> Result<(String, String, SerialNumber), DevPkiError> {
    let key = KeyPair::generate()?;
    let (cert, sn) = certify(ca, leaf, &key)?;
    Ok((cert, key.serialize_pem(), sn))
}

/// A certificate for `leaf` around a public key held elsewhere (a TPM CSR's).
fn certify(ca: &Ca, leaf: &Leaf<'_>, key: &impl rcgen::PublicKeyData) -> Result<(String, SerialNumber), DevPkiError> {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(leaf.cn, leaf.o, leaf.ou);
    p.not_before = now + Duration::days(leaf.start_days);
    p.not_after = now + Duration::days(leaf.end_days);
    let sn = serial();
    p.serial_number = Some(sn.clone());
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    if leaf.server {
        p.subject_alt_names =
            vec![SanType::DnsName("localhost".try_into()?), SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]))];
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        if let Some(name) = leaf.dns {
            p.subject_alt_names.push(SanType::DnsName(name.try_into()?));
        }
    }
    if leaf.client {
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    if let Some(oid) = leaf.csn {
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::Other(oid.to_vec()));
    }
    let cert = p.signed_by(key, &ca.issuer)?;
    Ok((cert.pem(), sn))
}

pub(super) fn write(path: &Path, contents: &str, secret: bool) -> Result<(), DevPkiError> {
    let io = |source| DevPkiError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(if secret { 0o600 } else { 0o644 });
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}

pub(super) fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> Result<(), DevPkiError> {
    write(&dir.join(format!("{name}.pem")), cert, false)?;
    write(&dir.join(format!("{name}.key")), key, true)
}

/// A TPM for the gateway's keys (`dev-pki --tpm`): provisioned afresh, its CSRs certified by
/// the development CAs, and gateway.toml naming its keys.
#[derive(Debug, Clone)]
pub struct DevTpm {
    pub tcti: String,
    pub pcrs: Vec<u8>,
}

/// Writes the development PKI, configurations and sample messages into `out`.
///
/// # Errors
/// As [`generate_with`].
pub fn generate(out: &Path, ports: Ports) -> Result<(), DevPkiError> {
    generate_with(out, ports, None)
}

/// Provisions the TPM into `out/tpm` and certifies its keys' CSRs.
fn provision_tpm(
    out: &Path,
    t: &DevTpm,
    police_ca: &Ca,
    ministry_ca: &Ca,
    leaves: [&Leaf<'_>; 3],
) -> Result<(), DevPkiError> {
    use crate::tpm::provision::{self, CALLBACK_SERVER, MINISTRY_CLIENT, POLICE_SERVER};
    let cfg = crate::tpm::TpmConfig::new(t.tcti.clone(), out.join("tpm"), t.pcrs.clone());
    cfg.check().map_err(DevPkiError::Tpm)?;
    let tpm = crate::tpm::Tpm::start(&cfg).map_err(|e| DevPkiError::Tpm(e.to_string()))?;
    // The release's policy key, which a vendor keeps offline; here it signs the swtpm's
    // current PCR values, as a release signs the values its image measures to.
    let policy_key = rcgen::KeyPair::generate()?;
    write(&out.join("release/pcr-policy.key.pem"), &policy_key.serialize_pem(), true)?;
    write(&out.join("release/pcr-policy.pub.pem"), &policy_key.public_key_pem(), false)?;
    let tpm_err = |e: crate::tpm::TpmError| DevPkiError::Tpm(e.to_string());
    let current = tpm.pcr_values(t.pcrs.clone()).map_err(tpm_err)?;
    let (pcrs, values): (Vec<u8>, Vec<[u8; 32]>) =
        current.into_iter().filter_map(|(p, v)| Some((p, <[u8; 32]>::try_from(v).ok()?))).unzip();
    crate::tpm::SignedPolicy::sign(&out.join("release/pcr-policy.key.pem"), &pcrs, &values, "development")
        .and_then(|p| p.save(&cfg.signed_policy_path()))
        .map_err(tpm_err)?;
    let manifest = match provision::provision(&cfg, &tpm, true, policy_key.public_key_raw())
        .map_err(|e| DevPkiError::Tpm(e.to_string()))?
    {
        provision::Outcome::Created(m) | provision::Outcome::AlreadyProvisioned(m) => m,
    };
    let [police_leaf, ministry_leaf, callback_leaf] = leaves;
    for (name, ca, leaf, file) in [
        (POLICE_SERVER, police_ca, police_leaf, "police-side.pem"),
        (MINISTRY_CLIENT, ministry_ca, ministry_leaf, "ministry-side.pem"),
        (CALLBACK_SERVER, ministry_ca, callback_leaf, "callback-side.pem"),
    ] {
        let csr_file = manifest
            .entry(name)
            .ok()
            .and_then(|e| e.csr.clone())
            .ok_or_else(|| DevPkiError::Tpm(format!("no CSR for {name}")))?;
        let pem = fs::read_to_string(cfg.dir.join(&csr_file))
            .map_err(|source| DevPkiError::Io { path: cfg.dir.join(&csr_file), source })?;
        // Parsing checks the CSR's signature, made in the TPM for ministry-client.
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&pem)?;
        let (cert, _) = certify(ca, leaf, &csr.public_key)?;
        write(&out.join("gateway").join(file), &cert, false)?;
    }
    let checkpoint = provision::public_key_file(&cfg.dir, crate::tpm::provision::AUDIT_CHECKPOINT);
    let pem = fs::read_to_string(&checkpoint).map_err(|source| DevPkiError::Io { path: checkpoint, source })?;
    write(&out.join("gateway/audit-checkpoint.pub.pem"), &pem, false)
}

/// Writes the development PKI, configurations and sample messages into `out`; with `tpm`, the
/// gateway's keys are made in (or sealed by) that TPM and no gateway key file is written.
///
/// # Errors
/// A key or certificate that cannot be generated, a file that cannot be written, or a TPM that
/// cannot provision.
pub fn generate_with(out: &Path, ports: Ports, tpm: Option<&DevTpm>) -> Result<(), DevPkiError> {
    generate_keeping(out, ports, tpm).map(|_| ())
}

/// The gateway's three listener and client leaves: police side, Ministry side, callback side.
pub(super) fn gateway_leaves() -> [Leaf<'static>; 3] {
    let mut police_side = Leaf::server("spocgw gateway (police side)", "Border Police");
    police_side.client = true;
    let mut ministry_side = Leaf::client("spocgw gateway (ministry side)", "spoc-gateway");
    ministry_side.csn = Some(CSN_EKU_CLIENT);
    let mut callback_side = Leaf::server("spocgw gateway (callback side)", "Border Police");
    callback_side.csn = Some(CSN_EKU_SERVER);
    [police_side, ministry_side, callback_side]
}

/// As [`generate_with`], and gives back the police and Ministry CAs (a pair issues its second
/// appliance's certificates from them).
pub(super) fn generate_keeping(out: &Path, ports: Ports, tpm: Option<&DevTpm>) -> Result<(Ca, Ca), DevPkiError> {
    let police_ca = new_ca("spocgw dev Police CA", "Border Police")?;
    let ministry_ca = new_ca("spocgw dev Ministry CA", "Ministry of Interior")?;
    let untrusted_ca = new_ca("spocgw dev Untrusted CA", "Nobody")?;
    write(&out.join("ca/police-ca.pem"), &police_ca.pem, false)?;
    write(&out.join("ca/ministry-ca.pem"), &ministry_ca.pem, false)?;
    write(&out.join("ca/untrusted-ca.pem"), &untrusted_ca.pem, false)?;

    // The gateway: server toward the police (and client toward their callback receiver),
    // client toward the Ministry, server for the Ministry's callbacks.
    let [police_side, ministry_side, callback_side] = gateway_leaves();
    if let Some(t) = tpm {
        provision_tpm(out, t, &police_ca, &ministry_ca, [&police_side, &ministry_side, &callback_side])?;
    } else {
        let (c, k, _) = issue(&police_ca, &police_side)?;
        write_pair(&out.join("gateway"), "police-side", &c, &k)?;
        let (c, k, _) = issue(&ministry_ca, &ministry_side)?;
        write_pair(&out.join("gateway"), "ministry-side", &c, &k)?;
        let (c, k, _) = issue(&ministry_ca, &callback_side)?;
        write_pair(&out.join("gateway"), "callback-side", &c, &k)?;
    }

    // The simulated Ministry and the police callback receiver.
    let mut server = Leaf::server("National SPOC (simulated)", "Ministry of Interior");
    server.csn = Some(CSN_EKU_SERVER);
    let (c, k, _) = issue(&ministry_ca, &server)?;
    write_pair(&out.join("ministry"), "server", &c, &k)?;
    let mut client = Leaf::client("National SPOC callbacks (simulated)", "national-spoc");
    client.o = "Ministry of Interior";
    client.csn = Some(CSN_EKU_CLIENT);
    let (c, k, _) = issue(&ministry_ca, &client)?;
    write_pair(&out.join("ministry"), "client", &c, &k)?;
    let (c, k, _) = issue(&police_ca, &Leaf::server("police callback receiver", "Border Police"))?;
    write_pair(&out.join("police"), "callback-receiver", &c, &k)?;

    let (officer_serial, revoked_serial) = police_clients(&out.join("clients"), &police_ca, &untrusted_ca)?;

    write_crls(out, &police_ca, &ministry_ca, officer_serial, revoked_serial)?;

    // The security officer's key that signs policy bundles (`spocgw policy sign`).
    let officer = KeyPair::generate()?;
    write(&out.join("officers/policy-officer.key"), &officer.serialize_pem(), true)?;
    write(&out.join("officers/policy-officer.pub.pem"), &officer.public_key_pem(), false)?;
    // Without a TPM: the audit checkpoint key and the pseudonymisation key as files.
    if tpm.is_none() {
        let checkpoint = KeyPair::generate()?;
        write(&out.join("gateway/audit-checkpoint.key"), &checkpoint.serialize_pem(), true)?;
        write(&out.join("gateway/audit-checkpoint.pub.pem"), &checkpoint.public_key_pem(), false)?;
        let mut pseudonym = [0u8; 32];
        aws_lc_rs::rand::fill(&mut pseudonym).map_err(|_| DevPkiError::Io {
            path: out.join("gateway/audit-pseudonym.key"),
            source: std::io::Error::other("no randomness"),
        })?;
        let hex = crate::encoding::hex(&pseudonym);
        write(&out.join("gateway/audit-pseudonym.key"), &format!("{hex}\n"), true)?;
    }
    write_files(out, ports, tpm)?;
    fs::create_dir_all(out.join("audit")).map_err(|source| DevPkiError::Io { path: out.join("audit"), source })?;
    Ok((police_ca, ministry_ca))
}

/// The police clients (`DIR/clients/`): the officer, the analyst, the second-line officer, the
/// document verifier, and the refused ones (revoked, expired, untrusted, serverAuth only);
/// the officer's and the revoked one's serials, for the CRLs.
fn police_clients(
    clients: &Path,
    police_ca: &Ca,
    untrusted_ca: &Ca,
) -> Result<(SerialNumber, SerialNumber), DevPkiError> {
    let (c, k, officer_serial) = issue(police_ca, &Leaf::client("officer-0001", "border-verifier"))?;
    write_pair(clients, "officer", &c, &k)?;
    let (c, k, _) = issue(police_ca, &Leaf::client("analyst-0001", "analyst"))?;
    write_pair(clients, "analyst", &c, &k)?;
    let (c, k, _) = issue(police_ca, &Leaf::client("second-line-0001", "second-line-officer"))?;
    write_pair(clients, "second-line", &c, &k)?;
    let (c, k, _) = issue(police_ca, &Leaf::client("dv-0001", "document-verifier"))?;
    write_pair(clients, "document-verifier", &c, &k)?;
    let (c, k, revoked_serial) = issue(police_ca, &Leaf::client("revoked-0001", "border-verifier"))?;
    write_pair(clients, "revoked", &c, &k)?;
    let mut expired = Leaf::client("expired-0001", "border-verifier");
    expired.start_days = -30;
    expired.end_days = -1;
    let (c, k, _) = issue(police_ca, &expired)?;
    write_pair(clients, "expired", &c, &k)?;
    let (c, k, _) = issue(untrusted_ca, &Leaf::client("untrusted-0001", "border-verifier"))?;
    write_pair(clients, "untrusted", &c, &k)?;
    let mut wrong = Leaf::client("serverauth-only-0001", "border-verifier");
    wrong.client = false;
    wrong.server = true;
    let (c, k, _) = issue(police_ca, &wrong)?;
    write_pair(clients, "wrong-eku", &c, &k)?;
    Ok((officer_serial, revoked_serial))
}

/// The police CA's CRL in force; the next one (the officer revoked too) and an expired one,
/// for practising rotation (the CRL reload tests use them); the Ministry CA's (empty), for the
/// callback listener.
fn write_crls(
    out: &Path,
    police_ca: &Ca,
    ministry_ca: &Ca,
    officer_serial: SerialNumber,
    revoked_serial: SerialNumber,
) -> Result<(), DevPkiError> {
    let now = OffsetDateTime::now_utc();
    let days = Duration::days;
    let police_crl = |number: u64, revoked: Vec<SerialNumber>, next_update: time::Duration| {
        crl(police_ca, number, revoked, now - Duration::minutes(5), now + next_update)
    };
    write(&out.join("ca/police-ca.crl.pem"), &police_crl(1, vec![revoked_serial.clone()], days(30))?, false)?;
    let next = police_crl(2, vec![revoked_serial.clone(), officer_serial], days(30))?;
    write(&out.join("ca/police-ca.next.crl.pem"), &next, false)?;
    let expired = crl(police_ca, 3, vec![revoked_serial], now - days(31), now - days(1))?;
    write(&out.join("ca/police-ca.expired.crl.pem"), &expired, false)?;
    write(
        &out.join("ca/ministry-ca.crl.pem"),
        &crl(ministry_ca, 1, vec![], now - Duration::minutes(5), now + days(30))?,
        false,
    )?;
    Ok(())
}

/// The configurations, the default policy bundle, the samples and the WSDLs.
fn write_files(out: &Path, ports: Ports, tpm: Option<&DevTpm>) -> Result<(), DevPkiError> {
    // The default policy bundle, to read, edit and reload.
    for (name, text) in crate::policy::bundle::EMBEDDED {
        write(&out.join("policies").join(name), text, false)?;
    }
    write(&out.join("gateway.toml"), &gateway_toml(ports, tpm), false)?;
    write(&out.join("ministry.toml"), &ministry_toml(ports), false)?;
    write(&out.join("receiver.toml"), &receiver_toml(ports), false)?;
    write_samples(&out.join("samples"))?;
    // The WSDLs next to the samples, with the schemas they import beside them and the
    // gateway's address: what an integrator generates a client from.
    let base = format!("https://127.0.0.1:{}", ports.gateway);
    for (_, name, text) in crate::gateway::wsdl::SHIPPED {
        write(&out.join("wsdl").join(name), &crate::gateway::wsdl::render(text, &base, str::to_owned), false)?;
    }
    for (name, text) in crate::xml::xsd::EMBEDDED {
        write(&out.join("wsdl").join(name), text, false)?;
    }
    Ok(())
}

fn gateway_toml(p: Ports, tpm: Option<&DevTpm>) -> String {
    let text = format!(
        r#"# spocgw gateway configuration (development PKI; written by `spocgw dev-pki`).
# Relative paths are relative to this file.

[police]
listen = "127.0.0.1:{gateway}"
cert = "gateway/police-side.pem"
key = "gateway/police-side.key"
client_ca = "ca/police-ca.pem"
crls = ["ca/police-ca.crl.pem"]

[callback]
listen = "127.0.0.1:{callback}"
cert = "gateway/callback-side.pem"
key = "gateway/callback-side.key"
client_ca = "ca/ministry-ca.pem"
crls = ["ca/ministry-ca.crl.pem"]

[admin]
listen = "127.0.0.1:{admin}"

[upstream.ministry]
url = "https://127.0.0.1:{ministry}"
ca = "ca/ministry-ca.pem"
cert = "gateway/ministry-side.pem"
key = "gateway/ministry-side.key"

[upstream.police_callback]
url = "https://127.0.0.1:{receiver}"
ca = "ca/police-ca.pem"
cert = "gateway/police-side.pem"
key = "gateway/police-side.key"

[audit]
# Records are durable before a request is forwarded; checkpoints are signed with this key.
dir = "audit"
checkpoint_key = "gateway/audit-checkpoint.key"
pseudonym_key = "gateway/audit-pseudonym.key"

[policy]
# The access policy bundle; edit it and the gateway reloads it (or send SIGHUP).
# To accept only signed bundles: spocgw policy sign --key officers/policy-officer.key policies
# then set require_signed = true and signers = ["officers/policy-officer.pub.pem"].
dir = "policies"
"#,
        gateway = p.gateway,
        callback = p.callback,
        admin = p.admin,
        ministry = p.ministry,
        receiver = p.receiver
    );
    let Some(t) = tpm else { return text };
    // The same file with every gateway key in the TPM.
    let pcrs: Vec<String> = t.pcrs.iter().map(|p| p.to_string()).collect();
    let text = text
        .replace("# Relative paths are relative to this file.\n", "# Relative paths are relative to this file.\n# Every gateway key is in the TPM or sealed by it: no private key file.\nrequire_tpm = true\n")
        .replace("key = \"gateway/police-side.key\"", "key = \"tpm:police-server\"")
        .replace("key = \"gateway/callback-side.key\"", "key = \"tpm:callback-server\"")
        .replace("key = \"gateway/ministry-side.key\"", "key = \"tpm:ministry-client\"")
        .replace("checkpoint_key = \"gateway/audit-checkpoint.key\"", "checkpoint_key = \"tpm:audit-checkpoint\"")
        .replace("pseudonym_key = \"gateway/audit-pseudonym.key\"", "pseudonym_key = \"tpm:audit-pseudonym\"");
    format!(
        "{text}\n[tpm]\n# `spocgw tpm status --config gateway.toml` shows the keys; `tpm quote` attests.\ntcti = \"{}\"\ndir = \"tpm\"\npcrs = [{}]\n",
        t.tcti,
        pcrs.join(", ")
    )
}

fn ministry_toml(p: Ports) -> String {
    format!(
        r#"# Simulated National SPOC (`spocgw sim ministry --config ministry.toml`).

[server]
listen = "127.0.0.1:{ministry}"
cert = "ministry/server.pem"
key = "ministry/server.key"
client_ca = "ca/ministry-ca.pem"

# SendCertificatesRequest callbacks go to the gateway's callback listener.
[callback]
url = "https://127.0.0.1:{callback}"
ca = "ca/ministry-ca.pem"
cert = "ministry/client.pem"
key = "ministry/client.key"

[behaviour]
latency_ms = 0
fault = "none"
request_certificate = "async"
callback_delay_ms = 300
"#,
        ministry = p.ministry,
        callback = p.callback
    )
}

fn receiver_toml(p: Ports) -> String {
    format!(
        r#"# Police callback receiver (`spocgw sim police-receiver --config receiver.toml`).

[server]
listen = "127.0.0.1:{receiver}"
cert = "police/callback-receiver.pem"
key = "police/callback-receiver.key"
client_ca = "ca/police-ca.pem"
"#,
        receiver = p.receiver
    )
}

fn write_samples(dir: &Path) -> Result<(), DevPkiError> {
    let bio = BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 2048);
    let v11 = SoapVersion::V11;
    let files = [
        ("verify-fingerprint.xml", messages::envelope(v11, &bio.verify_fingerprint())),
        ("check-identity.xml", messages::envelope(v11, &bio.check_identity())),
        ("request-certificate.xml", messages::envelope(v11, &messages::request_certificate("REQ-0001"))),
        ("get-ca-certificates.xml", messages::envelope(v11, &messages::get_ca_certificates("GCA-0001"))),
        ("general-message.xml", messages::envelope(v11, &messages::general_message("GM-0001", "test"))),
        ("send-certificates.xml", messages::envelope(v11, &messages::send_certificates("REQ-0001"))),
    ];
    for (name, text) in files {
        write(&dir.join(name), &text, false)?;
    }
    Ok(())
}
