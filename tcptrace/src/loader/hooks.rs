//! The table of kernel hooks: which tracepoint each eBPF program attaches to, both ways.
use tcptrace_common as abi;

/// One tracepoint and its two programs.
pub struct Hook {
    pub category: &'static str,
    pub tracepoint: &'static str,
    /// `tp_btf` program names (Linux 5.5+ with BTF): reading sockets with plain loads (Linux
    /// 5.9+), and with `bpf_probe_read_kernel` for kernels whose verifier refuses the first.
    pub btf_prog: &'static str,
    pub btf_probe_prog: &'static str,
    /// Classic tracepoint program name.
    pub classic_prog: &'static str,
    /// A second `tp_btf` program for the runs the kernel skips while the first is running on
    /// the same CPU (none for classic tracepoints: there the kernel skips every program), in
    /// the same two readings as the first.
    pub nested_prog: Option<(&'static str, &'static str)>,
    /// The `TpLayout` global this tracepoint's format fills.
    pub layout_global: &'static str,
    /// What is not reported when this hook cannot be attached.
    pub provides: &'static str,
    /// tcptrace is useless without this hook.
    pub required: bool,
}

pub const HOOKS: [Hook; 6] = [
    Hook {
        category: "sock",
        tracepoint: "inet_sock_set_state",
        btf_prog: "tcptrace_btf_set_state",
        btf_probe_prog: "tcptrace_btfprobe_set_state",
        classic_prog: "tcptrace_tp_set_state",
        nested_prog: Some((
            "tcptrace_btf_set_state_nested",
            "tcptrace_btfprobe_set_state_nested",
        )),
        layout_global: abi::TP_SET_STATE_GLOBAL,
        provides: "state changes",
        required: true,
    },
    Hook {
        category: "tcp",
        tracepoint: "tcp_retransmit_skb",
        btf_prog: "tcptrace_btf_retransmit",
        btf_probe_prog: "tcptrace_btfprobe_retransmit",
        classic_prog: "tcptrace_tp_retransmit",
        nested_prog: None,
        layout_global: abi::TP_RETRANSMIT_GLOBAL,
        provides: "retransmits",
        required: false,
    },
    Hook {
        category: "tcp",
        tracepoint: "tcp_retransmit_synack",
        btf_prog: "tcptrace_btf_synack",
        btf_probe_prog: "tcptrace_btfprobe_synack",
        classic_prog: "tcptrace_tp_synack",
        nested_prog: None,
        layout_global: abi::TP_SYNACK_GLOBAL,
        provides: "SYN-ACK retransmits",
        required: false,
    },
    Hook {
        category: "tcp",
        tracepoint: "tcp_send_reset",
        btf_prog: "tcptrace_btf_send_reset",
        btf_probe_prog: "tcptrace_btfprobe_send_reset",
        classic_prog: "tcptrace_tp_send_reset",
        nested_prog: None,
        layout_global: abi::TP_SEND_RESET_GLOBAL,
        provides: "resets sent",
        required: false,
    },
    Hook {
        category: "tcp",
        tracepoint: "tcp_receive_reset",
        btf_prog: "tcptrace_btf_recv_reset",
        btf_probe_prog: "tcptrace_btfprobe_recv_reset",
        classic_prog: "tcptrace_tp_recv_reset",
        nested_prog: None,
        layout_global: abi::TP_RECV_RESET_GLOBAL,
        provides: "resets received",
        required: false,
    },
    Hook {
        category: "sock",
        tracepoint: "inet_sk_error_report",
        btf_prog: "tcptrace_btf_error",
        btf_probe_prog: "tcptrace_btfprobe_error",
        classic_prog: "tcptrace_tp_error",
        nested_prog: None,
        layout_global: abi::TP_ERROR_GLOBAL,
        provides: "socket errors",
        required: false,
    },
];
