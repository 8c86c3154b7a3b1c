//! Which parameters train: `--train-only GLOB` and `--freeze GLOB` on the port's
//! parameter names (per-expert names like `model.blocks.0.feed_forward.mlp.experts.
//! expert_3.wi.weight` included), resolved to our parameter names. Our expert tensors
//! are stacked, so an expert pattern selects the whole stack it falls in.

use crate::model::params::{param_specs, ParamSpec};
use crate::model::ModelConfig;
use anyhow::{bail, Context, Result};
use glob::Pattern;

/// The names of the parameters that do not train. `train_only` (if any) keeps only what
/// it matches trainable; `freeze` then freezes what it matches. A pattern that matches
/// no parameter is an error, so a typo never silently trains everything.
pub fn frozen_names(
    cfg: &ModelConfig,
    train_only: &[String],
    freeze: &[String],
) -> Result<Vec<String>> {
    let specs = param_specs(cfg);
    let only = compile(train_only, "--train-only")?;
    let frozen = compile(freeze, "--freeze")?;
    for (pattern, flag) in only
        .iter()
        .map(|p| (p, "--train-only"))
        .chain(frozen.iter().map(|p| (p, "--freeze")))
    {
        if !specs.iter().any(|s| matches(pattern, s, cfg)) {
            bail!(
                "{flag} {pattern} matches no parameter (names look like model.blocks.0.self_attn.norm.weight; `gptsan params` lists the groups)"
            );
        }
    }
    let out: Vec<String> = specs
        .iter()
        .filter(|s| {
            let kept = only.is_empty() || only.iter().any(|p| matches(p, s, cfg));
            !kept || frozen.iter().any(|p| matches(p, s, cfg))
        })
        .map(|s| s.name.clone())
        .collect();
    if out.len() == specs.len() {
        bail!("the --train-only/--freeze patterns freeze every parameter: nothing would train");
    }
    Ok(out)
}

fn compile(patterns: &[String], flag: &str) -> Result<Vec<Pattern>> {
    patterns
        .iter()
        .map(|p| Pattern::new(p).with_context(|| format!("{flag} {p}: not a valid pattern")))
        .collect()
}

/// Our name, or any of the port's per-expert names of a stacked tensor.
fn matches(p: &Pattern, s: &ParamSpec, cfg: &ModelConfig) -> bool {
    p.matches(&s.name)
        || port_names(&s.name, cfg.num_experts)
            .iter()
            .any(|n| p.matches(n))
}

/// The port's per-expert names of a stacked expert tensor (empty for other tensors).
fn port_names(name: &str, experts: i64) -> Vec<String> {
    let Some((prefix, proj)) = name
        .strip_suffix(".weight")
        .and_then(|stem| stem.rsplit_once(".experts."))
    else {
        return Vec::new();
    };
    (0..experts)
        .map(|e| format!("{prefix}.experts.expert_{e}.{proj}.weight"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig::from_toml(
            "vocab_size = 300\ncontext = 8\nd_model = 8\nnum_heads = 2\nnum_switch_layers = 2\nnum_experts = 2\nexpert_hidden = 8\n",
            "test",
        )
        .unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn train_only_freezes_everything_else_and_freeze_narrows_it() {
        let c = cfg();
        let frozen = frozen_names(&c, &strings(&["model.blocks.1.*"]), &[]).unwrap();
        assert!(frozen.iter().all(|n| !n.starts_with("model.blocks.1.")));
        assert!(frozen.iter().any(|n| n.starts_with("model.blocks.0.")));
        let more = frozen_names(
            &c,
            &strings(&["model.blocks.1.*"]),
            &strings(&["model.blocks.1.self_attn.*"]),
        )
        .unwrap();
        assert!(more.len() > frozen.len());
        assert!(more
            .iter()
            .any(|n| n.starts_with("model.blocks.1.self_attn.")));
    }

    #[test]
    fn a_per_expert_name_selects_its_stacked_tensor() {
        let c = cfg();
        let frozen = frozen_names(
            &c,
            &[],
            &strings(&["model.blocks.0.feed_forward.mlp.experts.expert_1.wi.weight"]),
        )
        .unwrap();
        assert_eq!(
            frozen,
            ["model.blocks.0.feed_forward.mlp.experts.wi.weight"]
        );
    }

    #[test]
    fn patterns_that_match_nothing_or_everything_are_refused() {
        let c = cfg();
        let err = frozen_names(&c, &strings(&["model.block.*"]), &[]).unwrap_err();
        assert!(
            err.to_string().contains("--train-only model.block.*"),
            "{err}"
        );
        let err = frozen_names(&c, &[], &strings(&["*"])).unwrap_err();
        assert!(err.to_string().contains("nothing would train"), "{err}");
    }
}
