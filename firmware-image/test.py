#!/usr/bin/env python3
"""make image-test: the appliance image booted under qemu (TCG, q35 with SMM, OVMF with Secure
Boot and the variables the build enrolled) with a fresh swtpm as its TPM, used as an operator
and a verifier would, then attacked.

  1. first boot: the data partition is formatted, the TPM provisioned, the CSRs written to the
     provisioning medium (a FAT disk labelled SPOCGW-PROV); nothing serves yet
  2. the CSRs certified by a development CA on the host; the medium carries gateway.toml, the
     certificates, the Ministry's outbound rule and a verifier's nonce; second boot: the
     gateway starts (Type=notify), an officer's request through port forwarding reaches the
     simulated Ministry on the host: 200 MATCH; the boot's quote verifies against the PCR 7
     and PCR 11 values the build predicted, with the firmware's event log (`spocgw attest
     verify`, and `tpm2_checkquote`)
  3. one byte of the root filesystem flipped: dm-verity refuses the root, nothing serves
  4. the UKI rebuilt with another command line and signed with the db key: it boots, but
     PCR 11 differs, so no key opens, nothing serves, and that boot's quote fails verification
  5. the same UKI unsigned: the firmware refuses it (Secure Boot), nothing serves
  6. an attacker with the machine in hand: Secure Boot off, another kernel boot (qemu's direct
     kernel load: no systemd-stub) whose initramfs replays into PCR 11 the UKI's section
     digests and the boot phases from user space, then hands over to the genuine root. PCR 11
     reaches the predicted value, but PCR 7 does not: no key opens, nothing serves, the quote
     fails verification naming PCR 7

Prints a table like the demo's; exit 1 if any row fails. Run as root (mtools, qemu, swtpm)."""

import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "firmware-image" / "out"
PARTS = ROOT / "firmware-image" / "build" / "parts"
SPOCGW = Path(os.environ.get("SPOCGW_BIN", ROOT / "target" / "debug" / "spocgw"))
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
# The variables the build enrolled (Secure Boot on, the project's keys), and the firmware's
# defaults (no keys: Secure Boot off), for the attacker.
OVMF_VARS = OUT / "OVMF_VARS.fd"
OVMF_VARS_PLAIN = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SB_KEYS = Path(os.environ.get("SECUREBOOT_KEYS", ROOT / "firmware-image" / "build" / "keys" / "secureboot"))
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
# Generous: this machine may itself be a virtual machine whose host stalls it for minutes (a
# wait returns as soon as what it waits for shows).
BOOT_LIMIT = float(os.environ.get("BOOT_LIMIT", "600"))
# What the gateway says when the TPM refuses its keys in this boot state.
KEYS_REFUSED = r"PCR values no longer match the signed PCR policy"

rows = []


def row(scenario, expected, observed, ok):
    rows.append((scenario, expected, observed, bool(ok)))
    print(f"  {'ok' if ok else 'FAILED'}: {scenario}: {observed}", flush=True)


def run(*args, check=True, **kw):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_tools():
    missing = [t for t in ["qemu-system-x86_64", "qemu-img", "swtpm", "mcopy", "mkfs.vfat", "openssl", "curl",
                           "objcopy", "tpm2_checkquote", "sbsign", "cpio"] if shutil.which(t) is None]
    missing += [str(p) for p in [OVMF_CODE, OVMF_VARS, OVMF_VARS_PLAIN, STUB, SPOCGW, OUT / "disk.img",
                                 SB_KEYS / "db.key"] if not p.exists()]
    if missing:
        print(f"image-test: missing {', '.join(missing)} (make image-deps image)", file=sys.stderr)
        sys.exit(1)


class Pki:
    """Development CAs on the host: the police CA (officers, the appliance's police-side
    certificate) and the Ministry CA (the simulated SPOC, the appliance's client certificate)."""

    def __init__(self, d: Path):
        self.d = d
        d.mkdir(parents=True)
        for ca in ["police-ca", "ministry-ca"]:
            run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", d / f"{ca}.key", "-out", d / f"{ca}.pem", "-days", "30", "-subj", f"/O=spocgw test/CN={ca}",
                "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.issue("police-ca", "officer", "/C=CZ/O=Border Police/OU=border-verifier/CN=officer-0001", "clientAuth")
        self.issue("ministry-ca", "ministry", "/O=Ministry of Interior/CN=ministry.test", "serverAuth",
                   "DNS:ministry.test,IP:127.0.0.1")
        # The operator's key: it signs the appliance's configuration bundles.
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", d / "operator.key")
        run("openssl", "pkey", "-in", d / "operator.key", "-pubout", "-out", d / "operator.pub.pem")

    def issue(self, ca, name, subject, eku, san=None):
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.d / f"{name}.key", "-out", self.d / f"{name}.csr", "-subj", subject)
        self.sign(ca, self.d / f"{name}.csr", self.d / f"{name}.pem", eku, san)

    def sign(self, ca, csr, out, eku, san=None):
        ext = self.d / f"{out.stem}.ext"
        lines = ["basicConstraints=critical,CA:false", "keyUsage=critical,digitalSignature",
                 f"extendedKeyUsage={eku}"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        run("openssl", "x509", "-req", "-in", csr, "-CA", self.d / f"{ca}.pem", "-CAkey", self.d / f"{ca}.key",
            "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", out)


class Vm:
    """One appliance under qemu: its disk (an overlay over the image), its TPM (swtpm, state
    kept across boots), its UEFI variables and its provisioning medium."""

    def __init__(self, w: Path, disk: Path, variables: Path = OVMF_VARS):
        self.w = w
        w.mkdir(parents=True, exist_ok=True)
        (w / "tpm").mkdir(exist_ok=True)
        shutil.copy(variables, w / "vars.fd")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", disk, "-F", "raw", w / "disk.qcow2")
        self.medium = w / "medium.img"
        run("mkfs.vfat", "-C", "-n", "SPOCGW-PROV", self.medium, "16384")
        self.procs = []

    def boot(self, name, forward=None, kernel=None, extra_disk=None):
        """Starts swtpm and qemu; the serial console goes to `name`.log. `kernel`: (kernel,
        initrd, command line) loaded by qemu instead of the disk's UKI; `extra_disk`: another
        raw disk attached (a stick someone plugged in)."""
        self.console = self.w / f"{name}.log"
        self.qmp = self.w / "qmp.sock"
        sock = self.w / "swtpm.sock"
        swtpm = subprocess.Popen(["swtpm", "socket", "--tpmstate", f"dir={self.w / 'tpm'}", "--ctrl",
                                  f"type=unixio,path={sock}", "--tpm2"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        net = "user,id=n0" + (f",hostfwd=tcp:127.0.0.1:{forward}-:8443" if forward else "")
        direct = ["-kernel", kernel[0], "-initrd", kernel[1], "-append", kernel[2]] if kernel else []
        # The stick is plugged in last: the firmware's boot entries point at the appliance's disk
        # by its slot, and a stick in that slot would send it through minutes of network boot.
        stick = ["-drive", f"file={extra_disk},format=raw,if=virtio"] if extra_disk else []
        qemu = subprocess.Popen([
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35,smm=on", "-m", "1024", "-smp", "2",
            "-global", "driver=cfi.pflash01,property=secure,value=on", "-global", "ICH9-LPC.disable_s3=1",
            "-display", "none", "-no-reboot", *map(str, direct),
            "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.w / 'vars.fd'}",
            "-chardev", f"socket,id=chrtpm,path={sock}", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis,tpmdev=tpm0",
            "-drive", f"file={self.w / 'disk.qcow2'},format=qcow2,if=virtio",
            "-drive", f"file={self.medium},format=raw,if=virtio",
            "-netdev", net, "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-serial", f"file:{self.console}", "-qmp", f"unix:{self.qmp},server,nowait", *map(str, stick),
        ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs = [qemu, swtpm]
        self.started = time.monotonic()

    def text(self):
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern, limit=BOOT_LIMIT):
        """Waits until the console shows `pattern` (a regex); its match, or None."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.procs and self.procs[0].poll() is not None:
                return re.search(pattern, self.text())
            time.sleep(0.5)
        return None

    def power_off(self, limit=90):
        """ACPI power button (a clean shutdown: the data partition and the medium unmounted);
        killed if it does not stop in time."""
        qemu, swtpm = self.procs
        if qemu.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.qmp))
                    s.sendall(b'{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n')
                    time.sleep(0.5)
            except OSError:
                pass
            try:
                qemu.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                qemu.kill()
                qemu.wait()
        swtpm.terminate()
        swtpm.wait()

    def medium_read(self, path, dest):
        return subprocess.run(["mcopy", "-n", "-i", str(self.medium), f"::{path}", str(dest)],
                              capture_output=True).returncode == 0

    def medium_write(self, src, path):
        run("mcopy", "-o", "-s", "-i", self.medium, src, f"::{path}")


def gateway_toml(ministry_port):
    return f"""# The appliance's configuration (image test): every key in the TPM.
require_tpm = true

[police]
listen = "0.0.0.0:8443"
cert = "certs/police-server.pem"
key = "tpm:police-server"
client_ca = "certs/police-ca.pem"

[admin]
listen = "127.0.0.1:9000"

[upstream.ministry]
url = "https://10.0.2.2:{ministry_port}"
server_name = "ministry.test"
ca = "certs/ministry-ca.pem"
cert = "certs/ministry-client.pem"
key = "tpm:ministry-client"

[audit]
dir = "/var/lib/spocgw/audit"
checkpoint_key = "tpm:audit-checkpoint"
pseudonym_key = "tpm:audit-pseudonym"

[tpm]
tcti = "device:/dev/tpmrm0"
dir = "/var/lib/spocgw/tpm"
pcrs = [7, 11]
signed_policy = "/efi/spocgw/pcr-policy.json"
"""


def officer_request(port, pki, samples):
    """An officer's VerifyFingerprintRequest through the appliance: (HTTP status, body)."""
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20",
                        "--cacert", str(pki.d / "police-ca.pem"), "--cert", str(pki.d / "officer.pem"),
                        "--key", str(pki.d / "officer.key"), "--resolve", f"spocgw.test:{port}:127.0.0.1",
                        "-H", "Content-Type: text/xml; charset=utf-8",
                        "--data-binary", f"@{samples / 'verify-fingerprint.xml'}",
                        f"https://spocgw.test:{port}/bio/v1"], capture_output=True, text=True)
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def serves_within(port, pki, samples, seconds):
    """Whether any officer request gets a 200 within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if officer_request(port, pki, samples)[0] == 200:
            return True
        time.sleep(2)
    return False


def attest(vm, nonce, expected, ak):
    """The quote and event log a boot left on the medium (copied to attest-out/), checked by
    `spocgw attest verify` with the attestation key recorded at first boot: (exit code, what
    it printed)."""
    q = vm.w / "attest-out"
    q.mkdir(exist_ok=True)
    for f in ["quote.msg", "quote.sig", "quote.pcrs", "eventlog"]:
        vm.medium_read(f"attest/{f}", q / f)
    v = subprocess.run([str(SPOCGW), "attest", "verify", "--expected", str(expected), "--ak", str(ak),
                        "--eventlog", str(q / "eventlog"), "--nonce", nonce, str(q)], capture_output=True, text=True)
    return v.returncode, (v.stdout + v.stderr).strip()


def with_nonce(vm, w, name):
    """A fresh verifier's nonce on the VM's medium; the nonce."""
    nonce = os.urandom(16).hex()
    (w / name).write_text(nonce)
    run("mmd", "-i", vm.medium, "::/attest")
    vm.medium_write(w / name, "attest/nonce")
    return nonce


def provisioned(w, name, disk, variables=OVMF_VARS):
    """A VM with the first appliance's TPM state (the same machine, booted otherwise)."""
    vm = Vm(w / name, disk, variables)
    shutil.rmtree(w / name / "tpm")
    shutil.copytree(w / "vm" / "tpm", w / name / "tpm")
    return vm


def main():
    require_tools()
    expected_file = OUT / "expected-pcrs.json"
    expected = json.loads(expected_file.read_text())
    # The image build's writes flushed first: writeback under a booting VM slows its disk.
    os.sync()
    w = Path(tempfile.mkdtemp(prefix="spocgw-image-test-"))
    procs = []
    try:
        pki = Pki(w / "pki")
        # The simulated Ministry and sample messages from the host's dev-pki.
        dev = w / "dev"
        mp = free_port()
        run(SPOCGW, "dev-pki", "--out", dev, "--ministry-port", str(mp), "--gateway-port", str(free_port()),
            "--callback-port", str(free_port()), "--admin-port", str(free_port()), "--receiver-port", str(free_port()))
        ministry_toml = (dev / "ministry.toml").read_text()
        ministry_toml = ministry_toml.replace('cert = "ministry/server.pem"', f'cert = "{pki.d / "ministry.pem"}"')
        ministry_toml = ministry_toml.replace('key = "ministry/server.key"', f'key = "{pki.d / "ministry.key"}"')
        ministry_toml = ministry_toml.replace('client_ca = "ca/ministry-ca.pem"', f'client_ca = "{pki.d / "ministry-ca.pem"}"')
        ministry_toml = re.sub(r"\n\[callback\][^\[]*", "\n", ministry_toml)
        (dev / "ministry-test.toml").write_text(ministry_toml)
        sim = subprocess.Popen([str(SPOCGW), "sim", "ministry", "--config", str(dev / "ministry-test.toml")],
                               stdout=subprocess.DEVNULL, stderr=open(w / "ministry.log", "w"))
        procs.append(sim)

        # 1. First boot.
        vm = Vm(w / "vm", OUT / "disk.img")
        vm.boot("boot1")
        waiting = vm.wait_for(r"WAITING FOR CERTIFICATES") and vm.wait_for(r"Started spocgw-waiting\.service", BOOT_LIMIT)
        verified = re.search(r"root verified \(([0-9a-f]{64})\)", vm.text())
        row("the UKI boots and the initramfs opens the root under dm-verity", f"root hash {expected['roothash'][:16]}",
            f"root hash {verified.group(1)[:16]}" if verified else "no root", verified and verified.group(1) == expected["roothash"])
        vm.power_off()
        csr = w / "csr"
        csr.mkdir()
        got = all(vm.medium_read(f"csr/{n}.csr.pem", csr / f"{n}.csr.pem") for n in ["police-server", "ministry-client"])
        vm.medium_read("csr/attestation.pub.pem", csr / "attestation.pub.pem")
        row("first boot: TPM provisioned, CSRs on the medium, /readyz waits", "CSRs, waiting service",
            "CSRs written, waiting" if got and waiting else f"csr={got} waiting={bool(waiting)}", got and waiting)

        # 2. Certify, configure, boot again.
        cfg = w / "medium-config"
        (cfg / "certs").mkdir(parents=True)
        (cfg / "nftables.d").mkdir()
        pki.sign("police-ca", csr / "police-server.csr.pem", cfg / "certs" / "police-server.pem", "serverAuth",
                 "DNS:spocgw.test")
        pki.sign("ministry-ca", csr / "ministry-client.csr.pem", cfg / "certs" / "ministry-client.pem", "clientAuth")
        shutil.copy(pki.d / "police-ca.pem", cfg / "certs")
        shutil.copy(pki.d / "ministry-ca.pem", cfg / "certs")
        (cfg / "gateway.toml").write_text(gateway_toml(mp))
        (cfg / "nftables.d" / "ministry.nft").write_text(
            f"add rule inet spocgw output ip daddr 10.0.2.2 tcp dport {mp} ct state new accept\n")
        shutil.copy(pki.d / "operator.pub.pem", cfg / "operator.pub.pem")
        run(SPOCGW, "config", "sign", "--key", pki.d / "operator.key", "--serial", "1", cfg)
        vm.medium_write(cfg, "config")
        nonce = with_nonce(vm, w, "nonce")
        port = free_port()
        decoy = decoy_disk(w / "decoy.img")
        decoy_before = hashlib.sha256(decoy.read_bytes()).hexdigest()
        vm.boot("boot2", forward=port, extra_disk=decoy)
        served = serves_within(port, pki, dev / "samples", BOOT_LIMIT)
        ready_s = time.monotonic() - vm.started
        code, body = officer_request(port, pki, dev / "samples")
        row("an officer's request through the appliance reaches the Ministry", "200 MATCH",
            f"{code} {'MATCH' if 'MATCH' in body else body[:60]} ({ready_s:.0f} s from power-on)",
            served and code == 200 and "<Result>MATCH</Result>" in body)
        notified = re.search(r"Started spocgw\.service", vm.text())
        row("spocgw.service (Type=notify) reported ready to systemd", "Started spocgw.service",
            "started" if notified else "not reported", notified)
        vm.power_off()
        untouched = hashlib.sha256(decoy.read_bytes()).hexdigest() == decoy_before
        boot_disk = re.search(r"spocgw-disks: boot disk (\w+): ESP (\S+), data (\S+)", vm.text())
        row("a second disk with spocgw-esp and spocgw-data partitions: neither mounted nor written",
            "the boot disk's partitions used, the decoy untouched",
            f"{boot_disk.group(0)[len('spocgw-disks: '):] if boot_disk else 'no boot disk line'}, "
            f"decoy {'untouched' if untouched else 'WRITTEN'}",
            # (the appliance's disk is vda, the medium vdb, the decoy vdc)
            boot_disk and boot_disk.group(1) == "vda" and untouched and served)
        accepted = re.search(r"spocgw: configuration serial 1 accepted", vm.text())
        row("a configuration bundle signed by the operator: accepted and applied", "serial 1 accepted, serving",
            f"{'accepted' if accepted else 'not accepted'}, {'serving' if served else 'no answer'}", accepted and served)
        ak = csr / "attestation.pub.pem"
        rc, text = attest(vm, nonce, expected_file, ak)
        row("the boot's quote and event log verify: PCR 7 (Secure Boot on, the project's keys) and PCR 11",
            "spocgw attest verify: 0", f"{rc}: {' / '.join(text.splitlines()[-2:]) if text else ''}", rc == 0)
        q = w / "vm" / "attest-out"
        cq = subprocess.run(["tpm2_checkquote", "-u", str(ak), "-m", str(q / "quote.msg"),
                             "-s", str(q / "quote.sig"), "-f", str(q / "quote.pcrs"), "-l", "sha256:7,11", "-g",
                             "sha256", "-q", nonce], capture_output=True, text=True)
        pcrs_file = (q / "quote.pcrs").read_bytes() if (q / "quote.pcrs").exists() else b""
        predicted = expected["pcrs"]["7"] + expected["pcrs"]["11"]
        row("tpm2_checkquote agrees, and the quoted PCRs 7 and 11 are the predicted ones", "valid, predicted values",
            f"rc {cq.returncode}, PCR 7 {pcrs_file.hex()[:16]}, PCR 11 {pcrs_file.hex()[64:80]}",
            cq.returncode == 0 and pcrs_file.hex() == predicted)

        # Release 2, a security update: built from the same parts with release 1's UKI in
        # dbx (firmware-image/release.sh, as `make image` runs it); its dbx update goes on the
        # medium with the next boot's configuration.
        r2 = release_2(w, expected)
        run("mmd", "-i", vm.medium, "::/update")
        vm.medium_write(r2 / "dbx.auth", "update/dbx.auth")

        # 2b. A configuration changed after the operator signed it (another client CA and a
        # retention that would prune the log), and one not signed at all: refused, the one in
        # force keeps serving.
        forged = w / "forged-config"
        shutil.copytree(cfg, forged)
        shutil.copy(pki.d / "ministry-ca.pem", forged / "certs" / "police-ca.pem")
        (forged / "gateway.toml").write_text(gateway_toml(mp).replace("[audit]\n", "[audit]\nretention_s = 0\n"))
        run("mdeltree", "-i", vm.medium, "::/config")
        vm.medium_write(forged, "config")
        port2b = free_port()
        vm.boot("boot2b", forward=port2b)
        served = serves_within(port2b, pki, dev / "samples", BOOT_LIMIT)
        vm.power_off()
        refused = re.search(r"configuration REFUSED: the bundle changed after it was signed", vm.text())
        in_force = re.search(r"configuration serial 1 in force", vm.text())
        row("the signed configuration altered on the medium: refused, the one in force keeps serving",
            "refused, serial 1 in force, serving",
            f"{'refused' if refused else 'not refused'}, {'serial 1 in force' if in_force else 'not in force'}, "
            f"{'serving' if served else 'no answer'}", refused and in_force and served)
        dbx = re.search(r"dbx update applied", vm.text())
        row("release 2's dbx update (signed with the KEK) applied by release 1's setup", "dbx update applied",
            "applied" if dbx else "not applied", dbx)

        # 3. One byte of the root flipped.
        tampered = w / "tampered-root.img"
        run("cp", "--sparse=always", OUT / "disk.img", tampered)
        start = int(re.search(r"start=\s*(\d+),.*name=\"spocgw-root\"", run("sfdisk", "-d", tampered).stdout).group(1))
        with open(tampered, "r+b") as f:
            f.seek(start * 512 + 1024 + 8)
            b = f.read(1)
            f.seek(start * 512 + 1024 + 8)
            f.write(bytes([b[0] ^ 0x01]))
        vm3 = provisioned(w, "vm3", tampered)
        port3 = free_port()
        vm3.boot("boot3", forward=port3)
        refused = vm3.wait_for(r"BOOT REFUSED|verity.*(corrupt|fail)|Kernel panic", BOOT_LIMIT)
        serving = serves_within(port3, pki, dev / "samples", 10)
        vm3.power_off(limit=5)
        row("one byte of the root flipped: dm-verity refuses, nothing serves", "refused, no answer",
            ("refused" if refused else "booted") + (", serving" if serving else ", no answer"),
            refused and not serving)

        # 4. The UKI with another command line, signed with the db key, on the provisioned appliance.
        unsigned = w / "changed.efi"
        cmdline = w / "cmdline"
        cmdline.write_text((PARTS / "cmdline").read_text() + " spocgw.changed=1")
        build_uki(unsigned, cmdline)
        signed = w / "changed-signed.efi"
        run("sbsign", "--key", SB_KEYS / "db.key", "--cert", SB_KEYS / "db.pem", "--output", signed, unsigned)
        changed = w / "changed-uki.img"
        run("qemu-img", "convert", "-O", "raw", w / "vm" / "disk.qcow2", changed)
        run("mcopy", "-o", "-i", f"{changed}@@1M", signed, "::/EFI/BOOT/BOOTX64.EFI")
        vm4 = provisioned(w, "vm4", changed)
        nonce4 = with_nonce(vm4, w, "nonce4")
        ok, observed = refused_boot(vm4, "boot4", pki, dev / "samples")
        row("a signed UKI with another command line: no key opens, nothing serves", "keys refused, no answer",
            observed, ok)
        rc, text = attest(vm4, nonce4, expected_file, ak)
        row("that boot's quote fails verification, naming PCR 11", "spocgw attest verify: 1, PCR 11",
            f"{rc}: {text.splitlines()[-1] if text else ''}", rc == 1 and "PCR 11 differs" in text)

        # 5. The same UKI unsigned: Secure Boot refuses it.
        run("mcopy", "-o", "-i", f"{changed}@@1M", unsigned, "::/EFI/BOOT/BOOTX64.EFI")
        vm5 = provisioned(w, "vm5", changed)
        port5 = free_port()
        vm5.boot("boot5", forward=port5)
        denied = vm5.wait_for(r"Access Denied|Security Violation", BOOT_LIMIT)
        linux = re.search(r"spocgw-initramfs|Linux version", vm5.text())
        serving = serves_within(port5, pki, dev / "samples", 5)
        vm5.power_off(limit=5)
        row("an unsigned UKI under Secure Boot: the firmware refuses it, nothing serves", "Access Denied, no answer",
            f"{'denied' if denied else 'not denied'}, {'Linux started' if linux else 'no Linux'}, "
            f"{'serving' if serving else 'no answer'}", denied and not linux and not serving)

        # 6. An attacker with the machine: Secure Boot off, another kernel boot whose initramfs
        # replays PCR 11 from user space, then the genuine root.
        replay = attacker_initrd(w / "attacker.cpio.gz", PARTS)
        # (The provisioned appliance's disk: the ESP's UKI plays no part in a direct kernel boot.)
        vm6 = provisioned(w, "vm6", changed, OVMF_VARS_PLAIN)
        nonce6 = with_nonce(vm6, w, "nonce6")
        ok6, observed6 = refused_boot(vm6, "boot6", pki, dev / "samples", kernel=(
            PARTS / "vmlinuz", w / "attacker.cpio.gz", (PARTS / "cmdline").read_text()))
        rc, text = attest(vm6, nonce6, expected_file, ak)
        quoted = (w / "vm6" / "attest-out" / "quote.pcrs")
        quoted = quoted.read_bytes().hex() if quoted.exists() else ""
        row("Secure Boot off, PCR 11 replayed from user space: it reaches the predicted value",
            "PCR 11 as predicted", f"replay {replay[:16]}, quoted PCR 11 {quoted[64:80] or 'none'}",
            replay == expected["pcrs"]["11"] and quoted[64:] == replay)
        row("... yet no key opens, nothing serves", "keys refused, no answer", observed6, ok6)
        row("... and the quote fails verification, naming PCR 7", "spocgw attest verify: 1, PCR 7",
            f"{rc}: {text.splitlines()[-1] if text else ''}", rc == 1 and "PCR 7 differs" in text)
        # 7. The update revokes release 1: its UKI no longer boots; release 2 with release 1's
        # signed policy opens no key; release 2 with its own policy serves, keys unchanged.
        updated_vars = w / "vm" / "vars.fd"
        rel = w / "release-disk.img"
        run("qemu-img", "convert", "-O", "raw", w / "vm" / "disk.qcow2", rel)
        vm7 = provisioned(w, "vm7", rel, updated_vars)
        port7 = free_port()
        vm7.boot("boot7", forward=port7)
        denied = vm7.wait_for(r"Access Denied|Security Violation", BOOT_LIMIT)
        linux = re.search(r"spocgw-initramfs|Linux version", vm7.text())
        vm7.power_off(limit=5)
        row("after the update, release 1's UKI: the firmware refuses it (dbx)", "Access Denied",
            f"{'denied' if denied else 'not denied'}, {'Linux started' if linux else 'no Linux'}", denied and not linux)
        run("mcopy", "-o", "-i", f"{rel}@@1M", r2 / "spocgw.efi", "::/EFI/BOOT/BOOTX64.EFI")
        vm8 = provisioned(w, "vm8", rel, updated_vars)
        ok, observed = refused_boot(vm8, "boot8", pki, dev / "samples")
        row("release 2 with release 1's signed policy put back on the ESP: no key opens", "keys refused, no answer",
            observed, ok)
        run("mcopy", "-o", "-i", f"{rel}@@1M", r2 / "pcr-policy.json", "::/spocgw/pcr-policy.json")
        vm9 = provisioned(w, "vm9", rel, updated_vars)
        port9 = free_port()
        vm9.boot("boot9", forward=port9)
        served = serves_within(port9, pki, dev / "samples", BOOT_LIMIT)
        code, body = officer_request(port9, pki, dev / "samples")
        vm9.power_off()
        row("release 2 with its own policy: the same keys open, no re-provisioning", "200 MATCH",
            f"{code} {'MATCH' if 'MATCH' in body else body[:60]}", served and code == 200 and "MATCH" in body)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        if not all(r[3] for r in rows):
            # What the consoles showed last, for a failure in CI (the work directory goes).
            for log in sorted(w.glob("vm*/*.log")):
                tail = log.read_text(errors="replace").splitlines()[-25:]
                print(f"\n--- {log.relative_to(w)} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        keep = os.environ.get("KEEP")
        if keep:
            print(f"image-test: work directory kept: {w}")
        else:
            shutil.rmtree(w, ignore_errors=True)

    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    print(f"\n{'scenario':<{w1}}  {'expected':<{w2}}  observed")
    for s, e, o, ok in rows:
        print(f"{s:<{w1}}  {e:<{w2}}  {o}  {'yes' if ok else 'NO'}")
    passed = sum(1 for r in rows if r[3])
    print(f"\n{passed} passed, {len(rows) - passed} failed")
    sys.exit(0 if passed == len(rows) else 1)


def build_uki(out, cmdline):
    """A UKI like the build's, with another command line."""
    sections = [(".osrel", PARTS / "os-release"), (".cmdline", cmdline), (".linux", PARTS / "vmlinuz"),
                (".initrd", PARTS / "initrd")]
    dump = run("objdump", "-h", STUB).stdout
    end = max(int(f[3], 16) + int(f[2], 16) for f in (l.split() for l in dump.splitlines())
              if len(f) == 7 and f[0].isdigit())
    args, at = [], end
    for name, path in sections:
        at = (at + 0xFFF) // 0x1000 * 0x1000
        args += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={hex(at)}"]
        at += path.stat().st_size
    run("objcopy", *args, STUB, out)


def release_2(w, expected):
    """Release 2's boot artefacts: release 1's parts with another release number, and release
    1's UKI revoked (firmware-image/release.sh, with the build's keys)."""
    parts = w / "parts-r2"
    shutil.copytree(PARTS, parts, ignore=shutil.ignore_patterns("*.erofs", "*.verity", "esp.img", "unsigned.efi"))
    (parts / "cmdline").write_text((PARTS / "cmdline").read_text().replace("spocgw.release=1", "spocgw.release=2"))
    revoked = w / "revoked.txt"
    revoked.write_text(f"{expected['uki_authenticode_sha256']}  release 1\n")
    build = ROOT / "firmware-image" / "build"
    env = dict(os.environ, SBK=str(SB_KEYS), KEY=os.environ.get("IMAGE_SIGNING_KEY", str(build / "keys" / "image-signing.key.pem")),
               VENV=str(build / "venv"), BIN=str(SPOCGW), RELEASE="2", REVOKED=str(revoked),
               POLICY_CACHE=str(w / "policies"), SOURCE_DATE_EPOCH=str(expected["source_date_epoch"]))
    out = w / "release-2"
    subprocess.run(["bash", str(ROOT / "firmware-image" / "release.sh"), str(parts), str(out)], env=env, check=True,
                   capture_output=True)
    return out


def refused_boot(vm, name, pki, samples, **boot):
    """Boots `vm` where no key may open: whether it booted, whether the gateway said the TPM
    refused its keys, and whether anything served; the row's observed text with them."""
    port = free_port()
    vm.boot(name, forward=port, **boot)
    booted = vm.wait_for(r"spocgw: (configuration present|WAITING)", BOOT_LIMIT)
    keys_refused = vm.wait_for(KEYS_REFUSED, BOOT_LIMIT)
    serving = serves_within(port, pki, samples, 10)
    vm.power_off()
    observed = (f"{'booted' if booted else 'no boot'}, {'keys refused' if keys_refused else 'no key refusal seen'}, "
                f"{'serving' if serving else 'no answer'}")
    return bool(booted and keys_refused and not serving), observed


def decoy_disk(path):
    """A stick carrying partitions named as the appliance's ESP and data partition (empty: an
    appliance that took it for its data partition would format it)."""
    run("truncate", "-s", "80M", path)
    subprocess.run(["sfdisk", "--quiet", str(path)], check=True, text=True, input=(
        "label: gpt\n"
        "size=32M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=spocgw-esp\n"
        "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=spocgw-data\n"))
    return path


def attacker_initrd(out, parts):
    """The attacker's initramfs: the genuine one, then an /init that replays into PCR 11 what
    systemd-stub would have measured of the UKI (each section's name, then its data, in the
    stub's order) and the boot phases, with raw TPM2_PCR_Extend commands written to /dev/tpm0,
    and hands over to the genuine init. The PCR 11 value the replay gives, hex."""
    events = []
    for name, path in [(".linux", "vmlinuz"), (".osrel", "os-release"), (".cmdline", "cmdline"), (".initrd", "initrd")]:
        events += [hashlib.sha256(name.encode() + b"\0").digest(), hashlib.sha256((parts / path).read_bytes()).digest()]
    events += [hashlib.sha256(phase.encode()).digest() for phase in ["sysinit", "ready"]]
    pcr = bytes(32)
    tree = out.parent / "attacker-tree"
    (tree / "attack").mkdir(parents=True)
    for i, digest in enumerate(events):
        pcr = hashlib.sha256(pcr + digest).digest()
        # TPM2_PCR_Extend(PCR 11) with a password session: the digest, SHA-256 bank.
        body = struct.pack(">I", 11) + struct.pack(">IIHBH", 9, 0x40000009, 0, 0, 0) + struct.pack(">IH", 1, 0x000B) + digest
        (tree / "attack" / f"{i:02}.bin").write_bytes(struct.pack(">HII", 0x8002, 10 + len(body), 0x182) + body)
    shutil.copy(ROOT / "firmware-image" / "initramfs" / "init", tree / "init.genuine")
    (tree / "init").write_text("""#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
for f in /attack/*.bin; do /bin/busybox cat "$f" > /dev/tpm0; done
echo "attacker: PCR 11 replayed" > /dev/console
/bin/busybox umount /dev
exec /init.genuine
""")
    os.chmod(tree / "init", 0o755)
    os.chmod(tree / "init.genuine", 0o755)
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, capture_output=True, text=True).stdout
    extra = subprocess.run(["cpio", "--create", "--format=newc", "--quiet"], cwd=tree, input=names.encode(),
                           capture_output=True, check=True).stdout
    out.write_bytes((parts / "initrd").read_bytes() + gzip.compress(extra))
    return pcr.hex()


if __name__ == "__main__":
    main()
