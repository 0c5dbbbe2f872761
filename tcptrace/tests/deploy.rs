//! The packaging in `deploy/` is checked by the tools that judge it: the systemd unit by
//! `systemd-analyze verify` (no warning allowed), the DaemonSet by `kubernetes-validate`
//! against the bundled Kubernetes API schema in strict mode (installed by `cargo xtask setup`).
//! Each check is shown to reject a broken copy, so it cannot pass by not looking.
use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{what} not found at {} (cargo xtask setup installs it)",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// `systemd-analyze verify` of `unit`: its exit status and everything it printed.
fn verify(unit: &str, name: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("tcptrace-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    // The unit names the installed binary; the built one stands in for it.
    let unit = unit.replace("/usr/local/bin/tcptrace", env!("CARGO_BIN_EXE_tcptrace"));
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_unit_verifies_cleanly() {
    let Some(_) = tool(PathBuf::from("/usr/bin/systemd-analyze"), "systemd-analyze") else {
        return;
    };
    let unit = std::fs::read_to_string(root().join("deploy/tcptrace.service")).unwrap();
    let (ok, text) = verify(&unit, "tcptrace.service");
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    for hardening in [
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "--metrics 127.0.0.1:9464",
    ] {
        assert!(unit.contains(hardening), "unit lacks {hardening}");
    }
    // A mistyped directive is reported, so a clean result means something.
    let broken = unit.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes");
    let (_, text) = verify(&broken, "tcptrace.service");
    assert!(text.contains("ProtectHomme"), "{text}");
}

#[test]
fn daemonset_matches_the_kubernetes_schema() {
    let bin = root().join("target/tools/kubernetes-validate/bin/kubernetes-validate");
    let Some(bin) = tool(bin, "kubernetes-validate") else {
        return;
    };
    let validate = |path: &std::path::Path| {
        let out = Command::new(&bin)
            .args(["--strict", "--kubernetes-version", "1.30.0"])
            .arg(path)
            .output()
            .expect("kubernetes-validate");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let manifest = root().join("deploy/daemonset.yaml");
    let (ok, text) = validate(&manifest);
    assert!(ok && text.contains("passed"), "{text}");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    assert!(yaml.contains("hostPID: true") && !yaml.contains("hostNetwork: true"));
    for mount in ["/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup"] {
        assert!(yaml.contains(&format!("path: {mount}")), "no {mount} mount");
    }
    assert!(yaml.contains("limits:"), "no resource limits");
    // The scrape annotation, the container port and --metrics name the same port.
    for needle in [
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/port: \"9464\"",
        "containerPort: 9464",
        "\"--metrics\", \"0.0.0.0:9464\"",
    ] {
        assert!(yaml.contains(needle), "no {needle} in the DaemonSet");
    }
    // A misspelt field fails strict validation.
    let broken = std::env::temp_dir().join(format!("tcptrace-ds-{}.yaml", std::process::id()));
    std::fs::write(&broken, yaml.replace("hostPID: true", "hostPId: true")).unwrap();
    let (ok, text) = validate(&broken);
    let _ = std::fs::remove_file(&broken);
    assert!(!ok, "a misspelt field passed: {text}");
}
