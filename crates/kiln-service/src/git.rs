//! `kiln serve --git`: before a plan, a factory checkout is fetched and
//! fast-forwarded to its upstream branch. A checkout that cannot be
//! fast-forwarded (local commits, a rewritten upstream) is left as it is
//! and said so: the service never discards work in a checkout.

use std::path::Path;
use std::process::Command;

/// Fetches and fast-forwards the checkout holding `dir`; the new commit
/// when it moved.
pub fn update(dir: &Path) -> Result<Option<String>, String> {
    let git = |args: &[&str]| {
        kiln_tool::run(Command::new("git").arg("-C").arg(dir).args(args))
            .map(|out| out.trim().to_string())
            .map_err(|e| e.to_string())
    };
    let before = git(&["rev-parse", "HEAD"])?;
    git(&["fetch", "--quiet"])?;
    git(&["merge", "--ff-only", "--quiet", "@{upstream}"])
        .map_err(|e| format!("cannot fast-forward {} to its upstream: {e}", dir.display()))?;
    let after = git(&["rev-parse", "HEAD"])?;
    Ok((after != before).then_some(after))
}
