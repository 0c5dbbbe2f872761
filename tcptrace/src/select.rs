//! Which connection records the output prints, by outcome: `--end` (how it ended, by name or
//! glob), `--diagnosed` (a warning or error diagnosis) and `--problems` (both: every failed
//! end, or a finding). Scope filters (`--state`, `-p`, `-N`, ...) decide which connections are
//! looked at; this decides which of them are printed one by one, so a summary beside the
//! output still counts the healthy ones.
use anyhow::bail;
use tcptrace_core::{
    diagnose::{Diagnosis, Severity},
    lifecycle::{Conn, End},
};

/// The outcome selection; the default prints everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Select {
    /// Print records that ended so (empty: no end selection).
    ends: Vec<End>,
    /// Print records with a diagnosis of at least this severity.
    diagnosed: Option<Severity>,
}

impl Select {
    /// From the flags. `level` is `--diagnose`: a selection by diagnosis needs diagnoses.
    pub fn new(
        problems: bool,
        ends: &[String],
        diagnosed: bool,
        level: Option<Severity>,
    ) -> anyhow::Result<Self> {
        let mut sel = Self::default();
        for pattern in ends {
            let matched: Vec<End> = End::ALL
                .into_iter()
                .filter(|e| glob(pattern, e.name()))
                .collect();
            if matched.is_empty() {
                let names: Vec<&str> = End::ALL.iter().map(|e| e.name()).collect();
                bail!(
                    "--end: {pattern:?} matches no end (they are {})",
                    names.join(", ")
                );
            }
            sel.add_ends(&matched);
        }
        if problems {
            let failed: Vec<End> = End::ALL.into_iter().filter(|e| e.failed()).collect();
            sel.add_ends(&failed);
        }
        if problems || diagnosed {
            let Some(level) = level else {
                bail!("--problems and --diagnosed need diagnoses: not with --diagnose off");
            };
            // Info diagnoses explain normal behaviour: they are not findings.
            sel.diagnosed = Some(level.max(Severity::Warning));
        }
        Ok(sel)
    }

    fn add_ends(&mut self, ends: &[End]) {
        for e in ends {
            if !self.ends.contains(e) {
                self.ends.push(*e);
            }
        }
    }

    /// Whether any selection was asked for.
    pub fn is_active(&self) -> bool {
        !self.ends.is_empty() || self.diagnosed.is_some()
    }

    /// Whether the output prints this record.
    pub fn keep(&self, c: &Conn, diagnoses: &[Diagnosis]) -> bool {
        if !self.is_active() {
            return true;
        }
        let end = c.end.unwrap_or(End::Open);
        self.ends.contains(&end)
            || self
                .diagnosed
                .is_some_and(|min| diagnoses.iter().any(|d| d.severity >= min))
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any text (possibly none).
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            // The tail may start at any point of what is left.
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("reset_*", "reset_sent"));
        assert!(glob("reset_*", "reset_received"));
        assert!(!glob("reset_*", "refused"));
        assert!(glob("*", "closed"));
        assert!(glob("*out", "timeout"));
        assert!(glob("r*e*d", "reset_received"));
        assert!(!glob("timeout", "timeouts"));
        assert!(glob("timeout", "timeout"));
    }

    fn names(s: &Select) -> Vec<&'static str> {
        s.ends.iter().map(|e| e.name()).collect()
    }

    #[test]
    fn selections() {
        let s = Select::new(false, &["timeout".into(), "reset_*".into()], false, None).unwrap();
        assert_eq!(names(&s), ["timeout", "reset_sent", "reset_received"]);
        assert_eq!(s.diagnosed, None);
        let p = Select::new(true, &[], false, Some(Severity::Info)).unwrap();
        assert_eq!(
            names(&p),
            [
                "reset_sent",
                "reset_received",
                "refused",
                "timeout",
                "aborted"
            ]
        );
        assert_eq!(p.diagnosed, Some(Severity::Warning));
        let e = Select::new(false, &[], true, Some(Severity::Error)).unwrap();
        assert_eq!(e.diagnosed, Some(Severity::Error));
        assert!(Select::new(false, &["timout".into()], false, None).is_err());
        assert!(Select::new(true, &[], false, None).is_err());
        assert!(!Select::default().is_active());
    }
}
