//! Confirmation of destructive admin commands (deletes, group resets): `--yes` (`-y`) says
//! yes up front; at a terminal the command asks; anywhere else (a script, a pipe) it refuses
//! with one readable line, so a script never destroys data by accident.

use std::io::{BufRead, IsTerminal, Write};

use super::Target;

/// Proceeds when `target` carries `--yes` or the user at the terminal answers yes to
/// "`what`?"; otherwise an error that says how to confirm.
pub(super) fn confirm(target: &Target, what: &str) -> anyhow::Result<()> {
    if target.assume_yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("{what}: not confirmed (pass --yes to confirm without a terminal)");
    }
    let mut err = std::io::stderr();
    write!(err, "{what}? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => anyhow::bail!("{what}: cancelled"),
    }
}
