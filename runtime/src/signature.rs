//! Reads the parameter element types of `@main` from StableHLO text, so that arguments can be
//! type-checked in Rust before execution (the plugin accepts any buffer whose byte size
//! matches, e.g. s32 data for an f32 parameter).

use hlo::DType;

/// Element types of `@main`'s parameters, or `None` when the text is not understood (then
/// no check is made; the plugin still checks sizes).
pub fn main_param_dtypes(mlir: &str) -> Option<Vec<DType>> {
    let start = mlir.find("@main(")? + "@main(".len();
    let args = top_level_until_close(&mlir[start..])?;
    if args.trim().is_empty() {
        return Some(Vec::new());
    }
    split_top_level(args)
        .into_iter()
        .map(|arg| {
            let ty = arg.split_once(':')?.1;
            let t = ty.trim_start().strip_prefix("tensor<")?;
            let end = t.find(['>', ','])?;
            let elem = t[..end].rsplit('x').next()?.trim();
            dtype_from_mlir(elem)
        })
        .collect()
}

fn dtype_from_mlir(s: &str) -> Option<DType> {
    DType::ALL.into_iter().find(|d| d.mlir_name() == s)
}

/// The text up to the `)` that closes an already opened `(`, skipping nested brackets and
/// quoted strings.
fn top_level_until_close(s: &str) -> Option<&str> {
    let mut depth = 0i32;
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
        } else {
            match c {
                '"' => in_str = true,
                '(' | '[' | '{' | '<' => depth += 1,
                ')' if depth == 0 => return Some(&s[..i]),
                ')' | ']' | '}' => depth -= 1,
                '>' if prev != '-' => depth -= 1,
                _ => {}
            }
        }
        prev = c;
    }
    None
}

/// Splits at commas that are not inside brackets or strings.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_str, mut prev, mut from) = (0i32, false, ' ', 0usize);
    for (i, c) in s.char_indices() {
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
        } else {
            match c {
                '"' => in_str = true,
                '(' | '[' | '{' | '<' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                '>' if prev != '-' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        prev = c;
    }
    parts.push(&s[from..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parameter_types() {
        let text = r#"module @m attributes {mhlo.num_partitions = 2 : i32} {
  sdy.mesh @mesh = <["x"=2]>
  func.func public @main(%arg0: tensor<2x3xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {"x"}]>}, %arg1: tensor<i32>, %arg2: tensor<4xbf16> {mhlo.sharding = "{devices=[2]0,1}", tf.aliasing_output = 0 : i32}, %arg3: tensor<1xi1>) -> (tensor<2x3xf32>) {
    return %arg0 : tensor<2x3xf32>
  }
}"#;
        assert_eq!(
            main_param_dtypes(text),
            Some(vec![DType::F32, DType::S32, DType::Bf16, DType::Pred])
        );
        assert_eq!(
            main_param_dtypes("func.func @main() -> tensor<f32>"),
            Some(vec![])
        );
        assert_eq!(main_param_dtypes("garbage"), None);
        assert_eq!(
            main_param_dtypes("func.func @main(%a: tensor<2xcomplex<f32>>)"),
            None
        );
    }
}
