//! The states a connection went through, stored inline: a TCP lifecycle visits at most six
//! states in the common paths, so those need no allocation; longer histories spill to the heap.
use crate::tcp::TcpState;

/// One state visited: when it was entered (`None`: before we saw the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visit {
    pub state: TcpState,
    pub since_ns: Option<u64>,
}

/// Visits kept inline.
const INLINE: usize = 6;
/// `since` of a visit whose entry time is unknown.
const UNKNOWN: u64 = u64::MAX;

/// An append-only list of [`Visit`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visits {
    since: [u64; INLINE],
    states: [u8; INLINE],
    len: u8,
    /// Boxed so the common case pays one pointer, not a `Vec`'s three words.
    #[allow(clippy::box_collection)]
    spill: Option<Box<Vec<Visit>>>,
}

impl Visits {
    pub fn push(&mut self, v: Visit) {
        let i = usize::from(self.len);
        if i < INLINE {
            self.states[i] = v.state.0;
            self.since[i] = v.since_ns.unwrap_or(UNKNOWN);
            self.len += 1;
        } else {
            self.spill.get_or_insert_default().push(v);
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.len) + self.spill.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<Visit> {
        if i < usize::from(self.len) {
            Some(Visit {
                state: TcpState(self.states[i]),
                since_ns: Some(self.since[i]).filter(|&t| t != UNKNOWN),
            })
        } else {
            self.spill.as_ref()?.get(i - INLINE).copied()
        }
    }

    pub fn first(&self) -> Option<Visit> {
        self.get(0)
    }

    pub fn last(&self) -> Option<Visit> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = Visit> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_past_the_inline_slots() {
        let mut v = Visits::default();
        assert!(v.is_empty() && v.last().is_none());
        for i in 0..9u8 {
            v.push(Visit {
                state: TcpState(i + 1),
                since_ns: (i != 2).then_some(u64::from(i) * 10),
            });
        }
        assert_eq!(v.len(), 9);
        let all: Vec<Visit> = v.iter().collect();
        assert_eq!(all.len(), 9);
        assert_eq!(all[2].since_ns, None);
        assert_eq!(
            all[8],
            Visit {
                state: TcpState(9),
                since_ns: Some(80)
            }
        );
        assert_eq!(v.last(), v.get(8));
        assert_eq!(v.first().map(|f| f.state), Some(TcpState(1)));
    }
}
