//! `cargo xtask dist-docs`: the man pages (clap_mangen) and shell completions (clap_complete)
//! of tcptrace, generated from its clap definitions — the very files tcptrace parses its
//! command line with, compiled in here too — into `target/dist-docs/`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

// The definitions are read through clap's reflection, not field by field.
#[allow(dead_code, unused_imports)]
#[path = "../../tcptrace/src/flags/args/mod.rs"]
mod args;

/// tcptrace's command as its binary builds it.
pub fn command() -> clap::Command {
    args::Args::command()
}

/// The man page of `cmd` (roff).
pub fn man_page(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), "tcptrace", &mut out);
    out
}

const SHELLS: [(Shell, &str); 4] = [
    (Shell::Bash, "tcptrace.bash"),
    (Shell::Zsh, "_tcptrace"),
    (Shell::Fish, "tcptrace.fish"),
    (Shell::Elvish, "tcptrace.elv"),
];

/// Writes `tcptrace.1`, one page per subcommand (`tcptrace-replay.1`, ...) and the
/// completions under `dir`.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let comp = dir.join("completions");
    for d in [&man, &comp] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut written = Vec::new();
    let mut put = |path: PathBuf, bytes: Vec<u8>| -> anyhow::Result<()> {
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let cmd = command();
    put(man.join("tcptrace.1"), man_page(cmd.clone())?)?;
    for sub in cmd.get_subcommands() {
        let name = format!("tcptrace-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .version(env!("CARGO_PKG_VERSION"))
            .bin_name(format!("tcptrace {}", sub.get_name()));
        put(man.join(format!("{name}.1")), man_page(page)?)?;
    }
    for (shell, file) in SHELLS {
        put(comp.join(file), completions(shell))?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_lists_every_subcommand_and_flag() {
        let page = String::from_utf8(man_page(command()).unwrap()).unwrap();
        assert!(page.starts_with(".ie"), "roff: {}", &page[..40]);
        assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
        for sub in ["replay", "lab", "sysctl"] {
            assert!(
                page.contains(&format!("tcptrace\\-{sub}(1)")),
                "{sub}: {page}"
            );
        }
        for flag in ["problems", "summary", "color", "events", "ring\\-buffer"] {
            assert!(page.contains(&format!("\\-\\-{flag}")), "--{flag}: {page}");
        }
    }

    #[test]
    fn pages_and_completions_are_written() {
        let dir = std::env::temp_dir().join(format!("xtask-docs-{}", std::process::id()));
        let files = write_all(&dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "tcptrace.1",
            "tcptrace-replay.1",
            "tcptrace-lab.1",
            "tcptrace-sysctl.1",
            "tcptrace.bash",
            "_tcptrace",
            "tcptrace.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let replay = fs::read_to_string(dir.join("man/tcptrace-replay.1")).unwrap();
        assert!(replay.contains("\\-\\-problems") && !replay.contains("ring\\-buffer"));
        let bash = fs::read_to_string(dir.join("completions/tcptrace.bash")).unwrap();
        for word in ["replay", "sysctl", "--summary", "--problems"] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        // Each command completes its own flags only.
        let fish = fs::read_to_string(dir.join("completions/tcptrace.fish")).unwrap();
        let sysctl_flags: Vec<&str> = fish
            .lines()
            .filter(|l| l.contains("__fish_tcptrace_using_subcommand sysctl"))
            .collect();
        assert!(sysctl_flags.iter().any(|l| l.contains("-l netns")));
        assert!(!sysctl_flags.iter().any(|l| l.contains("-l events")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
