//! The guest's initramfs: busybox (static), the few modules needed to reach the host's root
//! filesystem (virtio PCI, 9p over virtio, overlayfs) in dependency order, and an `/init` that
//! mounts the host's `/` read-only over 9p under a tmpfs overlay, mounts the results share,
//! and switches to it to run `xtask vm-guest`.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, bail};

use super::{cpio, kernels::Prepared};

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Modules the initramfs loads (with their dependencies) unless built in.
const BOOT_MODULES: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The 9p mount tags qemu exports.
pub const ROOT_TAG: &str = "hostroot";
pub const RESULTS_TAG: &str = "results";
/// Where the results share appears in the guest.
pub const RESULTS_DIR: &str = "/results";

/// A module's name from its path in `modules.dep` (`kernel/fs/9p/9p.ko.xz` → `9p`), with `-`
/// read as `_` like the kernel does.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// `modules.dep` as name → (path, dependency paths).
fn parse_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let (path, deps) = l.split_once(':')?;
            Some((
                module_name(path),
                (
                    path.to_string(),
                    deps.split_whitespace().map(str::to_string).collect(),
                ),
            ))
        })
        .collect()
}

/// Paths (relative to the modules directory) to load, each after its dependencies; built-in
/// modules are left out.
pub fn load_order(dep: &str, builtin: &str, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let deps = parse_dep(dep);
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let (path, needs) = deps
            .get(name)
            .with_context(|| format!("module {name} is neither in modules.dep nor built in"))?;
        for d in needs {
            visit(&module_name(d), deps, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    for w in wanted {
        if !builtin.contains(*w) {
            visit(w, &deps, &mut seen, &mut order)?;
        }
    }
    Ok(order)
}

/// A module file's bytes, decompressed when the kernel ships it compressed (busybox `insmod`
/// hands the kernel the bytes as they are).
fn module_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).with_context(|| format!("reading {name}")),
        Some(t) => {
            let out = std::process::Command::new(t)
                .args(["-dc", &name])
                .output()
                .with_context(|| format!("running {t} -dc {name}"))?;
            if !out.status.success() {
                bail!("{t} -dc {name} failed");
            }
            Ok(out.stdout)
        }
    }
}

/// The `/init` script: load the boot modules, mount the host's root (read-only, 9p) under a
/// tmpfs overlay, mount the results share, and switch to `guest` (with `args`). Any failure
/// powers the guest off with a message on the console.
fn init_script(modules: &[String], guest: &str, args: &str) -> String {
    let insmods: String = modules
        .iter()
        .map(|m| {
            let file = m.rsplit('/').next().unwrap_or(m);
            let file = file.split(".ko").next().unwrap_or(file);
            format!("insmod /modules/{file}.ko || fail \"insmod {file}\"\n")
        })
        .collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{ echo "vm-init: FAILED: $*"; sync; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{insmods}mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 {ROOT_TAG} /lower || fail "mount the host root"
mount -t tmpfs -o mode=0755 tmpfs /upper || fail "tmpfs"
mkdir -p /upper/rw /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/rw,workdir=/upper/work overlay /newroot || fail "overlay"
mkdir -p /newroot{RESULTS_DIR}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 {RESULTS_TAG} /newroot{RESULTS_DIR} || fail "mount the results share"
umount /proc /sys /dev
exec switch_root /newroot {guest} {args}
"#
    )
}

/// Writes the initramfs for `k` to `out`; the guest runs `guest ARGS` as its init.
pub fn build(k: &Prepared, guest: &Path, args: &str, out: &Path) -> anyhow::Result<()> {
    let read = |f: &str| {
        std::fs::read_to_string(k.modules.join(f))
            .with_context(|| format!("{}/{f}", k.modules.display()))
    };
    let order = load_order(
        &read("modules.dep")?,
        &read("modules.builtin")?,
        &BOOT_MODULES,
    )?;
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("{BUSYBOX} (busybox-static; run cargo xtask setup)"))?;
    let init = init_script(&order, &guest.to_string_lossy(), args);
    let mut w = cpio::Writer::new(Vec::new());
    for d in [
        "/bin", "/dev", "/proc", "/sys", "/lower", "/upper", "/newroot", "/modules",
    ] {
        w.add(&cpio::Entry::Dir(d))?;
    }
    w.add(&cpio::Entry::CharDev {
        path: "/dev/console",
        major: 5,
        minor: 1,
    })?;
    w.add(&cpio::Entry::File {
        path: "/bin/busybox",
        mode: 0o755,
        data: &busybox,
    })?;
    w.add(&cpio::Entry::File {
        path: "/init",
        mode: 0o755,
        data: init.as_bytes(),
    })?;
    for m in &order {
        let data = module_bytes(&k.modules.join(m))?;
        let file = m.rsplit('/').next().unwrap_or(m);
        let file = file.split(".ko").next().unwrap_or(file);
        w.add(&cpio::Entry::File {
            path: &format!("/modules/{file}.ko"),
            mode: 0o644,
            data: &data,
        })?;
    }
    std::fs::write(out, w.finish()?).with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz:
kernel/fs/netfs/netfs.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/fs/overlayfs/overlay.ko.xz:
kernel/drivers/net/veth.ko.xz:
";

    #[test]
    fn dependencies_first_builtins_skipped() {
        let order = load_order(
            DEP,
            "kernel/drivers/virtio/virtio_pci.ko\n",
            &["virtio_pci", "9pnet_virtio", "9p", "overlay"],
        )
        .unwrap();
        assert_eq!(
            order,
            [
                "kernel/net/9p/9pnet.ko.xz",
                "kernel/fs/netfs/netfs.ko.xz",
                "kernel/net/9p/9pnet_virtio.ko.xz",
                "kernel/fs/9p/9p.ko.xz",
                "kernel/fs/overlayfs/overlay.ko.xz",
            ]
        );
        assert!(load_order(DEP, "", &["virtio_pci"]).is_err());
        assert_eq!(module_name("kernel/x/nf-foo.ko"), "nf_foo");
    }
}
