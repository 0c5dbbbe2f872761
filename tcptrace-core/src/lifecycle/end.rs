//! How a closed connection ended, decided from what its lifecycle recorded.
use super::conn::{Conn, End, Role};
use crate::tcp::TcpState;

/// `ETIMEDOUT` and `ECONNREFUSED` (asm-generic numbering).
pub const ETIMEDOUT: i32 = 110;
pub const ECONNREFUSED: i32 = 111;

/// The state the connection was in when it closed.
pub fn state_before_close(c: &Conn) -> Option<TcpState> {
    let n = c.visits.len();
    match c.visits.last()?.state {
        TcpState::CLOSE if n >= 2 => c.visits.get(n - 2).map(|v| v.state),
        TcpState::CLOSE => None,
        s => Some(s),
    }
}

/// Classifies a closed connection. Timeouts and refusals first (their RST or error explains
/// everything after), then resets, then the state the socket closed from.
pub fn classify(c: &Conn) -> End {
    let handshake_done = c.visited(TcpState::ESTABLISHED);
    if c.role == Role::Client && !handshake_done {
        return match c.cold().error {
            Some(ECONNREFUSED) => End::Refused,
            _ if c.cold().resets_received > 0 => End::Refused,
            Some(ETIMEDOUT) => End::Timeout,
            _ => End::Aborted,
        };
    }
    if c.cold().error == Some(ETIMEDOUT) {
        return End::Timeout;
    }
    if c.cold().resets_received > 0 {
        return End::ResetReceived;
    }
    if c.cold().resets_sent > 0 {
        return End::ResetSent;
    }
    if c.cold().error.is_some() {
        return End::Aborted;
    }
    match state_before_close(c) {
        Some(
            TcpState::FIN_WAIT2 | TcpState::CLOSING | TcpState::LAST_ACK | TcpState::TIME_WAIT,
        ) => End::Closed,
        _ => End::Aborted,
    }
}
