//! TCP vocabulary shared by decoding and printing: kernel state numbers, segment kinds, errno
//! names.
use std::fmt;

/// A kernel `TCP_*` state number (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpState(pub u8);

impl TcpState {
    pub const ESTABLISHED: Self = Self(1);
    pub const SYN_SENT: Self = Self(2);
    pub const SYN_RECV: Self = Self(3);
    pub const FIN_WAIT1: Self = Self(4);
    pub const FIN_WAIT2: Self = Self(5);
    pub const TIME_WAIT: Self = Self(6);
    pub const CLOSE: Self = Self(7);
    pub const CLOSE_WAIT: Self = Self(8);
    pub const LAST_ACK: Self = Self(9);
    pub const LISTEN: Self = Self(10);
    pub const CLOSING: Self = Self(11);
    pub const NEW_SYN_RECV: Self = Self(12);
    pub const BOUND_INACTIVE: Self = Self(13);

    const NAMES: [&'static str; 14] = [
        "UNKNOWN",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
        "BOUND_INACTIVE",
    ];

    /// The kernel's name for the state (`"UNKNOWN"` for numbers it does not define).
    pub fn name(self) -> &'static str {
        Self::NAMES
            .get(self.0 as usize)
            .copied()
            .unwrap_or("UNKNOWN")
    }

    /// Parses a kernel state name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .filter(|&i| i != 0)
            .map(|i| Self(i as u8))
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a retransmitted segment carried, from its TCP flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    Syn,
    SynAck,
    Fin,
    Data,
}

/// TCP header flag bits as in `tcp_skb_cb.tcp_flags`.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

impl SegmentKind {
    pub const ALL: [SegmentKind; 4] = [Self::Syn, Self::SynAck, Self::Fin, Self::Data];

    /// Classifies a segment from its flags.
    pub fn from_flags(flags: u8) -> Self {
        if flags & tcp_flags::SYN != 0 {
            if flags & tcp_flags::ACK != 0 {
                Self::SynAck
            } else {
                Self::Syn
            }
        } else if flags & tcp_flags::FIN != 0 {
            Self::Fin
        } else {
            Self::Data
        }
    }

    /// Best guess when the flags are unreadable: SYN_SENT retransmits SYNs, SYN_RECV SYN-ACKs,
    /// everything else is counted as data.
    pub fn from_state(state: TcpState) -> Self {
        match state {
            TcpState::SYN_SENT => Self::Syn,
            TcpState::SYN_RECV | TcpState::NEW_SYN_RECV => Self::SynAck,
            _ => Self::Data,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::SynAck => "synack",
            Self::Fin => "fin",
            Self::Data => "data",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "syn" => Self::Syn,
            "synack" => Self::SynAck,
            "fin" => Self::Fin,
            "data" => Self::Data,
            _ => return None,
        })
    }
}

/// Linux errno names (asm-generic numbering, as on x86-64 and arm64).
const ERRNO_NAMES: &[&str] = &[
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// Symbolic name of a positive errno, `None` for numbers Linux does not define.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    let i = usize::try_from(errno.checked_abs()?).ok()?;
    ERRNO_NAMES.get(i).copied().filter(|n| !n.is_empty())
}

/// Errno number of a symbolic name.
pub fn errno_from_name(name: &str) -> Option<i32> {
    if name.is_empty() {
        return None;
    }
    ERRNO_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for n in 1..=13u8 {
            let s = TcpState(n);
            assert_eq!(TcpState::from_name(s.name()), Some(s));
        }
        assert_eq!(TcpState(99).name(), "UNKNOWN");
        assert_eq!(TcpState::from_name("UNKNOWN"), None);
        assert_eq!(TcpState::FIN_WAIT2.name(), "FIN_WAIT2");
    }

    #[test]
    fn errno_names_match_linux_numbers() {
        assert_eq!(errno_name(110), Some("ETIMEDOUT"));
        assert_eq!(errno_name(111), Some("ECONNREFUSED"));
        assert_eq!(errno_name(104), Some("ECONNRESET"));
        assert_eq!(errno_name(32), Some("EPIPE"));
        assert_eq!(errno_name(99), Some("EADDRNOTAVAIL"));
        assert_eq!(errno_name(113), Some("EHOSTUNREACH"));
        assert_eq!(errno_name(133), Some("EHWPOISON"));
        assert_eq!(errno_name(-110), Some("ETIMEDOUT"));
        assert_eq!(errno_name(41), None);
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(i32::MIN), None);
        assert_eq!(errno_from_name("ETIMEDOUT"), Some(110));
    }

    #[test]
    fn segment_kinds() {
        assert_eq!(SegmentKind::from_flags(tcp_flags::SYN), SegmentKind::Syn);
        assert_eq!(
            SegmentKind::from_flags(tcp_flags::SYN | tcp_flags::ACK),
            SegmentKind::SynAck
        );
        assert_eq!(
            SegmentKind::from_flags(tcp_flags::FIN | tcp_flags::ACK),
            SegmentKind::Fin
        );
        assert_eq!(SegmentKind::from_flags(tcp_flags::ACK), SegmentKind::Data);
        assert_eq!(
            SegmentKind::from_state(TcpState::SYN_SENT),
            SegmentKind::Syn
        );
    }
}
