//! The kernels of the matrix, pinned in one place (package, version, SHA-256 of the .deb), and
//! their preparation: download with `apt-get download`, check, unpack with `dpkg-deb -x`,
//! `depmod` the unpacked modules. The checked .debs are kept per machine (CI runs in fresh
//! clones), the unpacked kernels under `target/vm/`.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::exec;

/// One Debian kernel package the suite is run on.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// The name `--kernel` takes.
    pub name: &'static str,
    /// Debian binary package (the signed image: vmlinuz, modules, config).
    pub package: &'static str,
    pub version: &'static str,
    /// SHA-256 of the .deb, as in the archive's `Packages` index.
    pub sha256: &'static str,
    /// Where Debian 12 ships it.
    pub suite: &'static str,
}

/// The pinned kernels. To move to a newer build: `apt-cache madison PACKAGE`, then
/// `apt-cache show PACKAGE=VERSION | grep SHA256`, and rerun `cargo xtask vm-test`.
pub const KERNELS: [Kernel; 2] = [
    Kernel {
        name: "6.1",
        package: "linux-image-6.1.0-50-amd64",
        version: "6.1.176-1",
        sha256: "7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3",
        suite: "bookworm (Debian 12.x point release)",
    },
    Kernel {
        name: "6.12",
        package: "linux-image-6.12.118+deb12-amd64",
        version: "6.12.118-1~deb12u1",
        sha256: "8e837371953d0d8e1e9e998a340340dcbd7a13619d529a16773a56870d69bd13",
        suite: "bookworm-security (linux-signed-6.12-amd64, as Debian 13 ships 6.12)",
    },
];

/// The kernels `--kernel NAME` selects (`all`: every one).
pub fn select(name: &str) -> anyhow::Result<Vec<Kernel>> {
    if name == "all" {
        return Ok(KERNELS.to_vec());
    }
    match KERNELS.iter().find(|k| k.name == name) {
        Some(k) => Ok(vec![*k]),
        None => bail!(
            "unknown kernel {name:?}; choose one of {} or all",
            KERNELS.map(|k| k.name).join(", ")
        ),
    }
}

/// An unpacked kernel, ready to boot.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// `uname -r` of the kernel (the modules directory's name).
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `/boot/config-RELEASE`.
    pub config: PathBuf,
    /// `lib/modules/RELEASE`, with the `modules.dep*` files `depmod` wrote.
    pub modules: PathBuf,
}

pub fn cache_dir() -> PathBuf {
    exec::repo_root().join("target/vm")
}

/// Where downloaded .debs are kept: `$TCPTRACE_VM_CACHE`, else `~/.cache/tcptrace/vm`
/// (shared by every clone on the machine; a file is used only if its SHA-256 matches).
fn deb_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TCPTRACE_VM_CACHE") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| cache_dir().join("cache"));
    cache.join("tcptrace/vm")
}

fn deb_path(k: &Kernel) -> PathBuf {
    deb_dir().join(format!(
        "{}_{}_amd64.deb",
        k.package,
        k.version.replace(':', "%3a")
    ))
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = exec::output("sha256sum", &[&path.to_string_lossy()])
        .with_context(|| format!("sha256sum {}", path.display()))?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Downloads the pinned .deb unless a checked copy is cached; `apt-get update` once if the
/// package lists do not know the version yet.
fn download(k: &Kernel) -> anyhow::Result<PathBuf> {
    let deb = deb_path(k);
    if deb.exists() && sha256(&deb)? == k.sha256 {
        return Ok(deb);
    }
    let dir = deb.parent().context("deb directory")?;
    std::fs::create_dir_all(dir)?;
    let spec = format!("{}={}", k.package, k.version);
    let known = || exec::output("apt-cache", &["show", &spec]).is_some();
    if !known() {
        eprintln!("==> apt-get update (the package lists do not know {spec})");
        exec::logged(
            "apt-get update",
            "apt-update",
            Command::new("apt-get").arg("update"),
        )?;
        if !known() {
            let available = exec::output("apt-cache", &["madison", k.package]).unwrap_or_default();
            bail!(
                "{spec} is not in this machine's Debian archive (available: {}); update the pin in xtask/src/vm/kernels.rs",
                available.trim().replace('\n', "; ")
            );
        }
    }
    eprintln!("==> apt-get download {spec}");
    // apt drops privileges to _apt for downloads; a directory it cannot write into makes it
    // fall back to root with a warning, so download into a scratch directory it may own.
    exec::logged(
        &format!("apt-get download {}", k.package),
        "apt-download",
        Command::new("apt-get")
            .args(["download", "-o", "APT::Sandbox::User=root", &spec])
            .current_dir(dir),
    )?;
    let got = sha256(&deb)?;
    if got != k.sha256 {
        let _ = std::fs::remove_file(&deb);
        bail!(
            "{} has SHA-256 {got}, the pin says {}; refusing it",
            deb.display(),
            k.sha256
        );
    }
    Ok(deb)
}

/// Downloads (if needed), unpacks (once) and runs `depmod` (once) for `k`.
pub fn prepare(k: &Kernel) -> anyhow::Result<Prepared> {
    let root = cache_dir()
        .join("kernels")
        .join(format!("{}_{}", k.package, k.version));
    let done = root.join(".prepared");
    if !done.exists() {
        let deb = download(k)?;
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        std::fs::create_dir_all(&root)?;
        eprintln!("==> unpacking {}", deb.display());
        if !exec::inherit(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))? {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
        let release = release_of(&root)?;
        // The package ships no modules.dep (its postinst runs depmod on the installed tree).
        if !exec::inherit(Command::new("depmod").arg("-b").arg(&root).arg(&release))? {
            bail!("depmod -b {} {release} failed", root.display());
        }
        std::fs::write(&done, "")?;
    }
    let release = release_of(&root)?;
    Ok(Prepared {
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        config: root.join(format!("boot/config-{release}")),
        modules: root.join(format!("lib/modules/{release}")),
        release,
    })
}

/// The single directory under `lib/modules/` of an unpacked image.
fn release_of(root: &Path) -> anyhow::Result<String> {
    let dir = root.join("lib/modules");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    match names.len() {
        1 => Ok(names.remove(0)),
        _ => bail!("{}: expected one release, found {names:?}", dir.display()),
    }
}
