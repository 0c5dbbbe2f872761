//! The registry of connection rules: each one an id, the severity it reports, and the
//! function that checks a finished connection. A new rule is one function and one line here.
use super::{Diagnosis, Inputs, Severity, close, handshake, open};
use crate::lifecycle::Conn;

/// One connection rule.
pub struct Rule {
    /// The `rule` of the diagnoses it produces.
    pub id: &'static str,
    /// The severity of its diagnoses: rules below the requested level do not run.
    pub severity: Severity,
    pub check: fn(&Conn, &Inputs, &mut Vec<Diagnosis>),
}

const fn rule(
    id: &'static str,
    severity: Severity,
    check: fn(&Conn, &Inputs, &mut Vec<Diagnosis>),
) -> Rule {
    Rule {
        id,
        severity,
        check,
    }
}

/// Every connection rule, in the order their findings are listed.
pub const RULES: &[Rule] = &[
    rule("connect_timeout", Severity::Error, open::connect_timeout),
    rule("refused", Severity::Warning, open::refused),
    rule(
        "local_port_exhausted",
        Severity::Error,
        open::local_port_exhausted,
    ),
    rule("half_open", Severity::Warning, open::half_open),
    rule("data_timeout", Severity::Error, open::data_timeout),
    rule("keepalive_timeout", Severity::Error, open::keepalive),
    rule("orphan_fin_timeout", Severity::Warning, close::orphan_fin),
    rule("fin_wait2_timeout", Severity::Warning, close::fin_wait2),
    rule("reset", Severity::Warning, close::reset),
    rule("handshake", Severity::Info, handshake::options),
    rule("time_wait", Severity::Info, close::time_wait),
];
