//! A pair on loopback: the development PKI for appliance A (`spocgw dev-pki`), appliance B's own
//! keys and certificates, the pair link's CA and certificates, each witness's seed and vkey, the
//! two gateway configurations with their `[pair]` tables, and HAProxy's configuration.

use std::path::Path;

use super::super::dev_pki::{self, DevPkiError, Leaf, Ports, crl, issue, new_ca, write, write_pair};

/// Every port of the pair.
#[derive(Debug, Clone, Copy)]
pub struct PairPorts {
    /// A's listeners, the Ministry's and the receiver's (as `dev-pki` writes them).
    pub a: Ports,
    pub b_police: u16,
    pub b_callback: u16,
    pub b_admin: u16,
    pub a_pair: u16,
    pub b_pair: u16,
    /// The balancer's police and callback frontends.
    pub lb_police: u16,
    pub lb_callback: u16,
}

fn seed(out: &Path, name: &str) -> Result<String, DevPkiError> {
    let mut seed = zeroize::Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::fill(&mut seed)
        .map_err(|_| DevPkiError::Io { path: out.join(name), source: std::io::Error::other("no randomness") })?;
    let vkey = crate::audit::note::WitnessKey::from_seed(&crate::gateway::pair::PairConfig::witness_name(name), &seed)
        .map_err(|e| DevPkiError::Io { path: out.join(name), source: std::io::Error::other(e.to_string()) })?
        .vkey();
    write(&out.join(format!("pair/{name}-witness.key")), &format!("{}\n", crate::encoding::hex(&seed)), true)?;
    write(&out.join(format!("pair/{name}-witness.vkey")), &format!("{}\n", vkey.text()), false)?;
    Ok(vkey.text())
}

/// Writes the pair into `out`: `gateway-a.toml`, `gateway-b.toml`, `haproxy.cfg`, `pair/`,
/// `gateway-b/`, and `ministry.toml` calling back B (the callback of a request A forwarded).
///
/// # Errors
/// As [`dev_pki::generate`].
pub fn generate(out: &Path, p: PairPorts) -> Result<(), DevPkiError> {
    let (police_ca, ministry_ca) = dev_pki::generate_keeping(out, p.a, None)?;
    // B's own key pairs and certificates, from the same CAs as A's.
    let [police_side, ministry_side, callback_side] = dev_pki::gateway_leaves();
    for (ca, leaf, file) in [
        (&police_ca, &police_side, "police-side"),
        (&ministry_ca, &ministry_side, "ministry-side"),
        (&ministry_ca, &callback_side, "callback-side"),
    ] {
        let (c, k, _) = issue(ca, leaf)?;
        write_pair(&out.join("gateway-b"), file, &c, &k)?;
    }
    let checkpoint = rcgen::KeyPair::generate()?;
    write(&out.join("gateway-b/audit-checkpoint.key"), &checkpoint.serialize_pem(), true)?;
    write(&out.join("gateway-b/audit-checkpoint.pub.pem"), &checkpoint.public_key_pem(), false)?;
    let mut pseudonym = zeroize::Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::fill(&mut pseudonym).map_err(|_| DevPkiError::Io {
        path: out.join("gateway-b/audit-pseudonym.key"),
        source: std::io::Error::other("no randomness"),
    })?;
    write(&out.join("gateway-b/audit-pseudonym.key"), &format!("{}\n", crate::encoding::hex(&pseudonym)), true)?;
    // The pair link: its own CA, one certificate per appliance (server and client, named).
    let pair_ca = new_ca("spocgw dev pair-link CA", "Border Police")?;
    write(&out.join("pair/pair-ca.pem"), &pair_ca.pem, false)?;
    for name in ["gateway-a", "gateway-b"] {
        let mut leaf = Leaf::server(name, "Border Police");
        leaf.client = true;
        leaf.dns = Some(name);
        let (c, k, _) = issue(&pair_ca, &leaf)?;
        write_pair(&out.join("pair"), name, &c, &k)?;
        seed(out, name)?;
    }
    // B's earlier pair certificate, as a stolen or replaced appliance would still hold it:
    // revoked on the pair CA's CRL, which both appliances load.
    let mut old = Leaf::server("gateway-b", "Border Police");
    old.client = true;
    old.dns = Some("gateway-b");
    let (c, k, serial) = issue(&pair_ca, &old)?;
    write_pair(&out.join("pair"), "gateway-b-revoked", &c, &k)?;
    let now = time::OffsetDateTime::now_utc();
    let list = crl(&pair_ca, 1, vec![serial], now - time::Duration::minutes(5), now + time::Duration::days(30))?;
    write(&out.join("pair/pair-ca.crl.pem"), &list, false)?;
    let a = std::fs::read_to_string(out.join("gateway.toml"))
        .map_err(|source| DevPkiError::Io { path: out.join("gateway.toml"), source })?;
    write(
        &out.join("gateway-a.toml"),
        &format!("{}{}", a.replace("dir = \"audit\"", "dir = \"audit-a\"\norigin = \"spocgw-a\""), pair_table(&p, 'a')),
        false,
    )?;
    let b = a
        .replace(
            &format!("127.0.0.1:{}\"\ncert = \"gateway/police-side", p.a.gateway),
            &format!("127.0.0.1:{}\"\ncert = \"gateway/police-side", p.b_police),
        )
        .replace(
            &format!("127.0.0.1:{}\"\ncert = \"gateway/callback-side", p.a.callback),
            &format!("127.0.0.1:{}\"\ncert = \"gateway/callback-side", p.b_callback),
        )
        .replace(
            &format!("127.0.0.1:{}\"\n\n[upstream.ministry]", p.a.admin),
            &format!("127.0.0.1:{}\"\n\n[upstream.ministry]", p.b_admin),
        )
        .replace("\"gateway/", "\"gateway-b/")
        .replace("dir = \"audit\"", "dir = \"audit-b\"\norigin = \"spocgw-b\"");
    write(&out.join("gateway-b.toml"), &format!("{b}{}", pair_table(&p, 'b')), false)?;
    let ministry = out.join("ministry.toml");
    let m = std::fs::read_to_string(&ministry).map_err(|source| DevPkiError::Io { path: ministry.clone(), source })?;
    write(
        &ministry,
        &m.replace(&format!("127.0.0.1:{}\"", p.a.callback), &format!("127.0.0.1:{}\"", p.b_callback)),
        false,
    )?;
    write(&out.join("haproxy.cfg"), &haproxy_cfg(&p), false)
}

fn pair_table(p: &PairPorts, me: char) -> String {
    let (name, peer, listen, peer_port) = if me == 'a' {
        ("gateway-a", "gateway-b", p.a_pair, p.b_pair)
    } else {
        ("gateway-b", "gateway-a", p.b_pair, p.a_pair)
    };
    let peer_dir = if me == 'a' { "gateway-b" } else { "gateway" };
    let peer_origin = if me == 'a' { "spocgw-b" } else { "spocgw-a" };
    format!(
        r#"
[pair]
# The other appliance of the pair (docs/pair.md): correlation, witness, recovery copy.
name = "{name}"
listen = "127.0.0.1:{listen}"
peer_url = "https://127.0.0.1:{peer_port}"
peer_name = "{peer}"
cert = "pair/{name}.pem"
key = "pair/{name}.key"
ca = "pair/pair-ca.pem"
crls = ["pair/pair-ca.crl.pem"]
witness_key = "pair/{name}-witness.key"
peer_origin = "{peer_origin}"
peer_checkpoint_key = "{peer_dir}/audit-checkpoint.pub.pem"
peer_witness = "pair/{peer}-witness.vkey"
dir = "pair-{me}"
backup_dir = "backup-{me}"
timeout_ms = 1000
sync_interval_ms = 500
"#
    )
}

/// HAProxy in TCP mode: TLS passes through to the appliances, which terminate mutual TLS; each
/// appliance is checked on its `/readyz` every 500 ms and taken out after two failures; a
/// connection refused by a dead appliance is sent to the other (`option redispatch`).
pub fn haproxy_cfg(p: &PairPorts) -> String {
    let backend = |name: &str, port_a: u16, port_b: u16| {
        format!(
            "backend {name}\n    balance roundrobin\n    option redispatch\n    retries 2\n    option httpchk GET /readyz\n    http-check expect status 200\n    default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions\n    server a 127.0.0.1:{port_a} check port {}\n    server b 127.0.0.1:{port_b} check port {}\n",
            p.a.admin, p.b_admin
        )
    };
    format!(
        "# spocgw pair (development): `haproxy -f haproxy.cfg -db`\nglobal\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n    timeout check 1s\n\nfrontend police\n    bind 127.0.0.1:{}\n    default_backend police\n\nfrontend callback\n    bind 127.0.0.1:{}\n    default_backend callback\n\n{}\n{}",
        p.lb_police,
        p.lb_callback,
        backend("police", p.a.gateway, p.b_police),
        backend("callback", p.a.callback, p.b_callback)
    )
}
