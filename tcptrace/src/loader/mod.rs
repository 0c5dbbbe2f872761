//! Loads the embedded eBPF object with this kernel's layout (BTF offsets, tracepoint formats)
//! and attaches each hook as a BTF tracepoint or, failing that, a classic tracepoint.
mod hooks;
mod losses;
mod privilege;
mod prog_info;
mod tracefs;

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader, Endianness,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramFd, TracePoint},
};
use tcptrace_common::{self as abi, KernelOffsets, SnapPlan, TpLayout};
use tcptrace_core::{
    btf::{self, Btf},
    layout,
    snapshot::{self, SnapLayout},
    tp_format,
};

use crate::flags::{Config, TracepointMode};
pub use hooks::HOOKS;
pub use losses::{LossCounters, Losses};
pub use privilege::{drop_after_attach, reduce_thread_to};

/// The eBPF object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptrace"));

/// How one hook ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A BTF tracepoint. `direct`: its program reads sockets with plain loads (else with
    /// `bpf_probe_read_kernel`, where the verifier refused those); `nested`: with the second
    /// program for the runs the kernel skips.
    Btf {
        direct: bool,
        nested: bool,
    },
    Classic,
}

impl Attachment {
    pub fn name(self) -> &'static str {
        match self {
            Self::Btf {
                direct: true,
                nested: false,
            } => "tp_btf",
            Self::Btf {
                direct: true,
                nested: true,
            } => "tp_btf+nested",
            Self::Btf {
                direct: false,
                nested: false,
            } => "tp_btf(probe)",
            Self::Btf {
                direct: false,
                nested: true,
            } => "tp_btf(probe)+nested",
            Self::Classic => "tracepoint",
        }
    }
}

/// A loaded, attached tracer. Dropping `ebpf` detaches every program; the maps stay readable.
pub struct Tracer {
    pub ebpf: Option<Ebpf>,
    pub events: RingBuf<MapData>,
    pub losses: LossCounters,
    pub attached: Vec<(&'static str, Attachment)>,
    /// `enum sk_rst_reason` names from BTF, for printing reset reasons.
    pub reset_reasons: Vec<(u32, String)>,
    /// How to read the socket bytes state changes carry (empty without BTF).
    pub snap: SnapLayout,
    /// Drain timer matching the wakeup policy (`None`: woken per record).
    pub latency: Option<std::time::Duration>,
    /// Things that work less well than they could on this kernel, one line each.
    pub warnings: Vec<String>,
    /// What this kernel's tracepoints report where versions differ (the quirk table).
    pub quirks: layout::Quirks,
    /// The programs' own debug messages (aya-log), with `--log-level debug` only.
    pub ebpf_log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// `aya_log_ebpf`'s level global: 0 turns every eBPF-side message off (the verifier prunes
/// them), 4 (`Debug`) lets the debug ones through.
const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

struct KernelInfo {
    /// What aya needs of the kernel's BTF to attach BTF tracepoints: the ids of their
    /// `btf_trace_*` typedefs, in a stub (the kernel's BTF is parsed once, by tcptrace-core).
    aya_btf: Option<aya::Btf>,
    offsets: KernelOffsets,
    snap_plan: SnapPlan,
    snap: SnapLayout,
    reset_reasons: Vec<(u32, String)>,
    layouts: Vec<Option<TpLayout>>,
    /// Whether skipped runs of classic tracepoint programs are counted (`None`: no BTF to tell).
    classic_misses_counted: Option<bool>,
}

fn kernel_info(cfg: &Config, warnings: &mut Vec<String>) -> anyhow::Result<KernelInfo> {
    let mut info = KernelInfo {
        aya_btf: None,
        offsets: KernelOffsets::none(),
        snap_plan: SnapPlan::none(),
        snap: SnapLayout::default(),
        reset_reasons: Vec::new(),
        layouts: Vec::new(),
        classic_misses_counted: None,
    };
    if let Some(path) = &cfg.btf {
        match read_btf(path) {
            Ok(btf) => {
                if let Some(u) = btf.unknown_kind() {
                    warnings.push(format!(
                        "kernel BTF {}: kind {} at type {} is newer than this tcptrace; types from there on are not used",
                        path.display(),
                        u.kind,
                        u.id
                    ));
                }
                info.offsets = layout::kernel_offsets(&btf)
                    .map_err(|e| anyhow!("kernel BTF at {}: {e}", path.display()))?;
                info.reset_reasons = layout::rst_reason_names(&btf);
                info.classic_misses_counted = Some(layout::classic_misses_counted(&btf));
                (info.snap_plan, info.snap) = snapshot::plan(&btf);
                info.aya_btf = Some(tracepoint_btf(&btf)?);
            }
            Err(e) if cfg.tracepoints.btf_only() || cfg.btf_explicit => return Err(e),
            Err(e) => warnings.push(format!(
                "{e}; using classic tracepoints without namespaces or segment flags"
            )),
        }
    }
    let root = tracefs::find_or_mount();
    if root.is_none() {
        warnings.push(
            "tracefs is not mounted and could not be mounted at /sys/kernel/tracing".to_string(),
        );
    }
    for hook in &HOOKS {
        let text = root
            .as_deref()
            .and_then(|r| tracefs::format(r, hook.category, hook.tracepoint));
        let parsed = match text {
            Some(t) => Some(
                tp_format::parse(&t)
                    .map_err(|e| anyhow!("format of {}:{}: {e}", hook.category, hook.tracepoint))?,
            ),
            None => None,
        };
        info.layouts.push(parsed.as_ref().map(layout::tp_layout));
    }
    Ok(info)
}

/// Reads and parses kernel BTF: the header first, then exactly the blob it announces, so a
/// file that is not BTF (or a device that never ends) is refused before it is read.
fn read_btf(path: &Path) -> anyhow::Result<Btf> {
    use std::io::Read as _;
    let shown = path.display();
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read kernel BTF {shown}"))?;
    let mut bytes = vec![0u8; btf::HEADER_LEN];
    f.read_exact(&mut bytes)
        .with_context(|| format!("kernel BTF {shown}: shorter than a BTF header"))?;
    let len = btf::blob_len(&bytes).map_err(|e| anyhow!("kernel BTF {shown}: {e}"))?;
    f.take(len - btf::HEADER_LEN as u64)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read kernel BTF {shown}"))?;
    Btf::parse(&bytes).map_err(|e| anyhow!("kernel BTF {shown}: {e}"))
}

/// The BTF aya attaches BTF tracepoints with: a stub holding just their typedefs, at the ids
/// the kernel gave them.
fn tracepoint_btf(btf: &Btf) -> anyhow::Result<aya::Btf> {
    let ids: Vec<(u32, String)> = HOOKS
        .iter()
        .filter_map(|h| {
            btf.trace_typedef(h.tracepoint)
                .map(|id| (id, format!("btf_trace_{}", h.tracepoint)))
        })
        .collect();
    let named: Vec<(u32, &str)> = ids.iter().map(|(id, n)| (*id, n.as_str())).collect();
    aya::Btf::parse(&btf::typedef_stub(&named), Endianness::default())
        .map_err(|e| anyhow!("building the tracepoint BTF: {e}"))
}

impl Tracer {
    /// Whether events carry namespaces and socket numbers (kernel BTF was read).
    pub fn snap_available(&self) -> bool {
        self.snap != SnapLayout::default()
    }
}

/// The wakeup policy: with a drain timer, wake early only when the CPUs together have written a
/// quarter of the buffer.
fn wakeup(cfg: &Config) -> abi::Wakeup {
    match cfg.latency {
        Some(_) => {
            let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u64;
            abi::Wakeup {
                per_cpu_bytes: (u64::from(cfg.ring_bytes / 4) / cpus).max(1),
            }
        }
        None => abi::Wakeup::per_record(),
    }
}

/// Which records carry the current task: all of them for the event stream (and the in-kernel
/// pid filter), else only those the connection table reads.
fn task_plan(cfg: &Config, events: bool) -> abi::TaskPlan {
    if events || cfg.filter.tgid != 0 {
        abi::TaskPlan::all()
    } else {
        tcptrace_core::lifecycle::table::task_plan()
    }
}

/// Loads and attaches everything `cfg` asks for; `events`: a sink wants every event (else
/// connection records only).
pub fn load(cfg: &Config, events: bool) -> anyhow::Result<Tracer> {
    privilege::check()?;
    let mut warnings = Vec::new();
    let info = kernel_info(cfg, &mut warnings)?;

    if cfg.filter.cgroup != 0
        && layout::CgroupSupport::of(&info.offsets) != layout::CgroupSupport::Filter
    {
        bail!(
            "--cgroup: this kernel's BTF does not show where a socket's cgroup and its ancestors are"
        );
    }
    let wakeup = wakeup(cfg);
    let task = task_plan(cfg, events);
    let debug = cfg.log_level >= log::LevelFilter::Debug;
    let ebpf_log_level: u8 = if debug { 4 } else { 0 };
    let mut loader = EbpfLoader::new();
    loader
        // The programs read kernel structs at offsets set as globals: no CO-RE relocation.
        .btf(None)
        .override_global(abi::FILTER_GLOBAL, &cfg.filter, true)
        .override_global(abi::OFFSETS_GLOBAL, &info.offsets, true)
        .override_global(abi::SNAP_GLOBAL, &info.snap_plan, true)
        .override_global(abi::WAKEUP_GLOBAL, &wakeup, true)
        .override_global(abi::TASK_GLOBAL, &task, true)
        .override_global(AYA_LOG_LEVEL, &ebpf_log_level, false)
        .map_max_entries(abi::EVENTS_MAP, cfg.ring_bytes);
    let none = TpLayout::none();
    for (hook, layout) in HOOKS.iter().zip(&info.layouts) {
        loader.override_global(hook.layout_global, layout.as_ref().unwrap_or(&none), true);
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| anyhow!("loading the eBPF object failed: {e}"))?;

    if !cfg.conn_filter.netns.is_empty() {
        // Before any program is attached, so no record of another namespace gets through.
        let mut set: aya::maps::HashMap<_, u32, u8> = aya::maps::HashMap::try_from(
            ebpf.map_mut(abi::NETNS_MAP)
                .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::NETNS_MAP))?,
        )?;
        for ns in &cfg.conn_filter.netns {
            set.insert(ns, 1, 0)
                .map_err(|e| anyhow!("filling the namespace filter: {e}"))?;
        }
    }
    let lost = PerCpuArray::try_from(
        ebpf.take_map(abi::LOST_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::LOST_MAP))?,
    )?;
    let nested = PerCpuArray::try_from(
        ebpf.take_map(abi::NESTED_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::NESTED_MAP))?,
    )?;
    let mut losses = LossCounters::new(lost, nested);
    let mut attached = Vec::new();
    for (hook, layout) in HOOKS.iter().zip(&info.layouts) {
        match attach(
            &mut ebpf,
            hook,
            layout.is_some(),
            &info,
            cfg.tracepoints,
            &mut warnings,
        ) {
            Ok((mut how, fd)) => {
                losses.watch(fd, true);
                if let Attachment::Btf { direct, .. } = how
                    && let Some(names) = hook.nested_prog
                {
                    match attach_nested(&mut ebpf, hook, names, direct, &info) {
                        Ok(fd) => {
                            losses.watch(fd, false);
                            how = Attachment::Btf {
                                direct,
                                nested: true,
                            };
                        }
                        Err(e) => warnings.push(format!(
                            "{e}; {} the kernel skips while another is being traced on the same CPU are lost (and counted)",
                            hook.provides
                        )),
                    }
                }
                attached.push((hook.tracepoint, how));
            }
            Err(e) if hook.required => return Err(e),
            Err(e) => warnings.push(format!("{e}; {} will not be reported", hook.provides)),
        }
    }

    if info.classic_misses_counted != Some(true)
        && attached
            .iter()
            .any(|(_, how)| matches!(how, Attachment::Classic))
    {
        warnings.push(format!(
            "{} count the runs of classic tracepoint programs it skips (Linux 6.7+ does): under load some events may be lost without a count; BTF tracepoints (--tracepoints auto) count and catch them",
            match info.classic_misses_counted {
                Some(_) => "this kernel does not",
                None => "without BTF tcptrace cannot tell whether this kernel does",
            }
        ));
    }
    let events = RingBuf::try_from(
        ebpf.take_map(abi::EVENTS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::EVENTS_MAP))?,
    )?;
    let ebpf_log = if debug {
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                warnings.push(format!("eBPF debug messages unavailable: {e}"));
                None
            }
        }
    } else {
        None
    };
    let layout_of = |tp: &str| {
        HOOKS
            .iter()
            .zip(&info.layouts)
            .find(|(h, _)| h.tracepoint == tp)
            .and_then(|(_, l)| l.as_ref())
    };
    let quirks = layout::Quirks::of(layout_of("tcp_send_reset"), layout_of("tcp_retransmit_skb"));
    Ok(Tracer {
        quirks,
        ebpf: Some(ebpf),
        events,
        losses,
        attached,
        reset_reasons: info.reset_reasons,
        snap: info.snap,
        latency: cfg.latency,
        warnings,
        ebpf_log,
    })
}

fn attach(
    ebpf: &mut Ebpf,
    hook: &hooks::Hook,
    has_format: bool,
    info: &KernelInfo,
    mode: TracepointMode,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Attachment, ProgramFd)> {
    let name = format!("{}:{}", hook.category, hook.tracepoint);
    if mode != TracepointMode::Classic {
        let result = match &info.aya_btf {
            Some(btf) => attach_btf(ebpf, hook, btf, mode, warnings),
            None => Err(anyhow!("no kernel BTF")),
        };
        match result {
            Ok(attached) => return Ok(attached),
            Err(e) if mode.btf_only() => {
                bail!("BTF tracepoint {name} could not be attached: {e}")
            }
            Err(e) if info.aya_btf.is_some() => {
                warnings.push(format!("BTF tracepoint {name}: {e}; using the classic one"));
            }
            Err(_) => {}
        }
    }
    if !has_format {
        bail!("tracepoint {name} does not exist on this kernel (no tracefs format)");
    }
    let prog: &mut TracePoint = ebpf
        .program_mut(hook.classic_prog)
        .ok_or_else(|| anyhow!("eBPF object has no program {}", hook.classic_prog))?
        .try_into()?;
    prog.load()
        .map_err(|e| anyhow!("loading classic tracepoint {name}: {}", verifier_line(&e)))?;
    prog.attach(hook.category, hook.tracepoint)
        .map_err(|e| anyhow!("attaching classic tracepoint {name}: {e}"))?;
    Ok((Attachment::Classic, prog.fd()?.try_clone()?))
}

/// Loads and attaches a hook's BTF tracepoint program: the one reading sockets with plain
/// loads, or where this kernel's verifier refuses it, the one reading them with
/// `bpf_probe_read_kernel` (which is noted in `warnings`).
fn attach_btf(
    ebpf: &mut Ebpf,
    hook: &hooks::Hook,
    btf: &aya::Btf,
    mode: TracepointMode,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Attachment, ProgramFd)> {
    if mode != TracepointMode::BtfProbe {
        let direct = match attach_btf_prog(ebpf, hook.btf_prog, hook.tracepoint, btf) {
            Ok(fd) => {
                return Ok((
                    Attachment::Btf {
                        direct: true,
                        nested: false,
                    },
                    fd,
                ));
            }
            Err(e) => e,
        };
        warnings.push(format!(
            "BTF tracepoint {}:{}: reading sockets with plain loads was refused ({direct}); \
             trying bpf_probe_read_kernel, which costs more per event",
            hook.category, hook.tracepoint
        ));
    }
    let fd = attach_btf_prog(ebpf, hook.btf_probe_prog, hook.tracepoint, btf)?;
    Ok((
        Attachment::Btf {
            direct: false,
            nested: false,
        },
        fd,
    ))
}

/// Loads and attaches one `tp_btf` program; returns a descriptor of it for its counters.
fn attach_btf_prog(
    ebpf: &mut Ebpf,
    prog_name: &str,
    tracepoint: &str,
    btf: &aya::Btf,
) -> anyhow::Result<ProgramFd> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(prog_name)
        .ok_or_else(|| anyhow!("eBPF object has no program {prog_name}"))?
        .try_into()?;
    prog.load(tracepoint, btf)
        .map_err(|e| anyhow!("load: {}", verifier_line(&e)))?;
    prog.attach().map_err(|e| anyhow!("attach: {e}"))?;
    Ok(prog.fd()?.try_clone()?)
}

/// The nested-run companion of a BTF hook, attached after it: reading memory as the first
/// program does (`direct`), or the other way if that one is refused.
fn attach_nested(
    ebpf: &mut Ebpf,
    hook: &hooks::Hook,
    (direct_name, probe_name): (&str, &str),
    direct: bool,
    info: &KernelInfo,
) -> anyhow::Result<ProgramFd> {
    let btf = info
        .aya_btf
        .as_ref()
        .ok_or_else(|| anyhow!("no kernel BTF"))?;
    let (first, second) = if direct {
        (direct_name, probe_name)
    } else {
        (probe_name, direct_name)
    };
    attach_btf_prog(ebpf, first, hook.tracepoint, btf)
        .or_else(|_| attach_btf_prog(ebpf, second, hook.tracepoint, btf))
        .map_err(|e| {
            anyhow!(
                "BTF tracepoint {}:{} (nested runs): {e}",
                hook.category,
                hook.tracepoint
            )
        })
}

/// A program error with the verifier log condensed to its last meaningful lines.
fn verifier_line(e: &aya::programs::ProgramError) -> String {
    use std::fmt::Write as _;
    let mut s = e.to_string();
    if let aya::programs::ProgramError::LoadError { verifier_log, .. } = e {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = tail.len().saturating_sub(3);
        let _ = write!(s, " (verifier: {})", tail[start..].join(" | "));
    }
    s
}
