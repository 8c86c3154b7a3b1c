//! `gptsan params`: parameter counts per group, without allocating the model.

use crate::model::params::{counts_by_group, param_specs, Group};
use crate::model::ModelConfig;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model config (TOML, or JSON incl. a Hugging Face config.json).
    #[arg(long)]
    pub config: PathBuf,
}

/// `1234567` -> `1,234,567`.
fn grouped(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run(args: Args) -> Result<()> {
    let cfg = ModelConfig::load(&args.config)?;
    let specs = param_specs(&cfg);
    let counts = counts_by_group(&specs);
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let spout: i64 = counts
        .iter()
        .filter(|(g, _)| *g == Group::Spout)
        .map(|(_, n)| n)
        .sum();
    println!("{}", args.config.display());
    for (g, n) in &counts {
        let share = if total > 0 {
            100.0 * *n as f64 / total as f64
        } else {
            0.0
        };
        println!("  {:<12} {:>16} {:>6.2}%", g.name(), grouped(*n), share);
    }
    println!("  {:<12} {:>16}", "total", grouped(total));
    println!("  {:<12} {:>16}", "w/o spout", grouped(total - spout));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::grouped(2_789_000_123), "2,789,000,123");
        assert_eq!(super::grouped(12), "12");
    }
}
