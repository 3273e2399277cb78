//! The Debian package (`make deb`, packaging/deb.sh), built here from the test build's binary:
//! lintian reports no error and no warning; it holds the stripped binary, the unit the appliance
//! shares, the user and state directory, the example configuration, the manual pages and the
//! completions; and its postinst enables the service but starts it only once
//! /etc/spocgw/gateway.toml exists (run in a mount namespace with the system's commands stubbed:
//! systemd does not run here).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs the postinst in a mount namespace whose /run says systemd runs and whose /etc holds a
/// configuration or not; returns the commands it called.
fn postinst(root: &Path, stubs: &Path, configured: bool) -> String {
    let log = stubs.join("calls.log");
    let _ = std::fs::remove_file(&log);
    let config = if configured { "mkdir -p /etc/spocgw && touch /etc/spocgw/gateway.toml && " } else { "" };
    let script = format!(
        "mount -t tmpfs t /run && mkdir -p /run/systemd/system && mount -t tmpfs t /etc && {config}PATH={}:$PATH sh {} configure",
        stubs.display(),
        root.join("DEBIAN/postinst").display()
    );
    let out = Command::new("unshare").args(["-rm", "sh", "-c", &script]).output().unwrap();
    assert!(out.status.success(), "postinst: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(&log).unwrap_or_default()
}

#[test]
fn the_package_is_lintian_clean_complete_and_never_starts_unconfigured() {
    if !have_tool("dpkg-deb") || !have_tool("lintian") || !have_tool("unshare") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let built = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/deb.sh"))
        .env("SPOCGW_BIN", BIN)
        .env("OUT", out.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&built.stderr).into_owned();
    assert!(built.status.success() && report.contains("lintian clean"), "{report}");
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap();
    let root = out.path().join("root");
    let (ok, text) = sh(&format!("dpkg-deb -R {} {}", deb.display(), root.display()));
    assert!(ok, "{text}");
    for file in [
        "usr/bin/spocgw",
        "lib/systemd/system/spocgw.service",
        "usr/lib/sysusers.d/spocgw.conf",
        "usr/lib/tmpfiles.d/spocgw.conf",
        "etc/spocgw/gateway.toml.example",
        "usr/share/man/man1/spocgw.1.gz",
        "usr/share/man/man1/spocgw-audit-query.1.gz",
        "usr/share/man/man1/spocgw-serve.1.gz",
        "usr/share/bash-completion/completions/spocgw",
        "usr/share/zsh/vendor-completions/_spocgw",
        "usr/share/fish/vendor_completions.d/spocgw.fish",
        "usr/share/doc/spocgw/copyright",
    ] {
        assert!(root.join(file).is_file(), "{file} is not in the package");
    }
    // The binary runs, stripped, with its debug information beside the package.
    let (ok, version) = sh(&format!("{} --version", root.join("usr/bin/spocgw").display()));
    assert!(ok && version.starts_with("spocgw "), "{version}");
    let (_, sections) = sh(&format!("objdump -h {}", root.join("usr/bin/spocgw").display()));
    assert!(!sections.contains(".debug_line") && sections.contains(".gnu_debuglink"), "{sections}");
    assert!(out.path().join("spocgw.debug").is_file());
    // The completions load and complete spocgw's commands.
    let (ok, text) = sh(&format!(
        "bash -c '. {} && complete -p spocgw'",
        root.join("usr/share/bash-completion/completions/spocgw").display()
    ));
    assert!(ok && text.contains("spocgw"), "{text}");
    // The example configuration is a configuration (every key known).
    let example = std::fs::read_to_string(root.join("etc/spocgw/gateway.toml.example")).unwrap();
    toml::from_str::<spocgw::gateway::config::GatewayConfig>(&example).unwrap();
    // The unit is the one the appliance image uses, and reads /etc/spocgw/gateway.toml only.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/spocgw.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/spocgw.service")).unwrap()
    );
    assert!(unit.contains("ConditionPathExists=/etc/spocgw/gateway.toml") && unit.contains("Type=notify"), "{unit}");
    // postinst: the user, the directory and the unit enabled; started only when configured.
    let stubs = out.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    for cmd in ["systemd-sysusers", "systemd-tmpfiles", "deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
        let stub = stubs.join(cmd);
        std::fs::write(&stub, format!("#!/bin/sh\necho \"{cmd} $*\" >>{}\n", stubs.join("calls.log").display()))
            .unwrap();
        Command::new("chmod").args(["755"]).arg(&stub).status().unwrap();
    }
    let calls = postinst(&root, &stubs, false);
    assert!(
        calls.contains("systemd-sysusers spocgw.conf")
            && calls.contains("systemd-tmpfiles --create spocgw.conf")
            && calls.contains("deb-systemd-helper enable spocgw.service"),
        "{calls}"
    );
    assert!(!calls.contains("deb-systemd-invoke"), "started without a configuration: {calls}");
    let calls = postinst(&root, &stubs, true);
    assert!(calls.contains("deb-systemd-invoke restart spocgw.service"), "{calls}");
    // Started: the packaged binary serves a configuration as the unit would run it.
    let mut w = World::new();
    w.start_ministry();
    w.start_receiver();
    let cfg = w.path("gateway.toml");
    let gateway = Command::new(root.join("usr/bin/spocgw"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    w.procs.push(Proc { child: gateway, log: w.path("packaged.log") });
    wait_port(w.admin_port);
    w.wait_ready();
    assert_eq!(admin_get(w.admin_port, "/healthz").0, 200);
}
